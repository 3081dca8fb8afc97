"""Weights: safe reading of MMPose checkpoints, official HRNet import, safetensors round trip."""

from __future__ import annotations

import os

import pytest
import torch
from typer.testing import CliRunner

from conftest import CKPT17, CKPT19
from posecli.cli import app
from posecli.errors import UserError
from posecli.presets import load_preset, preset_from_dict
from posecli.weights import ModelInfo, import_checkpoint, load_model, read_pth, save_weights


def test_mmpose_checkpoint_reads_with_weights_only():
    ckpt = read_pth(CKPT17)
    assert set(ckpt) == {"meta", "state_dict"}
    assert ckpt["meta"]["dataset_meta"]["num_keypoints"] == 17


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": {}, "meta": _Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UserError, match="cannot be read safely"):
        read_pth(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned-by-checkpoint").exists()


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


def test_official_hrnet_checkpoint_loads_through_the_remap(tmp_path):
    mmpose = read_pth(CKPT17)["state_dict"]
    official = {k.removeprefix("backbone.").replace("head.final_layer", "final_layer"): v for k, v in mmpose.items()}
    torch.save(official, tmp_path / "official.pth")
    model, info = load_model(tmp_path / "official.pth")
    assert info.arch == "hrnet-small" and info.layout == "coco"
    for key, value in model.state_dict().items():
        assert torch.equal(value, mmpose[key])


def test_convert_cli_reports_unexpected_and_missing_keys(tmp_path):
    state = dict(read_pth(CKPT17)["state_dict"])
    state["backbone.incre_modules.0.weight"] = torch.zeros(1)
    torch.save({"state_dict": state}, tmp_path / "extra.pth")
    runner = CliRunner()
    result = runner.invoke(app, ["convert", "weights", str(tmp_path / "extra.pth"), "-o", str(tmp_path / "m.safetensors")])
    assert result.exit_code == 0, result.output
    assert "unexpected" in result.output and "incre_modules" in result.output
    assert (tmp_path / "m.safetensors").is_file()

    del state["head.final_layer.bias"]
    torch.save({"state_dict": state}, tmp_path / "missing.pth")
    result = runner.invoke(app, ["convert", "weights", str(tmp_path / "missing.pth"), "-o", str(tmp_path / "n.safetensors")])
    assert result.exit_code == 1
    assert "head.final_layer.bias" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "n.safetensors").exists()


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(UserError, match="not a readable safetensors"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="no such file"):
        load_model(tmp_path / "absent.pth")
