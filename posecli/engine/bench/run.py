"""A whole benchmark: which settings to time, the model, the peaks, every batch size, the pipeline.

What is counted. A crop costs ``macs`` multiply-adds per forward (``posecli.engine.flops``).
One multiply-add = 2 FLOPs, and the flip test runs 2 forwards per crop, so

    achieved GFLOP/s = 2 * macs * forwards_per_crop * crops/s / 1e9,

and a run's share is that over the median GFLOP/s of a large matmul of the same precision,
sampled between its timed calls (``peaks.py``). A network also spends time on work that is
not counted (BatchNorm, ReLU, additions, upsampling, memory traffic), so its share of that
peak stays below 100% even when every convolution runs as fast as the matmul.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from posecli.choices import Backend, Network, Precision
from posecli.engine import runtimes
from posecli.engine.bench.machine import CpuUse, machine_info
from posecli.engine.bench.peaks import ConvPeak, MatmulPeak, MatmulProbe, conv_peak
from posecli.engine.bench.timing import ModelRun, PipelineRun, bench_batch, bench_pipeline, sample_images_and_boxes
from posecli.engine.flops import count_macs
from posecli.engine.inference import InferenceSettings, Predictor, pick_device
from posecli.errors import UserError
from posecli.layouts import LAYOUTS
from posecli.models.hrnet import ARCHS, PoseHRNet, build_model
from posecli.weights import ModelInfo, load_model

SAME_OUTPUT = 1e-4  # relative heatmap difference from float32 summation order (random He-init w32: ~2e-5)
SPEED_NETWORKS = (Network.FOLDED, Network.ONEDNN, Network.COMPILED)  # what a comparison times beside plain


@dataclass
class BenchmarkResult:
    machine: dict
    model: dict
    options: dict
    matmul_peaks: list[MatmulPeak]
    conv_peak: ConvPeak | None  # float32, for comparison: shares use the matmul peaks
    model_runs: list[ModelRun]
    pipeline: list[PipelineRun]
    notes: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def requested_settings(base: InferenceSettings, precisions: list[Precision], networks: list[Network],
                       compare: bool, backends: tuple[Backend, ...] = (Backend.TORCH,)) -> list[InferenceSettings]:  # fmt: skip
    """Every (precision, backend, network) asked for, on ``base``'s device, flip and chunk; ``compare``
    adds, per precision, torch's plain network and each speed network, so one run shows what each one buys.
    The ONNX runtimes run one exported graph each (networks are torch's ways of running it).

    oneDNN runs float32 on the CPU only: elsewhere it is left out of the comparison (and an explicit
    ask for it fails when the predictor is built)."""
    settings = []
    for precision in precisions:
        asked = list(networks)
        if compare:
            fusable = precision == Precision.FP32 and pick_device(base.device).type == "cpu"
            asked = [Network.PLAIN, *[n for n in SPEED_NETWORKS if n != Network.ONEDNN or fusable], *asked]
        for backend in backends:
            if backend in (Backend.TORCH, Backend.AUTO):
                settings += [base.replace(precision=precision, network=n) for n in asked]
            else:
                settings.append(base.replace(precision=precision, backend=backend))
    return list(dict.fromkeys(settings))


def runnable(settings: list[InferenceSettings], device: torch.device) -> tuple[list[InferenceSettings], list[str]]:
    """The settings whose precision runs natively on their backend here, and a note for each other one."""
    kept, notes = [], []
    for s in settings:
        problem = runtimes.precision_problem(runtimes.resolve_backend(s.backend, graph=False), s.precision, device)
        if problem:
            notes.append(f"{s.label}: not run, {problem}")
        else:
            kept.append(s)
    return kept, notes


def random_model(arch: str, layout: str, seed: int = 0) -> tuple[PoseHRNet, ModelInfo]:
    """A randomly initialised model whose activations have trained-like magnitudes.

    Speed does not depend on the weights' values, except through denormals: HRNet's own
    N(0, 0.001) init shrinks activations towards 1e-14 and below, where float arithmetic
    slows down. So: He init, then BatchNorm statistics of one random batch.
    """
    if arch not in ARCHS:
        raise UserError(f"architecture {arch!r} is unknown; known: {', '.join(ARCHS)}")
    if layout not in LAYOUTS:
        raise UserError(f"keypoint layout {layout!r} is unknown; known: {', '.join(LAYOUTS)}")
    torch.manual_seed(seed)
    net = build_model(arch, LAYOUTS[layout].num_keypoints)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    for bn in bns:
        bn.momentum = None  # cumulative average: one batch gives its exact statistics
    info = ModelInfo(arch, layout)
    with torch.no_grad():
        net.train()(torch.randn(2, 3, info.input_size[1], info.input_size[0]))
    for bn in bns:
        bn.momentum = 0.1
    return net.eval(), info


def load_benchmark_model(weights: str | Path | None, arch: str, layout: str) -> tuple[nn.Module, ModelInfo, str]:
    """A weights file, or a random model of ``arch``/``layout`` -> (model, info, where the weights came from)."""
    if weights is not None:
        if str(weights).lower().endswith(".onnx"):
            raise UserError(f"{weights}: benchmark times torch weights and exports them for each backend itself; "
                            "give the .safetensors or .pth the graph was exported from")  # fmt: skip
        net, info = load_model(weights)
        return net, info, str(weights)
    net, info = random_model(arch, layout)
    return net, info, "random (speed does not depend on the weights)"


def fastest(runs: list[ModelRun]) -> tuple[ModelRun | None, bool]:
    """At the largest measured batch: the fastest run whose setting matches plain fp32 (True), else the fastest (False)."""
    measured = [r for r in runs if r.crops_per_s]
    if not measured:
        return None, False
    largest = [r for r in measured if r.batch_size == max(m.batch_size for m in measured)]
    exact = {r.setting for r in runs if r.max_rel_diff is not None and r.max_rel_diff <= SAME_OUTPUT}
    candidates = [r for r in largest if r.setting in exact]
    return max(candidates or largest, key=lambda r: r.crops_per_s), bool(candidates)


def run_benchmark(net: nn.Module, info: ModelInfo, source: str, *, settings: list[InferenceSettings],
                  batch_sizes: list[int], pipeline: bool = False, warmup: int = 2, repeats: int = 5,
                  budget_s: float = 120.0, peak_s: float = 2.0,
                  progress: Callable[[str], None] = lambda _: None) -> BenchmarkResult:  # fmt: skip
    """Every setting at every batch size, then (``pipeline``) the sample images end to end with the fastest setting.

    ``budget_s`` caps one measurement: a slow setting gets fewer timed calls, or none. ``peak_s``: how long
    each peak at the start (matmul per precision, convolution) is sampled.
    """
    cpu_use, macs = CpuUse(), count_macs(net, info.input_size)
    device = pick_device(settings[0].device)
    settings, refused = runnable(settings, device)
    if not settings:
        raise UserError("no setting asked for runs here: " + "; ".join(refused))
    probes, peaks = {}, {}
    for precision in dict.fromkeys([Precision.FP32] + [s.precision for s in settings]):
        progress(f"matmul peak, {precision}")
        probes[precision] = MatmulProbe(device, precision)
        peaks[precision] = probes[precision].peak(peak_s)
    progress("convolution peak, fp32")
    conv = conv_peak(device, peak_s)
    w, h = info.input_size
    crops = np.random.default_rng(0).integers(0, 256, (max(batch_sizes), h, w, 3), dtype=np.uint8)
    progress("reference heatmaps (plain fp32)")
    plain = settings[0].replace(network=Network.PLAIN, precision=Precision.FP32)
    reference = {flip: Predictor.from_model(net, info, plain.replace(flip=flip)).heatmaps(crops[: batch_sizes[0]])
                 for flip in {s.flip for s in settings}}  # fmt: skip
    predictors, notes = {}, [f"weights: {source}", *refused]
    for s in settings:
        progress(f"preparing {s.label}" + (" (compiling)" if s.network == Network.COMPILED else ""))
        start = time.perf_counter()
        predictor = Predictor.from_model(net, info, s)
        resolved = predictor.settings  # "auto" named as the network it chose
        if resolved in predictors:
            continue
        predictors[resolved] = predictor
        if s.network == Network.COMPILED:
            notes.append(f"{s.label}: compiled in {time.perf_counter() - start:.0f} s (once; not in the timings)")
    settings = list(predictors)
    runs = []
    for b in batch_sizes:
        progress(f"batch {b}: {len(settings)} setting(s) x {repeats} calls")
        runs += bench_batch(predictors, crops, b, macs=macs, probes=probes, peaks=peaks, warmup=warmup, repeats=repeats,
                            budget_s=budget_s, reference=reference if b == batch_sizes[0] else None)  # fmt: skip
    notes += [f"{r.setting}, batch {r.batch_size}: skipped, {r.skipped}" for r in runs if r.skipped]
    best, exact = fastest(runs)
    pipelines = []
    if pipeline and best is not None:
        setting = next(s for s in settings if s.label == best.setting)
        samples = sample_images_and_boxes()
        pass_s = sum(len(x) for _, x in samples) / best.crops_per_s
        if pass_s > budget_s:
            notes.append(f"pipeline skipped: one pass would take ~{pass_s:.0f} s")
        else:
            progress(f"pipeline, {setting.label}")
            predictor = Predictor.from_model(net, info, setting.replace(batch_size=max(batch_sizes)))
            pipelines.append(bench_pipeline(predictor, samples, max(1, min(repeats, int(budget_s / pass_s)))))
    if best is not None:
        match = f"same heatmaps as plain fp32 to {SAME_OUTPUT:g}" if exact else "no setting matched plain fp32"
        notes.append(f"fastest at batch {best.batch_size} ({match}): {best.setting}, {best.crops_per_s:.2f} crops/s, "
                     f"{best.share_of_peak:.0%} of the matmul peak")  # fmt: skip
    machine = machine_info(device) | {"cpu_taken_by_others": cpu_use.others()}
    taken = machine["cpu_taken_by_others"]
    if sum(taken.values()) > 0.05:
        notes.append(f"during this run other processes took {taken['other_processes']:.0%} of the cores and the "
                     f"hypervisor {taken['steal']:.0%}: figures are low, shares less reliable")  # fmt: skip
    return BenchmarkResult(
        machine,
        {"arch": info.arch, "layout": info.layout, "weights": source, "input_size": list(info.input_size),
         "macs_per_crop": macs, "macs_counted": "matrix products (convolutions, linear); BN, ReLU, add, upsample not"},
        {"batch_sizes": batch_sizes, "warmup": warmup, "repeats": repeats, "budget_s": budget_s,
         "settings": [{k: v if isinstance(v, (int, bool, type(None))) else str(v) for k, v in asdict(s).items()}
                      | {"label": s.label} for s in settings]},
        list(peaks.values()), conv, runs, pipelines, notes,
    )  # fmt: skip
