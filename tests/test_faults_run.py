"""Faults of outputs, checkpoints, flags and resume, run as a user runs the CLI (typer's runner, or a
``posecli`` subprocess killed with SIGKILL): each ends in one clear line and the right exit status,
with nothing half-written, no temporary file left behind and nothing lost but the last checkpoint
interval. A full disk is simulated by opening one output's temporary file as a file whose writes raise
OSError(ENOSPC), whichever library writes it (json, torch.save, safetensors' bytes, matplotlib).
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import said, cli, TINY_RUN, CKPT17, COCO_DET, COCO_IMAGES, DATA, SAMPLE
from posecli import fileio
from posecli.engine.checkpoint import ID_KEY, load_state

REPO = Path(__file__).resolve().parent.parent
AIC_RAW = DATA / "aic_raw" / "aic_raw_3.json"
AIC_COCO = SAMPLE / "aic" / "test_aic.json"  # COCO format, AIC layout: input of remap
IMAGE = COCO_IMAGES / "000000000785.jpg"
TINY = ["--preset", "coco", "--epochs", "2", *TINY_RUN]


def fails(result, code: int, *words: str) -> str:
    """The command exited ``code`` with these words in one message and no traceback; -> the message."""
    text = said(result)
    assert result.exit_code == code, text
    assert "Traceback" not in result.output, text
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    squeezed = "".join(text.split())  # rich wraps long paths anywhere at the console's width
    for w in words:
        assert "".join(w.split()) in squeezed, (w, text)
    return text


def temps(folder: Path) -> list[str]:
    """posecli's temporary files under ``folder`` (none must be left behind)."""
    return sorted(p.name for p in Path(folder).rglob("*") if ".partial" in p.name)


class FullFile:
    """An open file on a full disk: every non-empty write raises ENOSPC, as the kernel's would."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        if len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return 0

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def full_disk(monkeypatch):
    """``full(predicate, allow=0)``: files opened for writing whose name passes ``predicate`` are on a full disk,
    after the first ``allow`` of them."""
    real = io.open

    def full(predicate, allow: int = 0):
        seen = [0]

        def fake_open(file, mode="r", *args, **kwargs):
            f = real(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and predicate(Path(file).name):
                seen[0] += 1
                if seen[0] > allow:
                    return FullFile(f)
            return f

        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(builtins, "open", fake_open)
        return seen

    return full


def is_temp_of(name: str):
    """A predicate: the temporary file of the output ``name`` (``.STEM.posecli-PID-HOST-XXXX.partial.EXT``)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    return lambda temp: temp.startswith(f".{stem}.posecli-") and temp.endswith(f".partial{suffix}")


# --- SIGKILL at a known moment, then the same command again ------------------------------------

KILLER = """
import os, signal, sys
target, nth, real, seen = os.environ["KILL_AT"], int(os.environ["KILL_NTH"]), os.replace, [0]
def replace(src, dst, *args, **kwargs):
    if os.path.basename(dst) == target:
        seen[0] += 1
        if seen[0] == nth:  # the file is complete under its temporary name, not yet renamed: the worst moment
            os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *args, **kwargs)
os.replace = replace
from posecli.cli import main
sys.argv[0] = "posecli"
main()
"""


def killed(args: list, at: str, nth: int = 1) -> None:
    """Run ``posecli ARGS`` in a subprocess that SIGKILLs itself as it renames the ``nth`` file named ``at``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", KILL_AT=at, KILL_NTH=str(nth))
    proc = subprocess.run([sys.executable, "-c", KILLER, *map(str, args)], env=env, cwd=REPO / "tests", capture_output=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The tiny sample run, uninterrupted: what every stopped and resumed run must end with."""
    workdir = tmp_path_factory.mktemp("reference")
    res = cli("train", *TINY, "--out", workdir)
    assert res.exit_code == 0, res.output
    return workdir


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a), load_file(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def pair_id(workdir: Path, name: str = "last") -> tuple[str, str]:
    with safe_open(str(workdir / f"{name}.safetensors"), "pt") as f:
        weights_id = f.metadata()[ID_KEY]
    return load_state(workdir / f"{name}.state.pt")[ID_KEY], weights_id


def iterations(workdir: Path, key: str = "iteration") -> list:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r[key] for r in map(json.loads, lines) if r["kind"] == "train"]


def losses(workdir: Path) -> list[float]:
    return iterations(workdir, "loss")


