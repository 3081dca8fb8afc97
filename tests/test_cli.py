"""Each command's options reach the library as they should (fastapi-cli's pattern: patch the one
library call a command makes, invoke the app, assert what the call received)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import CKPT17, COCO_ANN, COCO_DET, COCO_IMAGES
from typer.testing import CliRunner

import posecli.cli.benchmark as cli_benchmark
import posecli.cli.convert_weights as cli_convert_weights
import posecli.cli.eval as cli_eval
import posecli.cli.export as cli_export
import posecli.cli.predict as cli_predict
import posecli.cli.train as cli_train
import posecli.data.aic as aic
import posecli.data.remap as remap
import posecli.engine.train as engine_train
from posecli import sample
from posecli.choices import Backend, Decode, Network, Nms, Precision, ScoreMode
from posecli.cli import app
from posecli.engine.predict import Summary
from posecli.engine.train import SAMPLE_SETTINGS
from posecli.presets import load_preset

runner = CliRunner()


class Calls:
    """Records the arguments of every call; returns ``result``."""

    def __init__(self, result=None):
        self.calls, self.result = [], result

    def __call__(self, *args, **kwargs):
        self.calls.append(SimpleNamespace(args=args, kwargs=kwargs))
        return self.result

    @property
    def last(self):
        assert self.calls, "the library was not called"
        return self.calls[-1]


def invoke(*args) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


# --- eval ------------------------------------------------------------------------------------------------


@pytest.fixture
def eval_calls(monkeypatch):
    built, evaluated = Calls(), Calls(SimpleNamespace(warnings=[], metrics={}))
    built.result = SimpleNamespace(device=torch.device("cpu"))
    monkeypatch.setattr(cli_eval.Predictor, "from_weights", built)
    monkeypatch.setattr(cli_eval, "run_evaluation", evaluated)
    return built, evaluated


def test_eval_defaults_are_mmposes(eval_calls):
    built, evaluated = eval_calls
    invoke("eval", "-w", CKPT17, "--sample")
    settings = built.last.args[1]
    assert (settings.flip, settings.decode, settings.batch_size, settings.network) == (True, Decode.STANDARD, 32, Network.AUTO)
    assert (settings.precision, settings.backend, settings.shift_heatmap) == (Precision.FP32, Backend.AUTO, True)
    call = evaluated.last
    assert call.args[1:] == (sample.COCO_ANN, sample.COCO_IMAGES, sample.COCO_DET)  # the installed package's sample
    assert (call.kwargs["nms"], call.kwargs["nms_thr"], call.kwargs["min_box_score"]) == (Nms.OKS, 0.9, 0.0)
    assert call.kwargs["score_mode"] == ScoreMode.BBOX_KEYPOINT and call.kwargs["keypoint_score_thr"] == 0.2
    assert call.kwargs["workers"] is None and call.kwargs["out_dir"] is None and not call.kwargs["skip_bad_images"]


def test_eval_options_reach_the_library(eval_calls, tmp_path):
    built, evaluated = eval_calls
    invoke("eval", "-w", CKPT17, "--ann", COCO_ANN, "--images", COCO_IMAGES, "--boxes", COCO_DET, "--no-flip",
           "--decode", "dark", "--nms", "soft_oks", "--nms-thr", "0.8", "--min-box-score", "0.5", "--batch-size", "7",
           "--network", "plain", "--device", "cpu", "--workers", "1", "--out", tmp_path / "o", "--skip-bad-images")  # fmt: skip
    settings = built.last.args[1]
    assert (settings.flip, settings.decode, settings.batch_size, settings.network, settings.device) == (
        False, Decode.DARK, 7, Network.PLAIN, "cpu")  # fmt: skip
    kw = evaluated.last.kwargs
    assert (kw["nms"], kw["nms_thr"], kw["min_box_score"], kw["workers"]) == (Nms.SOFT_OKS, 0.8, 0.5, 1)
    assert kw["out_dir"] == tmp_path / "o" and kw["skip_bad_images"]
    invoke("eval", "-w", CKPT17, "--sample", "--precision", "bf16", "--backend", "openvino")
    settings = built.last.args[1]
    assert (settings.precision, settings.backend) == (Precision.BF16, Backend.OPENVINO)


def test_eval_gt_boxes_and_the_presets_test_settings(eval_calls, tmp_path):
    built, evaluated = eval_calls
    root = tmp_path / "data"
    det = root / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json"
    det.parent.mkdir(parents=True)
    det.write_text("[]")
    invoke("eval", "-w", CKPT17, "--preset", "coco-aic-combine", "--data-root", root, "--decode", "dark")
    assert evaluated.last.args[3] == det  # the preset's detection file
    assert built.last.kwargs["keep"] == 17  # combine scored on COCO's 17 keypoints
    assert built.last.args[1].decode == Decode.DARK  # typed: wins over the preset's standard
    invoke("eval", "-w", CKPT17, "--preset", "coco", "--data-root", root, "--gt-boxes")
    assert evaluated.last.args[3] is None


def test_eval_refuses_a_missing_detection_file_of_a_preset(eval_calls, tmp_path):
    result = runner.invoke(app, ["eval", "-w", str(CKPT17), "--preset", "coco", "--data-root", str(tmp_path)])
    text = " ".join(result.output.split())  # rich wraps long lines
    assert result.exit_code == 1 and "no such detection file" in text and "ground-truth boxes" in text and "Traceback" not in text


# --- train -----------------------------------------------------------------------------------------------


@pytest.fixture
def train_calls(monkeypatch):
    calls = Calls()
    monkeypatch.setattr(cli_train, "run_training", calls)
    return calls


def test_train_options_reach_the_library(train_calls, tmp_path):
    invoke("train", "--preset", "coco", "--data-root", tmp_path, "--out", tmp_path / "run", "--epochs", "3",
           "--batch-size", "4", "--workers", "1", "--set", "train.lr=1e-3", "--micro-batches", "2",
           "--checkpoint-iters", "5", "--amp", "--device", "cpu", "--skip-bad-images", "--init-backbone", CKPT17)  # fmt: skip
    preset, opts = train_calls.last.args[:2]
    assert preset == load_preset("coco", ["train.lr=1e-3", "train.epochs=3", "train.batch_size=4", "train.workers=1"])
    assert (opts.workdir, opts.data_root, opts.device, opts.micro_batches, opts.checkpoint_iters) == (
        tmp_path / "run", tmp_path, "cpu", 2, 5)  # fmt: skip
    assert opts.amp and opts.skip_bad_images and opts.init_backbone == CKPT17 and opts.resume is None
    assert (opts.precision, opts.compile, opts.sync_bn) == (None, None, None)  # unset: fp32, or the resumed run's
    invoke("train", "--preset", "coco", "--out", tmp_path / "run2", "--precision", "bf16", "--compile", "--sync-bn")
    opts = train_calls.last.args[1]
    assert (opts.precision, opts.compile, opts.sync_bn) == (Precision.BF16, True, True)


def test_train_resume_takes_the_checkpoints_preset_with_the_overrides(train_calls, tmp_path, monkeypatch):
    stored = load_preset("coco", ["train.lr=1e-4"]).to_dict()
    monkeypatch.setattr(engine_train, "load_state", lambda path: {"preset": stored, "run": {"sample": True}})
    invoke("train", "--resume", "--out", tmp_path / "run", "--epochs", "9")
    preset, opts = train_calls.last.args[:2]
    assert preset == load_preset("coco", ["train.lr=1e-4", "train.epochs=9"])
    assert opts.resume == tmp_path / "run" / "last.state.pt"
    invoke("train", "--resume-from", tmp_path / "run" / "best.state.pt", "--preset", "coco")
    preset, opts = train_calls.last.args[:2]
    assert preset == load_preset("coco", SAMPLE_SETTINGS)  # a named preset with the checkpoint's sample mode
    assert opts.resume == tmp_path / "run" / "best.state.pt" and opts.workdir == tmp_path / "run"


def test_train_sample_is_noted_before_training_and_picks_the_default_folder(train_calls):
    result = runner.invoke(app, ["train", "--preset", "coco-aic-merge", "--sample", "--set", "train.epochs=2"])
    assert result.exit_code == 0, result.output
    assert "the bundled sample (--sample): model.arch=hrnet-small" in " ".join(result.output.split())
    preset, opts = train_calls.last.args[:2]
    assert preset == load_preset("coco-aic-merge", SAMPLE_SETTINGS + ["train.epochs=2"])
    assert opts.sample and opts.workdir == Path("runs") / "coco-aic-merge"


def test_train_without_a_preset_or_a_run_to_resume_is_an_error(train_calls):
    result = runner.invoke(app, ["train", "--resume-from", "nowhere/last.state.pt"])
    assert result.exit_code == 1 and "no training state to resume from" in " ".join(result.output.split())
    assert not train_calls.calls


# --- predict ---------------------------------------------------------------------------------------------


def test_predict_options_reach_the_library(monkeypatch, tmp_path):
    calls = Calls(Summary(tmp_path / "predictions.json", "x", images=1, seconds=1.0, written=[tmp_path / "predictions.json"]))
    monkeypatch.setattr(cli_predict, "run_predict", calls)
    image = COCO_IMAGES / "000000000785.jpg"
    invoke("predict", image, "-w", CKPT17, "--out", tmp_path, "--no-draw", "--no-flip", "--decode", "dark",
           "--batch-size", "5", "--device", "cpu", "--detector", "none", "--min-keypoint-score", "0.5")  # fmt: skip
    cfg = calls.last.args[0]
    assert cfg.inputs == [str(image)] and cfg.weights == CKPT17 and cfg.out == tmp_path
    assert not cfg.draw and cfg.detector == "none" and cfg.min_keypoint_score == 0.5
    assert (cfg.nms, cfg.nms_thr, cfg.min_box_score) == (Nms.OKS, 0.9, 0.0)  # eval's defaults
    s = cfg.inference
    assert (s.flip, s.decode, s.batch_size, s.device) == (False, Decode.DARK, 5, "cpu")


def test_predict_video_tracking_format_and_runtime_options_reach_the_library(monkeypatch, tmp_path):
    calls = Calls(Summary(tmp_path / "predictions.json", "x", images=0, seconds=1.0, written=[]))
    monkeypatch.setattr(cli_predict, "run_predict", calls)
    invoke("predict", tmp_path, "-w", CKPT17, "--out", tmp_path / "o", "--recursive", "--max-frames", "9", "--every", "2",
           "--track", "--track-by", "iou", "--det-every", "3", "--format", "mmpose", "--precision", "bf16",
           "--backend", "onnxruntime")  # fmt: skip
    cfg = calls.last.args[0]
    assert (cfg.recursive, cfg.max_frames, cfg.every, cfg.track, cfg.track_by, cfg.det_every, cfg.format) == (
        True, 9, 2, True, "iou", 3, "mmpose")  # fmt: skip
    assert (cfg.inference.precision, cfg.inference.backend) == (Precision.BF16, Backend.ONNXRUNTIME)
    result = runner.invoke(app, ["predict", str(tmp_path), "-w", str(CKPT17), "--out", str(tmp_path / "o"), "--det-every", "0"])
    assert result.exit_code != 0 and "--det-every" in result.output and "Traceback" not in result.output


# --- benchmark, export, convert -------------------------------------------------------------------------


def test_benchmark_options_reach_the_library(monkeypatch, tmp_path):
    calls = Calls()
    monkeypatch.setattr(cli_benchmark, "run_benchmark", calls)
    monkeypatch.setattr(cli_benchmark, "print_result", lambda r: None)
    invoke("benchmark", "--arch", "hrnet-small", "--batch-sizes", "4,1", "--network", "plain,folded", "--flip",
           "--chunk", "2", "--repeats", "3", "--warmup", "1", "--budget", "9", "--pipeline", "--device", "cpu")  # fmt: skip
    call = calls.last
    assert [(str(s.network), s.flip, s.chunk, s.device) for s in call.kwargs["settings"]] == [
        ("plain", True, 2, "cpu"), ("folded", True, 2, "cpu")]  # fmt: skip
    kw = call.kwargs
    assert (kw["batch_sizes"], kw["repeats"], kw["warmup"], kw["budget_s"], kw["pipeline"]) == ([4, 1], 3, 1, 9.0, True)


def test_benchmark_precisions_backends_compare_and_train_reach_the_library(monkeypatch, tmp_path):
    calls, trained = Calls(), Calls()
    monkeypatch.setattr(cli_benchmark, "run_benchmark", calls)
    monkeypatch.setattr(cli_benchmark, "print_result", lambda r: None)
    monkeypatch.setattr(cli_benchmark, "installed_runtimes", lambda: [Backend.ONNXRUNTIME])
    invoke("benchmark", "--arch", "hrnet-small", "--precision", "fp32,bf16", "--backend", "torch,onnxruntime", "--compare")
    asked = [(str(s.precision), str(s.backend), str(s.network)) for s in calls.last.kwargs["settings"]]
    assert ("fp32", "auto", "plain") in asked and ("fp32", "auto", "compiled") in asked  # --compare: every torch network
    assert ("fp32", "onnxruntime", "auto") in asked and ("bf16", "onnxruntime", "auto") in asked
    invoke("benchmark", "--arch", "hrnet-small", "--backend", "all")
    assert {str(s.backend) for s in calls.last.kwargs["settings"]} == {"auto", "onnxruntime"}  # torch and every installed runtime
    monkeypatch.setattr(cli_benchmark, "train_benchmark", trained)
    invoke("benchmark", "--train", "--preset", "coco", "--arch", "hrnet-small", "--workers", "1,2", "--precision", "bf16",
           "--batch-sizes", "4", "--device", "cpu")  # fmt: skip
    preset, overrides, device, workers, precisions, sizes = trained.last.args[:6]
    assert (preset, overrides, str(device), workers, precisions, sizes) == (
        "coco", ["model.arch=hrnet-small"], "cpu", [1, 2], [Precision.BF16], [4])  # fmt: skip
    assert not calls.calls[2:]  # --train times training only


def test_export_options_reach_the_library(monkeypatch, tmp_path):
    calls = Calls()
    monkeypatch.setattr(cli_export, "export_onnx", calls)
    runner.invoke(app, ["export", "-w", str(CKPT17), "-o", str(tmp_path / "m.onnx"), "--flip", "--batch", "4", "--opset", "18"])
    call = calls.last
    assert call.args == (CKPT17, tmp_path / "m.onnx") and (call.kwargs["flip"], call.kwargs["batch"], call.kwargs["opset"]) == (True, 4, 18)
    runner.invoke(app, ["export", "-w", str(CKPT17), "-o", str(tmp_path / "m.onnx"), "--dynamic-batch"])  # (no result to print)
    assert len(calls.calls) == 2 and calls.last.kwargs["batch"] is None and not calls.last.kwargs["flip"]
    result = runner.invoke(app, ["export", "-w", str(CKPT17), "-o", str(tmp_path / "m.onnx"), "--dynamic-batch", "--batch", "4"])
    assert result.exit_code == 1 and "give one" in result.output and len(calls.calls) == 2


def test_convert_options_reach_the_library(monkeypatch, tmp_path):
    summary = SimpleNamespace(sizes=True, missing_images=[], images=0, persons=0, labelled={}, visible={}, skipped={},
                              inputs=[], unmapped={}, target="coco")  # fmt: skip
    to_coco, remapped = Calls(summary), Calls(summary)
    monkeypatch.setattr(aic, "convert_aic_file", to_coco)
    monkeypatch.setattr(remap, "remap_files", remapped)
    raw = tmp_path / "raw.json"
    raw.write_text("[]")
    invoke("convert", "aic", raw, "-o", tmp_path / "a.json", "--images", tmp_path, "--skip-invalid")
    assert to_coco.last.args == (raw, tmp_path / "a.json") and to_coco.last.kwargs == {"images_dir": tmp_path, "skip_invalid": True}
    invoke("convert", "remap", raw, raw, "--to", "coco-aic", "--from", "aic", "-o", tmp_path / "b.json", "--drop-empty")
    assert remapped.last.args == ([raw, raw], tmp_path / "b.json", "coco-aic", "aic")
    assert remapped.last.kwargs == {"drop_empty": True, "skip_invalid": False}


def test_convert_weights_options_reach_the_library(monkeypatch, tmp_path):
    imported = SimpleNamespace(skipped=[], unexpected=[], missing=[], state_dict={}, info=SimpleNamespace(arch="a", layout="b"))
    read, written = Calls(imported), Calls()
    monkeypatch.setattr(cli_convert_weights, "import_checkpoint", read)
    monkeypatch.setattr(cli_convert_weights, "save_weights", written)
    invoke("convert", "weights", "-w", CKPT17, "-o", tmp_path / "m.safetensors", "--arch", "hrnet-small", "--layout", "coco")
    assert read.last.args == (CKPT17,) and read.last.kwargs == {"arch": "hrnet-small", "layout": "coco"}
    assert written.last.args[0] == tmp_path / "m.safetensors"
    imported.missing = ["head.final_layer.weight"]
    result = runner.invoke(app, ["convert", "weights", "-w", str(CKPT17), "-o", str(tmp_path / "n.safetensors")])
    assert result.exit_code == 1 and "1 weights missing; nothing written" in result.output and len(written.calls) == 1
    invoke("convert", "weights", "-w", CKPT17, "-o", tmp_path / "n.safetensors", "--allow-missing")
    assert written.last.args[0] == tmp_path / "n.safetensors"


# --- the shared vocabulary -------------------------------------------------------------------------------

COMMANDS = {"train": ["train"], "eval": ["eval"], "predict": ["predict"], "benchmark": ["benchmark"], "export": ["export"],
            "convert aic": ["convert", "aic"], "convert remap": ["convert", "remap"], "convert weights": ["convert", "weights"]}  # fmt: skip
TAKES_WEIGHTS = {"eval", "predict", "benchmark", "export", "convert weights"}
RUNS_A_MODEL = {"train", "eval", "predict", "benchmark"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_speaks_the_same_options_and_shows_examples(name):
    text = runner.invoke(app, [*COMMANDS[name], "--help"], env={"COLUMNS": "200"}).output
    assert "Examples" in text and "posecli " in text.split("Examples", 1)[1]
    assert "--out" in text and "-o" in text
    assert ("--weights" in text and "-w" in text) == (name in TAKES_WEIGHTS)
    if name in RUNS_A_MODEL:
        assert "--device" in text and "auto" in text


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("posecli ")
