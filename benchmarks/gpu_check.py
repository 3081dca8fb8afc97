"""What matters on a GPU, checked and measured in one run; ``benchmarks/gpu_check.sh`` runs it.

    eval       the reference checkpoint on the bundled sample (as ``posecli eval --sample``): the GPU's ten
               COCO numbers against the CPU's, within 1e-3
    train      w32 training steps at batch 64 under AMP (fp16 with a GradScaler, and bf16 where the GPU has
               it): every loss finite, the loss falling; samples/s (``train.train_step`` itself)
    inference  crops/s of w32 per precision at batch 64 (``posecli benchmark``'s measurement)
    loader     the training DataLoader with 8 and 16 workers at batch 64: samples/s
    ddp        2 processes under torchrun (NCCL) against 1 process in 2 micro-batches: the same losses and
               weights (skipped without 2 GPUs)

Without CUDA (or with --cpu) the same steps run in a quick CPU mode with tiny sizes (hrnet-small,
64x96 crops, batch 4, a few steps, 1 and 2 workers), so that the suite checks the script itself.
Writes one JSON (--out, default gpu_check.json); exits 1 if a check fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from posecli.choices import Network, Precision
from posecli.engine.bench import train as bench_train
from posecli.engine.bench.machine import machine_info
from posecli.engine.bench.run import random_model, requested_settings, run_benchmark
from posecli.engine.cocometric import METRIC_NAMES
from posecli.engine.evaluate import eval_data, evaluate
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.engine.train import train_step
from posecli.data.dataset import build_train_dataset
from posecli.presets import load_preset
from posecli.weights import ModelInfo

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "tests" / "data" / "reference" / "hrnet_small_coco17.pth"
REFERENCE_METRICS = REPO / "tests" / "data" / "reference" / "eval" / "coco17"
EVAL_TOLERANCE = 1e-3
SMALL = ["model.arch=hrnet-small", "model.input_size=[64,96]", "model.heatmap_size=[16,24]"]
TINY_TRAIN = ["--sample", "--epochs", "2"] + [a for kv in [
    "model.input_size=[64,96]", "model.heatmap_size=[16,24]", "data.val.interval=1000", "test.batch_size=64",
    "train.warmup_iters=5", "augment.rotate_prob=0", "augment.half_body_prob=0", "augment.scale_prob=0", "augment.shift_prob=0",
] for a in ("--set", kv)]  # fmt: skip  (as tests/test_scale.py's DDP test)
MODES = {  # what each mode runs: GPU sizes, and the quick CPU ones
    "gpu": {"overrides": [], "batch": 64, "train_steps": 200, "warmup": 10, "workers": [8, 16], "precisions": ["fp32", "bf16", "fp16"],
            "network": "auto", "flip": True, "repeats": 5, "peak_s": 2.0},
    "cpu": {"overrides": SMALL, "batch": 4, "train_steps": 6, "warmup": 1, "workers": [1, 2], "precisions": ["fp32", "bf16"],
            "network": "folded", "flip": False, "repeats": 1, "peak_s": 0.2},  # the CPU's default (oneDNN) takes ~7 s to build on 2 cores
}  # fmt: skip


def check_eval(device: torch.device) -> dict:
    """The ten COCO numbers of the reference checkpoint on the sample (``posecli eval --sample``: detector boxes,
    flip test) here, against the CPU's, and both against MMPose's own (tests/data/reference/eval). CPU mode:
    the CPU alone with ground-truth boxes and no flip (12 forwards, not 236), against MMPose's for that."""
    gpu = device.type == "cuda"
    data = eval_data(sample=True, use_gt_boxes=not gpu)

    def metrics(on: str) -> dict:
        predictor = Predictor.from_weights(REFERENCE, InferenceSettings(device=on, flip=gpu))
        return evaluate(predictor, data.ann, data.images, data.boxes).metrics

    reference = REFERENCE_METRICS / ("metrics_det_flip.json" if gpu else "metrics_gt_noflip.json")  # MMPose 1.3.2's
    mmpose = dict(zip(METRIC_NAMES, json.loads(reference.read_text()).values()))  # its names, in the same order
    here = metrics(str(device))
    cpu = metrics("cpu") if gpu else here
    diff = max(abs(here[k] - cpu[k]) for k in cpu)
    vs_mmpose = max(abs(here[k] - v) for k, v in mmpose.items())
    return {"ok": diff <= EVAL_TOLERANCE and vs_mmpose <= EVAL_TOLERANCE, "boxes": "detector" if gpu else "ground truth",
            "flip": gpu, "max_abs_diff_cpu": diff, "max_abs_diff_mmpose": vs_mmpose, "tolerance": EVAL_TOLERANCE,
            "device": here, "cpu": cpu}  # fmt: skip