def test_train_killed_between_the_checkpoint_renames_resumes_exactly(tmp_path, reference):
    """SIGKILL after last.state.pt of epoch 1 is in place but not yet last.safetensors: resuming rewrites the
    lagging weights, sweeps the killed run's temporary file and ends with the uninterrupted run's weights."""
    workdir = tmp_path / "run"
    killed(["train", *TINY, "--out", workdir], at="last.safetensors", nth=2)  # 1: step 0, 2: end of epoch 1
    assert temps(workdir) and not (workdir / "best.safetensors").exists()
    state, weights = pair_id(workdir)
    assert state != weights  # the state is one checkpoint ahead of the weights
    res = cli("train", *TINY, "--out", workdir, "--resume")
    assert res.exit_code == 0, res.output
    assert "rewritten from it" in said(res) and "resuming in epoch 2 after step 0" in said(res)
    assert temps(workdir) == [] and pair_id(workdir)[0] == pair_id(workdir)[1]
    assert iterations(workdir) == iterations(reference) == list(range(1, 7))  # nothing lost, nothing twice
    assert same_weights(workdir / "last.safetensors", reference / "last.safetensors")


def test_train_killed_mid_epoch_resumes_from_its_iteration_checkpoint_exactly(tmp_path, reference):
    """SIGKILL while the epoch-end checkpoint is renamed: the one of iteration 2 (mid-epoch 1) is the last
    complete; resuming there ends bit for bit with the uninterrupted run's weights and losses."""
    workdir, every2 = tmp_path / "run", ["--checkpoint-iters", "2"]
    killed(["train", *TINY, *every2, "--out", workdir], at="last.state.pt", nth=3)  # 1: step 0, 2: iteration 2
    res = cli("train", *TINY, *every2, "--out", workdir, "--resume")
    assert res.exit_code == 0, res.output
    assert "resuming in epoch 1 after step 2" in said(res)
    assert iterations(workdir) == iterations(reference) == list(range(1, 7))
    assert losses(workdir) == losses(reference) and same_weights(workdir / "last.safetensors", reference / "last.safetensors")


CONVERSIONS = {"aic": ["convert", "aic", AIC_RAW, "-o"], "remap": ["convert", "remap", AIC_COCO, "--to", "coco", "-o"]}


@pytest.mark.parametrize("command", CONVERSIONS.values(), ids=CONVERSIONS)
def test_conversion_killed_before_its_rename_leaves_the_old_output_and_the_next_run_cleans_up(tmp_path, command):
    out = tmp_path / "out.json"
    out.write_text("the previous output")
    killed([*command, out], at="out.json")
    assert out.read_text() == "the previous output" and len(temps(tmp_path)) == 1
    res = cli(*command, out)
    assert res.exit_code == 0, res.output
    assert temps(tmp_path) == []
    cli(*command, tmp_path / "clean.json")
    assert out.read_bytes() == (tmp_path / "clean.json").read_bytes()


@pytest.fixture(scope="module")
def few_boxes(tmp_path_factory) -> Path:
    """A few detector boxes of every sample image: eval in a second."""
    path = tmp_path_factory.mktemp("det") / "det.json"
    path.write_text(json.dumps(json.loads(COCO_DET.read_text())[::6]))
    return path


def test_eval_killed_between_its_two_outputs_then_run_again(tmp_path, few_boxes):
    out = tmp_path / "out"
    args = ["eval", "-w", CKPT17, "--sample", "--boxes", few_boxes, "--no-flip", "--workers", "0", "--out", out]
    killed(args, at="metrics.json")  # results.keypoints.json renamed, metrics.json not
    assert (out / "results.keypoints.json").exists() and not (out / "metrics.json").exists() and temps(out)
    res = cli(*args)
    assert res.exit_code == 0, res.output
    assert temps(out) == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_boxes"] == len(json.loads(few_boxes.read_text())) and f"{metrics['metrics']['AP']:.4f}" in said(res)


# --- a full disk -------------------------------------------------------------------------------


