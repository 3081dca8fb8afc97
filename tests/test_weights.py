"""Weights: safe reading of every MMPose checkpoint, official HRNet import, safetensors with checked metadata."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import CKPT17, CKPT19, COCO_ANN, COCO_IMAGES, DATA
from posecli.cli import app
from posecli.engine.checkpoint import FORMAT
from posecli.engine.cocometric import METRIC_NAMES
from posecli.errors import UserError
from posecli.presets import load_preset, preset_from_dict
from posecli.safepickle import Inert, Refused, Unknown
from posecli.safepickle import load as safe_load
from posecli.weights import ModelInfo, import_checkpoint, load_model, read_pth, save_weights

RAW = DATA / "mmpose_ckpt" / "epoch_1.pth"  # what an MMPose training run writes (see its README)
PUBLISHED = DATA / "mmpose_ckpt" / "epoch_1_published.pth"  # the same, as publish_model.py strips it
MMPOSE_METRICS = DATA / "mmpose_ckpt" / "mmpose_val_metrics.json"
runner = CliRunner()


def flat(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def test_mmpose_checkpoint_reads_with_weights_only():
    ckpt = read_pth(CKPT17)
    assert set(ckpt) == {"meta", "state_dict"}
    assert ckpt["meta"]["dataset_meta"]["num_keypoints"] == 17


def test_raw_training_checkpoint_reads_with_inert_stand_ins():
    ckpt = read_pth(RAW)
    assert set(ckpt) == {"meta", "state_dict", "message_hub", "optimizer", "param_schedulers"}
    loss = ckpt["message_hub"]["log_scalars"]["train/loss"]
    assert isinstance(loss, Inert) and loss.name == "mmengine.logging.history_buffer.HistoryBuffer"
    assert loss.state["_log_history"].shape == (2,)  # its state is kept as data: the two iterations' losses
    mean = loss.state["statistics_methods"]["mean"]  # getattr(HistoryBuffer, 'mean') names a stand-in, looks nothing up
    assert isinstance(mean, Unknown) and mean.name.endswith("HistoryBuffer.mean")
    assert not any(name.startswith("mmengine") for name in sys.modules)
    assert ckpt["optimizer"]["state"] and ckpt["param_schedulers"][1]["milestones"] == {1: 1}
    published = read_pth(PUBLISHED)  # torch's legacy format
    assert set(published) == {"meta", "state_dict"} and len(published["state_dict"]) == 242
    for key, value in published["state_dict"].items():
        assert torch.equal(value, ckpt["state_dict"][key]), key


def test_raw_checkpoint_converts_and_evaluates_like_its_published_form_and_like_mmpose(tmp_path):
    res = runner.invoke(app, ["convert", "weights", "-w", str(RAW), "-o", str(tmp_path / "raw.safetensors")])
    assert res.exit_code == 0, res.output
    assert "242 tensors, 0 unexpected, 0 missing" in flat(res)
    assert "not converted message_hub, optimizer, param_schedulers (training state" in flat(res)
    metrics = {}
    for name, weights in (("raw", RAW), ("published", PUBLISHED), ("converted", tmp_path / "raw.safetensors")):
        res = runner.invoke(app, ["eval", "-w", str(weights), "--ann", str(COCO_ANN), "--images", str(COCO_IMAGES),
                                  "--out", str(tmp_path / name)])  # fmt: skip
        assert res.exit_code == 0, res.output
        metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())["metrics"]
    assert metrics["raw"] == metrics["published"] == metrics["converted"]
    mmpose = list(json.loads(MMPOSE_METRICS.read_text()).values())  # MMPose's CocoMetric on the same weights
    assert [metrics["raw"][k] for k in METRIC_NAMES] == pytest.approx(mmpose, abs=1e-6)
    assert abs(metrics["raw"]["AP"] - 0.4102) > 0.005  # not the reference it was fine-tuned from


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "meta": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match=r"evil.pth: refused: it names posix.system|nt.system"):
        read_pth(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned-by-checkpoint").exists()


@pytest.fixture
def hostile(tmp_path, monkeypatch):
    """evil.pth (an MMPose checkpoint whose meta runs a command) and evil.state.pt, in the working folder."""
    monkeypatch.chdir(tmp_path)
    torch.save({"meta": {"note": _Evil()}, "state_dict": read_pth(CKPT17)["state_dict"]}, "evil.pth")
    torch.save({"format": FORMAT, "model": {}, "state": {"epoch": _Evil()}}, "evil.state.pt")
    return tmp_path


COMMANDS = {
    "convert weights": ["convert", "weights", "-w", "evil.pth", "-o", "out.safetensors"],
    "eval": ["eval", "-w", "evil.pth", "--ann", str(COCO_ANN), "--images", str(COCO_IMAGES), "--out", "out"],
    "predict": ["predict", str(COCO_IMAGES / "000000000785.jpg"), "--weights", "evil.pth", "--out", "out"],
    "benchmark": ["benchmark", "--weights", "evil.pth", "--out", "out"],
    "train --init-backbone": ["train", "--preset", "coco", "--sample", "--init-backbone", "evil.pth", "--out", "out"],
    "train --resume-from": ["train", "--resume-from", "evil.state.pt"],
}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_refuses_a_hostile_checkpoint_and_never_runs_it(hostile, command):
    res = runner.invoke(app, COMMANDS[command])
    assert res.exit_code == 1, res.output
    text = flat(res)
    assert "evil." in text and "refused: it names" in text and "system" in text and "Nothing from it was run" in text
    assert "Traceback" not in res.output
    assert not (hostile / "pwned-by-checkpoint").exists()
    assert not (hostile / "out.safetensors").exists() and not (hostile / "out").exists()


def _pickle(*ops: bytes) -> bytes:
    return b"\x80\x02" + b"".join(ops) + b"."


def _global(name: str) -> bytes:
    module, _, attr = name.rpartition(".")
    return b"c" + module.encode() + b"\n" + attr.encode() + b"\n"


CALL = b"X\x01\x00\x00\x00x\x85R"  # ("x",) then REDUCE


@pytest.mark.parametrize("name", ["os.system", "posix.system", "builtins.eval", "builtins.exec", "builtins.__import__",
                                  "builtins.open", "__builtin__.eval", "subprocess.Popen", "importlib.import_module",
                                  "torch.load", "torch.jit.load", "operator.attrgetter", "runpy.run_path"])  # fmt: skip
def test_names_that_run_code_are_refused_even_where_stand_ins_are_allowed(name):
    with pytest.raises(Refused):
        safe_load(io.BytesIO(_pickle(_global(name), CALL)), stand_ins=True)


def test_an_unknown_class_is_never_imported_and_its_state_only_recorded(tmp_path, monkeypatch):
    (tmp_path / "tripwire_mod.py").write_text("open(__file__ + '.imported', 'w').close()\nclass Thing: pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    state = {"__class__": "x", "__setstate__": "y", "value": 3}
    data = pickle.dumps(state, protocol=2)[2:-1]  # the dict's opcodes
    obj = safe_load(io.BytesIO(_pickle(_global("tripwire_mod.Thing"), b")\x81", data, b"b")), stand_ins=True)
    assert isinstance(obj, Inert) and obj.name == "tripwire_mod.Thing" and obj.state == state
    assert type(obj) is Inert and "tripwire_mod" not in sys.modules
    assert not (tmp_path / "tripwire_mod.py.imported").exists()


def test_getattr_only_ever_names_stand_ins():
    ok = safe_load(io.BytesIO(_pickle(_global("builtins.getattr"), _global("mm.Buffer"), b"X\x04\x00\x00\x00mean\x86R")),
                   stand_ins=True)  # fmt: skip
    assert isinstance(ok, Unknown) and ok.name == "mm.Buffer.mean"
    real = _pickle(_global("builtins.getattr"), _global("collections.OrderedDict"), b"X\x08\x00\x00\x00fromkeys\x86R")
    with pytest.raises(Refused, match="getattr"):
        safe_load(io.BytesIO(real), stand_ins=True)


def test_posecli_state_files_allow_no_stand_ins(tmp_path):
    torch.save({"format": FORMAT, "x": ModelInfo("hrnet-small", "coco")}, tmp_path / "odd.state.pt")
    with pytest.raises(UserError, match=r"odd.state.pt: cannot be read safely \(holds posecli.weights.ModelInfo"):
        read_pth(tmp_path / "odd.state.pt", stand_ins=False)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit's own, about itself
def test_a_torchscript_archive_is_refused(tmp_path):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pth")
    with pytest.raises(UserError, match="scripted.pth: refused: it names TorchScript code"):
        read_pth(tmp_path / "scripted.pth")


def test_safetensors_round_trip_keeps_tensors_and_metadata(tmp_path):
    imported = import_checkpoint(CKPT19)
    preset = load_preset("coco-aic-combine")
    info = ModelInfo(imported.info.arch, imported.info.layout, preset=preset.to_dict())
    save_weights(tmp_path / "m.safetensors", imported.state_dict, info)
    model, back = load_model(tmp_path / "m.safetensors")
    assert back == info and preset_from_dict(back.preset) == preset
    assert (back.arch, back.layout) == ("hrnet-small", "coco-aic")
    for key, value in model.state_dict().items():
        assert torch.equal(value, imported.state_dict[key]), key


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_hrnet_checkpoint_loads_through_the_remap(tmp_path, prefix):
    mmpose = read_pth(CKPT17)["state_dict"]
    official = {prefix + k.removeprefix("backbone.").replace("head.final_layer", "final_layer"): v
                for k, v in mmpose.items()}  # fmt: skip
    torch.save(official, tmp_path / "official.pth")
    model, info = load_model(tmp_path / "official.pth")
    assert info.arch == "hrnet-small" and info.layout == "coco"
    for key, value in model.state_dict().items():
        assert torch.equal(value, mmpose[key])


def test_convert_cli_reports_unexpected_and_missing_keys(tmp_path):
    state = dict(read_pth(CKPT17)["state_dict"])
    state["backbone.incre_modules.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "extra.pth")
    result = runner.invoke(app, ["convert", "weights", "-w", str(tmp_path / "extra.pth"), "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    assert "unexpected" in result.output and "incre_modules" in result.output
    assert (tmp_path / "m.safetensors").is_file()

    del state["head.final_layer.bias"]
    torch.save({"state_dict": state}, tmp_path / "missing.pth")
    result = runner.invoke(app, ["convert", "weights", "-w", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "n.safetensors")])
    assert result.exit_code == 1
    assert "head.final_layer.bias" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "n.safetensors").exists()


def test_convert_refuses_a_layout_that_does_not_fit_the_head(tmp_path):
    out = tmp_path / "m.safetensors"
    res = runner.invoke(app, ["convert", "weights", "-w", str(CKPT17), "-o", str(out), "--layout", "aic"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "the head predicts 17 keypoints but layout 'aic' has 14; give --layout coco; nothing written" in flat(res)
    assert not out.exists()
    res = runner.invoke(app, ["convert", "weights", "-w", str(CKPT17), "-o", str(out), "--layout", "body25"])
    assert res.exit_code == 1 and "layout (--layout) body25: not one posecli knows" in flat(res)


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="no such file"):
        load_model(tmp_path / "absent.pth")


@pytest.fixture(scope="module")
def good_file():
    imported = import_checkpoint(CKPT17)
    return imported.state_dict, ModelInfo("hrnet-small", "coco").to_metadata()


# name: (file to cut short or None for an empty one, share kept, suffix, the words of the error)
CUT = {
    "empty .pth": (None, 0, ".pth", "empty file (0 bytes)"),
    "empty .safetensors": (None, 0, ".safetensors", "empty file (0 bytes)"),
    "truncated zip .pth": (RAW, 0.6, ".pth", "not a readable checkpoint, truncated or damaged"),
    "truncated legacy .pth": (PUBLISHED, 0.6, ".pth", "not a readable checkpoint, truncated or damaged"),
    "truncated .safetensors": ("good", 0.6, ".safetensors", "not a readable safetensors file, truncated or damaged"),
    "header cut .safetensors": ("good", 0.0005, ".safetensors", "not a readable safetensors file, truncated or damaged"),
}


@pytest.mark.parametrize("case", CUT)
def test_empty_and_truncated_files_are_one_clear_error_naming_the_file(tmp_path, good_file, case):
    source, keep, suffix, words = CUT[case]
    if source == "good":
        source = tmp_path / "good.safetensors"
        save_file(good_file[0], str(source), metadata=good_file[1])
    data = source.read_bytes() if source else b""
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(data[: int(len(data) * keep)])
    res = runner.invoke(app, ["eval", "-w", str(path), "--ann", str(COCO_ANN), "--images", str(COCO_IMAGES)])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{path}: {words}" in flat(res), res.output


# Each bad file: metadata (or a tensor) changed from a good one, and the words the error must hold.
BAD = {
    "unknown arch": ({"arch": "hrnet-w99"}, "arch 'hrnet-w99' is not one posecli knows"),
    "unknown layout": ({"layout": "body25"}, "layout 'body25' is not one posecli knows"),
    "zero input size": ({"input_size": "[0, 256]"}, "input_size [0, 256] must be (w, h), two positive integers"),
    "negative input size": ({"input_size": "[-192, 256]"}, "two positive integers"),
    "input size of floats": ({"input_size": "[192.5, 256]"}, "two positive integers"),
    "input size not json": ({"input_size": "192x256"}, "input_size is not JSON"),
    "odd input size": ({"input_size": "[190, 256]", "heatmap_size": "[47, 64]"}, "HRNet needs multiples of 32"),
    "heatmap size off": ({"heatmap_size": "[96, 128]"}, "heatmap_size [96, 128] must be input_size / 4"),
    "short mean": ({"mean": "[123.675, 116.28]"}, "mean [123.675, 116.28] must be three finite numbers"),
    "nan mean": ({"mean": "[NaN, 116.28, 103.53]"}, "must be three finite numbers"),
    "inf std": ({"std": "[Infinity, 57.12, 57.375]"}, "std"),
    "zero std": ({"std": "[58.395, 0, 57.375]"}, "every value must be > 0"),
    "string std": ({"std": '["a", 1, 2]'}, "must be three finite numbers"),
    "layout against head": ({"layout": "aic", "keypoint_names": None}, "the head predicts 17 keypoints but layout 'aic' has 14"),
    "names against layout": ({"keypoint_names": '["nose"]'}, "keypoint_names do not match layout 'coco'"),
    "preset not an object": ({"preset": "[1]"}, "preset is not a JSON object"),
    "nan weight": ({"tensor": ("head.final_layer.weight", float("nan"))}, "tensor head.final_layer.weight holds 1 NaN"),
    "inf weight": ({"tensor": ("backbone.conv1.weight", float("inf"))}, "tensor backbone.conv1.weight holds 1 NaN or infinite"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_metadata_or_weights_are_one_clear_error(tmp_path, good_file, case):
    state_dict, meta = dict(good_file[0]), dict(good_file[1])
    change, words = BAD[case]
    for key, value in change.items():
        if key == "tensor":
            name, bad = value
            state_dict[name] = state_dict[name].clone().contiguous()
            state_dict[name].view(-1)[0] = bad
        elif value is None:
            del meta[key]
        else:
            meta[key] = value
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path), metadata=meta)
    with pytest.raises(UserError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)
    res = runner.invoke(app, ["eval", "-w", str(path), "--ann", str(COCO_ANN), "--images", str(COCO_IMAGES),
                              "--out", str(tmp_path / "out")])  # fmt: skip
    assert res.exit_code == 1 and "Traceback" not in res.output and words in flat(res), res.output


def test_nan_weights_in_a_pth_are_refused_by_convert(tmp_path):
    state = {k: v.clone() for k, v in read_pth(CKPT17)["state_dict"].items()}
    state["head.final_layer.bias"][3] = float("nan")
    torch.save({"state_dict": state}, tmp_path / "nan.pth")
    res = runner.invoke(app, ["convert", "weights", "-w", str(tmp_path / "nan.pth"), "-o", str(tmp_path / "m.safetensors")])
    assert res.exit_code == 1 and "tensor head.final_layer.bias holds 1 NaN or infinite values" in flat(res)
    assert not (tmp_path / "m.safetensors").exists()