def check_train(device: torch.device, mode: dict, compiled: bool = False) -> dict:
    """AMP training steps on real sample batches: finite, falling losses; samples/s per precision
    (``compiled``: also the first AMP precision with the network compiled, its compile time included)."""
    preset = load_preset("coco", mode["overrides"])
    ds = build_train_dataset(preset, None, 0, sample=True)
    ds.instances = bench_train.repeated(ds.instances, max(1, -(-8 * mode["batch"] // len(ds))))
    b = mode["batch"]
    items = [ds[i] for i in range(4 * b)]
    batches = [{k: torch.stack([it[k] for it in items[s : s + b]]) for k in ("image", "heatmaps", "weights")} for s in range(0, 4 * b, b)]
    net, _ = random_model(preset.model.arch, "coco")
    info = ModelInfo(preset.model.arch, "coco", tuple(preset.model.input_size), tuple(preset.model.heatmap_size))
    amp = [Precision.FP16, Precision.BF16] if device.type == "cuda" else [Precision.BF16]
    if device.type == "cpu" and bench_train.step_problem(Precision.BF16, device):
        amp = [Precision.FP32]  # a CPU without bf16: no AMP to check, the step itself still is
    out = {"arch": preset.model.arch, "batch": b, "steps": mode["train_steps"], "runs": {}}
    for precision, compile_it in [(p, False) for p in amp] + ([(amp[0], True)] if compiled else []):
        name = f"{precision} compiled" if compile_it else str(precision)
        problem = bench_train.step_problem(precision, device)
        if problem:
            out["runs"][name] = {"skipped": problem}
            continue
        r = bench_train.stepper(copy.deepcopy(net), info, device, precision, True, compile_it)
        batches_here = [bench_train.pinned(x, device) for x in batches]
        losses, times, first_s = [], [], None
        for i in range(mode["warmup"] + mode["train_steps"]):
            t0 = time.perf_counter()
            losses.append(train_step(r, [batches_here[i % len(batches_here)]], 5e-4))
            first_s = first_s or time.perf_counter() - t0  # includes compiling, for a compiled network
            if i >= mode["warmup"]:
                times.append(time.perf_counter() - t0)
        k = max(1, len(losses) // 10)
        finite = all(math.isfinite(v) for v in losses)
        falling = float(np.mean(losses[-k:])) < float(np.mean(losses[:k]))
        out["runs"][name] = {"ok": finite and falling, "finite": finite, "falling": falling, "first_step_s": first_s,
                                       "loss_first": losses[:k], "loss_last": losses[-k:], "samples_per_s": b / float(np.median(times)),
                                       "scale": r.scaler.get_scale() if r.scaler else None}  # fmt: skip
    out["ok"] = all(run.get("ok", True) for run in out["runs"].values()) and any("ok" in run for run in out["runs"].values())
    return out


def check_inference(device: torch.device, mode: dict) -> dict:
    """``posecli benchmark``'s model timing, one row per precision that runs natively here."""
    preset = load_preset("coco", mode["overrides"])
    net, info = random_model(preset.model.arch, "coco")
    info = ModelInfo(info.arch, info.layout, tuple(preset.model.input_size), tuple(preset.model.heatmap_size))
    precisions = [Precision(p) for p in mode["precisions"]]
    base = InferenceSettings(device=str(device), flip=mode["flip"])
    settings = requested_settings(base, precisions, [Network(mode["network"])], False)
    result = run_benchmark(net, info, "random", settings=settings, batch_sizes=[mode["batch"]], warmup=1,
                           repeats=mode["repeats"], budget_s=30, peak_s=mode["peak_s"])  # fmt: skip
    rows = {r.setting: {"crops_per_s": r.crops_per_s, "max_rel_diff": r.max_rel_diff, "skipped": r.skipped} for r in result.model_runs}
    return {"ok": any(r["crops_per_s"] for r in rows.values()), "batch": mode["batch"], "runs": rows, "notes": result.notes}


def check_loader(device: torch.device, mode: dict) -> dict:
    preset = load_preset("coco", mode["overrides"])
    ds = build_train_dataset(preset, None, 0, sample=True)
    ds.instances = bench_train.repeated(ds.instances, max(20, -(-(4 * max(mode["workers"]) + 4) * mode["batch"] // len(ds))))
    runs = [asdict(bench_train.loader_rate(ds, w, mode["batch"], device)) for w in mode["workers"]]
    return {"ok": all(r["samples_per_s"] > 0 for r in runs), "runs": runs, "cpu_count": os.cpu_count()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_ddp(device: torch.device, force_cpu: bool) -> dict:
    """torchrun, 2 processes x batch 4 against 1 process x batch 8 in 2 micro-batches (NCCL on GPUs, gloo on CPU)."""
    if device.type == "cuda" and torch.cuda.device_count() < 2:
        return {"ok": True, "skipped": f"needs 2 GPUs, this machine has {torch.cuda.device_count()}"}
    if device.type == "cpu" and not force_cpu:
        return {"ok": True, "skipped": "no GPUs (--ddp-on-cpu runs it with gloo; tests/test_scale.py does on every run)"}
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--preset", "coco-aic-merge", *TINY_TRAIN, "--device", "cuda" if device.type == "cuda" else "cpu"]
        two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
                              "-m", "posecli", "train", *common, "--batch-size", "4", "--out", f"{tmp}/two"],
                             env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
        one = subprocess.run([sys.executable, "-m", "posecli", "train", *common, "--batch-size", "8", "--micro-batches", "2",
                              "--out", f"{tmp}/one"], env=env, capture_output=True, text=True, timeout=240)  # fmt: skip
        if two.returncode or one.returncode:
            return {"ok": False, "error": (two.stderr or "")[-1500:] + (one.stderr or "")[-1500:]}

        def losses(folder):
            lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
            return [r["loss"] for r in map(json.loads, lines) if r["kind"] == "train"]

        a, b = load_file(f"{tmp}/two/last.safetensors"), load_file(f"{tmp}/one/last.safetensors")
        weights = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
        la, lb = losses(f"{tmp}/two"), losses(f"{tmp}/one")
        loss = max(abs(x - y) for x, y in zip(la, lb))
    # gloo on CPU: 1e-6 (tests/test_scale.py); NCCL with cuDNN's own algorithm choices: float order only, reported.
    limit = 1e-6 if device.type == "cpu" else 1e-3
    return {"ok": len(la) == len(lb) and loss < 1e-4 and weights <= limit, "max_loss_diff": loss, "max_weight_diff": weights,
            "weight_tolerance": limit, "backend": "nccl" if device.type == "cuda" else "gloo"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--cpu", action="store_true", help="the quick CPU mode even where there is a GPU")
    ap.add_argument("--ddp-on-cpu", action="store_true", help="in CPU mode, also run the 2-process check with gloo")
    ap.add_argument("--compile", action="store_true", help="also time a compiled training step (1-2 more minutes)")
    args = ap.parse_args()
    gpu = torch.cuda.is_available() and not args.cpu
    device, mode = torch.device("cuda" if gpu else "cpu"), MODES["gpu" if gpu else "cpu"]
    report = {"mode": "gpu" if gpu else "cpu", "machine": machine_info(device), "checks": {}}
    start = time.perf_counter()
    steps = {"eval": lambda: check_eval(device), "train": lambda: check_train(device, mode, args.compile),
             "inference": lambda: check_inference(device, mode), "loader": lambda: check_loader(device, mode),
             "ddp": lambda: check_ddp(device, args.ddp_on_cpu)}  # fmt: skip
    for name, step in steps.items():
        t0 = time.perf_counter()
        print(f"{name} ...", file=sys.stderr, flush=True)
        try:
            result = step()
        except Exception as e:  # a check that crashes fails, and the others still run
            result = {"ok": False, "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        report["checks"][name] = result
        print(f"{name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']} s)"
              + (f", {result['skipped']}" if result.get("skipped") else ""), file=sys.stderr, flush=True)  # fmt: skip
    report["ok"] = all(c["ok"] for c in report["checks"].values())
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {args.out}: {'all checks passed' if report['ok'] else 'a check FAILED'} in {report['seconds']} s", file=sys.stderr)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