def test_disk_full_at_the_first_checkpoint_says_so_and_the_run_can_start_again(tmp_path, full_disk):
    """The step-0 checkpoint fails in seconds, naming the file; nothing to resume (said clearly); a new start works."""
    workdir = tmp_path / "run"
    full_disk(lambda name: name.startswith(".last.state."))
    start = time.time()
    res = cli("train", *TINY, "--out", workdir)
    fails(res, 1, f"cannot write {workdir / 'last.state.pt'}", "no space left on device", "nothing was written")
    assert time.time() - start < 30 and temps(workdir) == [] and not (workdir / "last.safetensors").exists()
    full_disk(lambda name: False)  # space freed
    res = cli("train", "--resume", "--out", workdir)
    fails(res, 1, "no training state to resume from", "stopped before its first checkpoint", "without resuming (--resume)")
    res = cli("train", *TINY, "--out", workdir)
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("which", ["state", "weights"])
def test_disk_full_at_a_later_checkpoint_keeps_the_previous_pair(tmp_path, full_disk, reference, which):
    """The epoch-1 checkpoint fails on either file: the step-0 pair stays whole and consistent (the weights never
    newer than the state), no temporary file; a bare --resume (sample mode from the checkpoint) ends as the reference."""
    workdir = tmp_path / "run"
    full_disk(is_temp_of("last.state.pt" if which == "state" else "last.safetensors"), allow=1)
    res = cli("train", *TINY, "--out", workdir)
    fails(res, 1, "cannot write", str(workdir / "last.state.pt"), "no space left on device",
          "the previous last.state.pt and last.safetensors are unchanged")  # fmt: skip
    assert temps(workdir) == []
    state, weights = pair_id(workdir)
    assert state == weights and load_state(workdir / "last.state.pt")["state"]["iteration"] == 0
    assert (workdir / "last.safetensors").stat().st_mtime <= (workdir / "last.state.pt").stat().st_mtime
    full_disk(lambda name: False)
    res = cli("train", "--resume", "--out", workdir)
    assert res.exit_code == 0, res.output
    assert iterations(workdir) == list(range(1, 7))  # the lost interval (epoch 1) trained again, once
    assert same_weights(workdir / "last.safetensors", reference / "last.safetensors")


@pytest.mark.parametrize("command", CONVERSIONS.values(), ids=CONVERSIONS)
def test_disk_full_in_a_conversion_keeps_the_previous_output(tmp_path, full_disk, command):
    out = tmp_path / "out.json"
    out.write_text("the previous output")
    full_disk(is_temp_of("out.json"))
    res = cli(*command, out)
    fails(res, 1, f"cannot write {out}", "no space left on device", "the previous out.json is unchanged")
    assert out.read_text() == "the previous output" and temps(tmp_path) == []


def test_disk_full_in_eval_keeps_both_previous_outputs(tmp_path, full_disk, few_boxes):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("results.keypoints.json", "metrics.json"):
        (out / name).write_text("previous")
    full_disk(is_temp_of("metrics.json"))  # the second of the pair: results.keypoints.json is already complete
    res = cli("eval", "-w", CKPT17, "--sample", "--boxes", few_boxes, "--no-flip", "--workers", "0", "--out", out)
    fails(res, 1, str(out / "metrics.json"), "no space left on device", "unchanged")
    assert [(out / n).read_text() for n in ("results.keypoints.json", "metrics.json")] == ["previous"] * 2
    assert temps(out) == []


def test_disk_full_in_predict_leaves_no_drawn_file_and_the_previous_ones(tmp_path, full_disk):
    out = tmp_path / "out"
    out.mkdir()
    (out / IMAGE.name).write_text("a previous drawing")
    full_disk(is_temp_of("predictions.json"))  # the last write, after every drawn image
    res = cli("predict", IMAGE, COCO_IMAGES / "000000040083.jpg", "--weights", CKPT17, "--detector", "none", "--no-flip",
              "--out", out)  # fmt: skip
    fails(res, 1, str(out / "predictions.json"), "no space left on device")
    assert sorted(p.name for p in out.iterdir()) == [IMAGE.name] and (out / IMAGE.name).read_text() == "a previous drawing"


def test_disk_full_in_convert_weights_writes_nothing(tmp_path, full_disk):
    full_disk(is_temp_of("w.safetensors"))
    res = cli("convert", "weights", "-w", CKPT17, "-o", tmp_path / "w.safetensors")
    fails(res, 1, str(tmp_path / "w.safetensors"), "no space left on device", "nothing was written")
    assert list(tmp_path.iterdir()) == []


# --- outputs checked before any work -----------------------------------------------------------


