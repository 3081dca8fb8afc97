"""Training at scale, on CPU: torchrun's elastic restart resumes a run by itself (one worker killed
mid-epoch, the run ends as if it had never stopped), rank 0 alone writes checkpoints, the device and
backend each process picks under torchrun (GPU counts patched), persistent loader workers, the
checks of precision and SyncBN, ``posecli benchmark --train`` and ``benchmarks/gpu_check.sh`` in
their CPU modes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY_RUN, said
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from posecli.cli import app
from posecli.data.dataset import build_train_dataset
from posecli.engine import distributed
from posecli.engine.train import SAMPLE_SETTINGS, make_loader
from posecli.errors import UserError
from posecli.presets import load_preset
from posecli.weights import load_model

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent
# hrnet-small at 64x96, no augmentation that costs time; 21 instances, 3 steps an epoch.
TINY = TINY_RUN


def records(folder: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TORCHELASTIC_RESTART_COUNT")}
    return dict(env, OMP_NUM_THREADS="1", **extra)


def test_a_killed_worker_is_restarted_by_torchrun_and_the_run_ends_as_if_never_stopped(tmp_path):
    """torchrun --max-restarts 1 (c10d rendezvous, gloo), 2 processes x batch 4; rank 1 dies mid-epoch 2 on the
    first attempt. torchrun restarts both; the same command resumes from the iteration-4 checkpoint by itself
    and ends with the weights and losses of 1 process x batch 8 in 2 micro-batches, every iteration logged once.

    This is also the DDP check: iterations 1-4 are the first attempt's, and 2 ranks must equal 2 micro-batches
    (losses within 1e-5; weights and BN running statistics, averaged at epoch ends as the ranks', within 1e-6)."""
    common = ["--preset", "coco-aic-merge", *TINY, "--epochs", "2", "--checkpoint-iters", "2"]
    elastic = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2", "--max-restarts", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "--monitor-interval", "0.1",
         str(REPO / "tests" / "scale_fault.py"), *common, "--out", str(tmp_path / "elastic")],
        env=_env(POSECLI_TEST_FAULT_RANK="1", POSECLI_TEST_FAULT_ITERATION="4"), cwd=REPO / "tests",
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    one = subprocess.run([sys.executable, "-m", "posecli", "train", *common, "--batch-size", "8", "--micro-batches", "2",
                          "--out", str(tmp_path / "one")], env=_env(), cwd=REPO / "tests", capture_output=True, timeout=300)  # fmt: skip
    _, err = elastic.communicate(timeout=300)
    err = err.decode()
    assert one.returncode == 0, one.stderr.decode()[-2000:]
    assert elastic.returncode == 0, err[-3000:]
    assert "exitcode  : 3" in err or "exitcode: 3" in err.replace("  ", " "), err[-3000:]  # rank 1 did die
    assert "torchrun restarted the workers (1)" in " ".join(err.split()), err[-3000:]
    a, b = records(tmp_path / "elastic"), records(tmp_path / "one")
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["lr"] == y["lr"] and abs(x["loss"] - y["loss"]) < 1e-5, (x, y)
    wa, wb = load_file(tmp_path / "elastic" / "last.safetensors"), load_file(tmp_path / "one" / "last.safetensors")
    differ = [k for k in wa if not torch.allclose(wa[k].double(), wb[k].double(), atol=1e-6)]
    assert wa.keys() == wb.keys() and not differ, [(k, (wa[k] - wb[k]).abs().max().item()) for k in differ[:3]]
    assert not list((tmp_path / "elastic").glob("*.partial*"))
    assert load_model(tmp_path / "elastic" / "last.safetensors")[1].preset["train"]["batch_size"] == 4  # per process


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> tuple[Path, str]:
    """One epoch of the coco preset with --amp (bf16 on CPU) and --sync-bn (one process: plain BatchNorm)."""
    folder = tmp_path_factory.mktemp("run")
    res = runner.invoke(app, ["train", "--preset", "coco", *TINY, "--epochs", "1", "--amp", "--sync-bn", "--out", str(folder)])
    assert res.exit_code == 0, res.output
    return folder, said(res)


def test_amp_and_syncbn_on_cpu_are_noted_and_kept_by_the_checkpoint(finished_run, tmp_path):
    folder, output = finished_run
    assert "bf16 on CPU" in output and "synchronised BatchNorm (--sync-bn) in one process: nothing to synchronise" in output
    run = torch.load(folder / "last.state.pt", weights_only=True)["run"]
    assert run["precision"] == "bf16" and run["sync_bn"] is True and all(r["loss"] > 0 for r in records(folder))
    res = runner.invoke(app, ["train", "--preset", "coco", *TINY, "--precision", "fp16", "--device", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "fp16 training needs a CUDA device" in said(res) and "Traceback" not in res.output
    assert not (tmp_path / "last.state.pt").exists()


def test_after_a_torchrun_restart_the_same_command_resumes_and_another_preset_is_refused(finished_run, monkeypatch):
    """The restart's command line has neither --resume nor --amp: the checkpoint says bf16 and SyncBN."""
    args = ["train", *TINY, "--epochs", "1", "--out", str(finished_run[0])]
    res = runner.invoke(app, [*args[:1], "--preset", "coco", *args[1:]])
    assert res.exit_code == 1 and "holds another run" in said(res)  # a first attempt never takes over a folder
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    res = runner.invoke(app, [*args[:1], "--preset", "coco", *args[1:]])
    assert res.exit_code == 0, res.output
    assert "torchrun restarted the workers (1): continuing from" in said(res) and "nothing to train" in said(res)
    res = runner.invoke(app, [*args[:1], "--preset", "coco-aic-combine", *args[1:]])
    assert res.exit_code == 1 and "cannot resume this run with different settings" in said(res)
    assert "Traceback" not in res.output


def _cuda(monkeypatch, count: int) -> None:
    """Pretend this machine has ``count`` GPUs (what the device check and process_device ask torch)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("asked, local_rank, world, expected", [
    ("auto", "1", "2", "cuda:1"), ("cuda", "1", "2", "cuda:1"), ("cpu", "1", "2", "cpu"),
    ("auto", None, None, "cuda"), ("cuda:1", "0", "1", "cuda:1"),
])  # fmt: skip
def test_under_torchrun_each_process_takes_the_gpu_of_its_local_rank(monkeypatch, asked, local_rank, world, expected):
    _cuda(monkeypatch, 2)
    env = {"LOCAL_RANK": local_rank, "WORLD_SIZE": world} if local_rank else {}
    assert distributed.process_device(asked, distributed.launch(env)) == torch.device(expected)


def test_a_gpu_per_process_that_is_not_there_is_a_clear_error(monkeypatch):
    _cuda(monkeypatch, 2)
    with pytest.raises(UserError, match="this node has 2; start at most 2 torchrun processes per node"):
        distributed.process_device("auto", distributed.launch({"LOCAL_RANK": "3", "WORLD_SIZE": "4"}))
    with pytest.raises(UserError, match="each process takes the GPU of its LOCAL_RANK"):
        distributed.process_device("cuda:0", distributed.launch({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}))


def test_the_backend_follows_the_device_in_train_and_eval(monkeypatch):
    """NCCL for a CUDA device where torch has it, gloo otherwise; join() is what train and eval call."""
    joined = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kw: joined.append((backend, kw)))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: None)
    two = distributed.launch({"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2"})
    for nccl, device, backend in [(True, "cpu", "gloo"), (True, "cuda:1", "nccl"), (False, "cuda:1", "gloo")]:
        monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: nccl)
        assert distributed.join(torch.device(device), two) == (1, 2)
        assert joined[-1][0] == backend
    assert joined[1][1]["device_id"] == torch.device("cuda:1") and joined[0][1]["device_id"] is None
    assert distributed.join(torch.device("cpu"), distributed.launch({})) == (0, 1) and len(joined) == 3


def test_a_restarted_group_on_one_node_keeps_its_keys_apart_and_across_nodes_says_what_to_set(monkeypatch):
    """torch's shared rendezvous store keeps a failed attempt's keys (pytorch/pytorch#135712): one node's
    attempts get their own prefix; several nodes cannot agree on one, so a restart there names the setting."""
    made = []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "TCPStore", lambda host, port, world, is_master: ("store", host, port, world))
    monkeypatch.setattr(torch.distributed, "PrefixStore", lambda prefix, store: (prefix, store))
    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **kw: made.append((backend, kw)))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    env = {"LOCAL_RANK": "1", "RANK": "1", "WORLD_SIZE": "2", "TORCHELASTIC_USE_AGENT_STORE": "True", "MASTER_ADDR": "h",
           "MASTER_PORT": "29400", "TORCHELASTIC_RESTART_COUNT": "2", "TORCHELASTIC_MAX_RESTARTS": "3"}  # fmt: skip
    distributed.join(torch.device("cpu"), distributed.launch(env))
    assert made[0][1]["store"] == ("posecli/attempt_2", ("store", "h", 29400, 2)) and made[0][1]["rank"] == 1
    with pytest.raises(UserError, match="TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1"):
        distributed.join(torch.device("cpu"), distributed.launch(dict(env, GROUP_WORLD_SIZE="2")))
    assert distributed.launch(dict(env, GROUP_WORLD_SIZE="2", TORCHELASTIC_RESTART_COUNT="0")).restarts_collide
    assert not distributed.launch(env).restarts_collide


def test_eval_under_torchrun_runs_on_the_gpu_of_its_local_rank(monkeypatch):
    """What reaches the library: --device auto (the default) and cuda become cuda:LOCAL_RANK."""
    _cuda(monkeypatch, 2)
    seen = []

    def stop(weights, settings, keep=None):
        seen.append(settings.device)
        raise UserError("stopped here")

    monkeypatch.setattr("posecli.cli.eval.Predictor.from_weights", stop)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for device in ([], ["--device", "cuda"], ["--device", "cpu"]):
        res = runner.invoke(app, ["eval", "-w", "model.safetensors", "--sample", *device])
        assert res.exit_code == 1 and "stopped here" in res.output
    assert seen == ["cuda:1", "cuda:1", "cpu"]


def test_persistent_loader_workers_give_each_epoch_its_own_draws():
    """One DataLoader with 2 workers kept across epochs: items equal the dataset's own, epoch by epoch."""
    preset = load_preset("coco", SAMPLE_SETTINGS + ["augment.rotate_prob=0.6"])
    ds = build_train_dataset(preset, None, 0, sample=True)
    chunks, loader = make_loader(ds, 2, torch.device("cpu"))
    assert loader.persistent_workers
    for epoch in (0, 1, 0):
        chunks.chunks = [[(epoch, 0), (epoch, 5)], [(epoch, 7)]]
        got = list(loader)
        for batch, keys in zip(got, chunks.chunks):
            for row, (_, i) in enumerate(keys):
                ds.set_epoch(epoch)
                assert torch.equal(batch["image"][row], ds[i]["image"]), (epoch, i)


def test_benchmark_train_reports_the_pipeline_the_step_and_the_estimate(tmp_path):
    """posecli benchmark --train on CPU with a small arch: the JSON's fields (not the timings, which vary by machine)."""
    out = tmp_path / "train.json"
    res = runner.invoke(app, ["benchmark", "--train", "--arch", "hrnet-small", "--set", "model.input_size=[64,96]",
                              "--set", "model.heatmap_size=[16,24]", "--batch-sizes", "4", "--workers", "0,1",
                              "--precision", "fp32,fp16", "--repeats", "1", "--warmup", "1", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    r = json.loads(out.read_text())
    assert r["preset"] == {"name": "coco", "arch": "hrnet-small", "input_size": [64, 96], "batch_size": 64, "epochs": 210, "workers": 2}
    assert set(r["stages_ms"]) == {"decode", "augment", "warp", "targets"} and all(v > 0 for v in r["stages_ms"].values())
    assert [(x["workers"], x["batch_size"]) for x in r["loader"]] == [(0, 4), (1, 4)]
    assert all(x["samples_per_s"] > 0 and x["samples"] == (4 * x["workers"] + 4) * 4 for x in r["loader"])
    fp32, fp16 = r["steps"]
    assert fp32["setting"] == "fp32 channels-last" and fp32["samples_per_s"] > 0 and fp32["steps"] == 1
    assert len(fp32["losses"]) == 2 and all(0 < v < 1e3 for v in fp32["losses"])
    assert fp16["samples_per_s"] is None and "needs CUDA" in fp16["skipped"]
    assert r["instances"] == 149_813 and "coco 149,813" in r["instances_source"]
    (e,) = r["estimates"]
    assert e["bound"] == "step" and e["devices"] == 8 and e["hours"] == pytest.approx(e["hours_one_device"] / 8)
    assert e["hours_one_device"] == pytest.approx(210 * 149_813 / e["samples_per_s"] / 3600)
    assert "linear scaling" in r["assumption"] and "estimate" in res.output and "Traceback" not in res.output


def test_gpu_check_runs_in_its_cpu_mode(tmp_path):
    """benchmarks/gpu_check.sh without a GPU: every check runs at tiny sizes (DDP is skipped: needs 2 GPUs)."""
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(out)],
                          env=_env(PYTHON=sys.executable), capture_output=True, text=True, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["mode"] == "cpu" and r["ok"] and list(r["checks"]) == ["eval", "train", "inference", "loader", "ddp"]
    ev = r["checks"]["eval"]
    assert ev["max_abs_diff_mmpose"] <= 1e-3 and ev["device"]["AP"] == pytest.approx(ev["cpu"]["AP"])
    (run,) = r["checks"]["train"]["runs"].values()  # bf16 where this CPU has it, else fp32
    assert run["finite"] and run["falling"] and run["samples_per_s"] > 0
    assert {row["crops_per_s"] > 0 for row in r["checks"]["inference"]["runs"].values()} == {True}
    assert [x["workers"] for x in r["checks"]["loader"]["runs"]] == [1, 2]
    assert "needs 2 GPUs" in r["checks"]["ddp"]["skipped"] or "no GPUs" in r["checks"]["ddp"]["skipped"]


def test_a_resumed_run_shows_each_step_once_in_tensorboard(tmp_path):
    """The killed run logged steps 5-6 after its checkpoint at 4; the resumed one logs them again. TensorBoard
    (its own reader, which applies purge_step) shows each step once (the optional tensorboard extra)."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    from posecli.engine.curves import MetricsLog

    first = MetricsLog(tmp_path / "metrics.jsonl")
    for i in range(1, 7):
        first.write({"kind": "train", "iteration": i, "loss": 1.0 / i})
    first.tb.close()
    resumed = MetricsLog(tmp_path / "metrics.jsonl", keep=4, purge_step=5)
    for i in range(5, 9):
        resumed.write({"kind": "train", "iteration": i, "loss": 2.0 / i})
    resumed.tb.close()
    assert len(list((tmp_path / "tensorboard").glob("events.*"))) == 2
    acc = accumulator.EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    points = [(s.step, round(s.value, 6)) for s in acc.Scalars("train/loss")]
    assert points == [(i, round((1.0 if i < 5 else 2.0) / i, 6)) for i in range(1, 9)]
    assert [r["iteration"] for r in records(tmp_path)] == list(range(1, 9))