@pytest.mark.parametrize("command", [
    lambda d, x: ["convert", "aic", x, "-o", x],
    lambda d, x: ["convert", "remap", d / "other.json", x, "--to", "coco", "-o", x],
    lambda d, x: ["convert", "weights", "-w", x.with_suffix(".safetensors"), "-o", x.with_suffix(".safetensors")],
    lambda d, x: ["eval", "-w", CKPT17, "--sample", "--boxes", d / "out" / "results.keypoints.json", "--out", d / "out"],
], ids=["aic", "remap", "weights", "eval"])  # fmt: skip
def test_an_output_that_is_an_input_is_refused_before_it_is_read(tmp_path, command):
    (tmp_path / "out").mkdir()
    for path in (tmp_path / "x.json", tmp_path / "x.safetensors", tmp_path / "out" / "results.keypoints.json"):
        path.write_text("an input")
    args = command(tmp_path, tmp_path / "x.json")
    fails(cli(*args), 1, "is also an input", "give another output file")
    assert {p.read_text() for p in tmp_path.rglob("*.*")} == {"an input"}


@pytest.mark.parametrize("command", [
    lambda f: ["train", *TINY, "--out", f],
    lambda f: ["train", "--resume", "--out", f],
    lambda f: ["eval", "-w", "no-such-weights.safetensors", "--sample", "--out", f],
    lambda f: ["predict", IMAGE, "--weights", "no-such-weights.safetensors", "--out", f],
    lambda f: ["benchmark", "--out", f / "bench.json"],
], ids=["train", "resume", "eval", "predict", "benchmark"])  # fmt: skip
def test_an_output_folder_that_is_a_file_fails_before_any_work(tmp_path, command):
    """Named by the error before anything is read (the weights do not even exist) or computed."""
    file = tmp_path / "taken"
    file.write_text("a file")
    start = time.time()
    fails(cli(*command(file)), 1, str(file), "is a file, not a folder")
    assert time.time() - start < 10 and file.read_text() == "a file"


def test_an_output_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "out.json").mkdir()
    fails(cli("convert", "aic", AIC_RAW, "-o", tmp_path / "out.json"), 1, "is a folder; give the file to write")


def test_an_unwritable_output_folder_is_named_before_anything_is_read(tmp_path, monkeypatch):
    """The OS's reason, for the output (not a hidden temporary file); the raw file is never opened (it does not exist)."""
    locked, real = tmp_path / "locked", os.open
    locked.mkdir()

    def no_create(path, flags, *args, **kwargs):
        if Path(path).parent == locked and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_create)  # chmod would not stop root
    fails(cli("convert", "aic", tmp_path / "absent.json", "-o", locked / "out.json"), 1,
          f"cannot write in {locked}: permission denied")  # fmt: skip
    assert list(locked.iterdir()) == []


# --- temporary files, permissions, umask -------------------------------------------------------


def test_temporary_files_of_dead_processes_are_swept_and_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process can have it
    names = {
        "dead": f".out.posecli-{dead}-{fileio.HOST}-0123abcd.partial.json",
        "live": f".out.posecli-{os.getppid()}-{fileio.HOST}-0123abcd.partial.json",  # a concurrent writer
        "other host": f".out.posecli-{dead}-elsewhere-0123abcd.partial.json",  # its owner cannot be checked here
        "old ownerless": ".out.k2j4h5g6.partial.json",
        "new ownerless": ".aux.q1w2e3r4.partial.json",
    }
    for name in names.values():
        (out / name).write_text("x" * 1000)
    os.utime(out / names["old ownerless"], (0, 0))
    res = cli("convert", "aic", AIC_RAW, "-o", out / "out.json")
    assert res.exit_code == 0, res.output
    assert set(temps(out)) == {names["live"], names["other host"], names["new ownerless"]}


def test_a_replaced_output_keeps_its_mode_and_a_new_one_gets_the_umask(tmp_path, monkeypatch):
    out = tmp_path / "out.json"
    assert cli("convert", "aic", AIC_RAW, "-o", out).exit_code == 0
    mask = os.umask(0o022)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    out.chmod(0o640)

    def forbidden(_mask):
        raise AssertionError("os.umask changes the umask of every thread; fileio must not call it")

    monkeypatch.setattr(os, "umask", forbidden)
    assert cli("convert", "aic", AIC_RAW, "-o", out).exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o640


# --- flags -------------------------------------------------------------------------------------

COMMANDS = {
    "train": lambda tmp, dev: ["train", *TINY, "--device", dev, "--out", tmp / "run"],
    "eval": lambda tmp, dev: ["eval", "-w", CKPT17, "--sample", "--device", dev],
    "predict": lambda tmp, dev: ["predict", IMAGE, "--weights", CKPT17, "--device", dev, "--out", tmp / "out"],
    "benchmark": lambda tmp, dev: ["benchmark", "--device", dev],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("device, words", [
    ("gpu", "--device gpu: not a device name; valid here: auto, cpu"),
    ("cuda", "--device cuda: no CUDA device here (torch"),
])  # fmt: skip
def test_a_device_this_machine_lacks_is_one_clear_error_in_seconds(tmp_path, command, device, words):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    start = time.time()
    fails(cli(*COMMANDS[command](tmp_path, device)), 1, words, "valid here: auto, cpu")
    assert time.time() - start < 5 and not (tmp_path / "run").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_cuda_index_beyond_the_device_count_lists_the_devices(tmp_path, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    fails(cli(*COMMANDS[command](tmp_path, "cuda:7")), 1,
          "--device cuda:7: there are 2 CUDA devices; valid here: auto, cpu, cuda, cuda:0, cuda:1")  # fmt: skip


@pytest.mark.parametrize("args, flag", [
    (["train", *TINY, "--epochs", "0"], "--epochs"),
    (["train", *TINY, "--batch-size", "0"], "--batch-size"),
    (["train", *TINY, "--batch-size", "-4"], "--batch-size"),
    (["train", *TINY, "--workers", "-1"], "--workers"),
    (["train", *TINY, "--micro-batches", "0"], "--micro-batches"),
    (["train", *TINY, "--checkpoint-iters", "-1"], "--checkpoint-iters"),
    (["eval", "-w", CKPT17, "--sample", "--batch-size", "0"], "--batch-size"),
    (["eval", "-w", CKPT17, "--sample", "--nms-thr", "2"], "--nms-thr"),
    (["predict", IMAGE, "--weights", CKPT17, "--batch-size", "0"], "--batch-size"),
])  # fmt: skip
def test_out_of_range_flags_are_refused(tmp_path, args, flag):
    """--epochs 0 used to exit 0 saying weights were written: now exit 2 (usage) and nothing done."""
    res = cli(*args, "--out" if args[0] == "train" else "--out", tmp_path / "x")
    text = fails(res, 2, f"Invalid value for '{flag}'")
    assert "weights in" not in text and not (tmp_path / "x").exists()


def test_benchmark_batch_size_zero_is_refused():
    fails(cli("benchmark", "--batch-sizes", "1,0"), 1, "--batch-sizes '1,0'", "not a positive integer")


def test_a_bad_preset_value_fails_at_load_before_training(tmp_path):
    start = time.time()
    fails(cli("train", *TINY, "--set", "test.nms=bogus", "--out", tmp_path / "run"), 1,
          "test.nms 'bogus': choose one of oks, soft_oks, none")  # fmt: skip
    assert time.time() - start < 5 and not (tmp_path / "run").exists()


def test_micro_batches_that_do_not_divide_the_batch(tmp_path):
    fails(cli("train", *TINY, "--micro-batches", "3", "--out", tmp_path / "run"), 1,
          "batch size 4 does not split into 3 equal micro-batches")  # fmt: skip
    assert not (tmp_path / "run").exists()


# --- resume ------------------------------------------------------------------------------------


def test_resume_epochs_extends_a_finished_run(tmp_path, reference):
    """No --preset, --sample or --set: all from the checkpoint; --epochs 3 trains one more epoch."""
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    res = cli("train", "--resume", "--out", workdir, "--epochs", "3")
    assert res.exit_code == 0, res.output
    assert "needs --preset" not in said(res) and "resuming in epoch 3 after step 0" in said(res)
    assert load_state(workdir / "last.state.pt")["state"]["epoch"] == 3 and iterations(workdir) == list(range(1, 10))


def test_resume_of_a_finished_run_says_so_and_cannot_cut_it(tmp_path, reference):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    res = cli("train", "--resume", "--out", workdir)
    assert res.exit_code == 0 and "done all its 2 epochs; nothing to train" in said(res)
    fails(cli("train", "--resume", "--out", workdir, "--epochs", "1"), 1, "has done 2 epochs", "cannot be cut to 1")


def test_resume_refuses_a_setting_that_changes_the_computation(tmp_path, reference):
    workdir = tmp_path / "run"
    shutil.copytree(reference, workdir)
    fails(cli("train", "--resume", "--out", workdir, "--set", "train.lr=1e-2"), 1,
          "cannot resume this run with different settings", "train.lr")  # fmt: skip
