"""posecli train: short runs of every preset on the bundled sample, the data order, the lr schedule,
bad input. torchrun against micro-batches is in tests/test_scale.py, SIGKILL and resume in
tests/test_faults_run.py.

Runs use hrnet-small at a 64x96 input, a 5-iteration warm-up and no rotation, half-body, scale or
shift augmentation (a few dozen steps then lower the loss clearly), so that each takes seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest
from conftest import TINY_RUN
import torch
from typer.testing import CliRunner

from posecli.cli import app
from posecli.engine.checkpoint import load_backbone, load_state
from posecli.engine.schedule import lr_at
from posecli.engine.train import epoch_batches
from posecli.models.hrnet import build_model
from posecli.presets import TrainCfg
from posecli.weights import load_model

runner = CliRunner()
TINY = TINY_RUN


def records(workdir: Path, kind: str = "train") -> list[dict]:
    return [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def cli(*args: str):
    return runner.invoke(app, ["train", *args])


def one_line(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def merge_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("merge")
    res = cli("--preset", "coco-aic-merge", *TINY, "--epochs", "6", "--out", str(workdir))
    assert res.exit_code == 0, res.output
    return workdir


@pytest.mark.parametrize("preset, layout", [("coco", "coco"), ("coco-aic-merge", "coco"), ("coco-aic-combine", "coco-aic")])
def test_presets_train_on_the_sample(preset, layout, merge_run, tmp_path):
    """Loss falls; best/last weights load with the preset's layout; state, metrics and curves are written."""
    if preset == "coco-aic-merge":
        workdir = merge_run
    else:
        workdir = tmp_path / preset
        res = cli("--preset", preset, *TINY, "--epochs", "8" if preset == "coco" else "6", "--out", str(workdir))
        assert res.exit_code == 0, res.output
    losses = [r["loss"] for r in records(workdir)]
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    for name in ("best", "last"):
        model, info = load_model(workdir / f"{name}.safetensors")
        assert info.layout == layout and model.head.final_layer.out_channels == {"coco": 17, "coco-aic": 19}[layout]
        assert info.preset["name"] == preset and info.input_size == (64, 96)
    state = load_state(workdir / "last.state.pt")
    epochs = 8 if preset == "coco" else 6
    assert state["state"]["epoch"] == epochs and state["state"]["iteration"] == len(losses)
    assert [r["epoch"] for r in records(workdir, "val")] == [epochs - 1]
    assert cv2.imread(str(workdir / "curves.png")) is not None
    assert (workdir / "preset.yaml").read_text().startswith(f"name: {preset}\n")


def test_epoch_batches_shard_evenly():
    """Every index appears; each batch splits into equal shards; the order depends on (seed, epoch) only."""
    batches = epoch_batches(21, seed=3, epoch=5, batch=8, shards=2)
    assert [len(b) for b in batches] == [8, 8, 6]
    assert set(sum(batches, [])) == set(range(21))
    assert batches == epoch_batches(21, 3, 5, 8, 2) != epoch_batches(21, 3, 6, 8, 2)


def test_schedule_known_values():
    """MMPose's recipe: linear warm-up over 500 iterations from 0.001, x0.1 at epochs 170 and 200."""
    cfg = TrainCfg()
    assert lr_at(0, 0, cfg) == pytest.approx(5e-7)
    assert lr_at(250, 0, cfg) == pytest.approx(5e-4 * (0.001 + 0.999 * 0.5))
    assert lr_at(500, 1, cfg) == lr_at(10_000, 169, cfg) == pytest.approx(5e-4)
    assert lr_at(10_000, 170, cfg) == pytest.approx(5e-5)
    assert lr_at(10_000, 199, cfg) == pytest.approx(5e-5)
    assert lr_at(10_000, 200, cfg) == pytest.approx(5e-6)


def test_resume_without_a_checkpoint_fails(tmp_path):
    res = cli("--preset", "coco", *TINY, "--out", str(tmp_path), "--resume")
    assert res.exit_code == 1 and "no training state to resume from" in one_line(res)
    assert "Traceback" not in res.output


def test_resume_with_another_preset_fails(merge_run):
    res = cli("--preset", "coco-aic-combine", *TINY, "--out", str(merge_run), "--resume")
    assert res.exit_code == 1 and "cannot resume this run with different settings" in one_line(res)
    res = cli("--preset", "coco-aic-merge", *TINY, "--batch-size", "2", "--out", str(merge_run), "--resume")
    assert res.exit_code == 1 and "batch_size" in one_line(res)


def test_workdir_of_another_run_is_refused(merge_run):
    res = cli("--preset", "coco-aic-merge", *TINY, "--out", str(merge_run))
    assert res.exit_code == 1 and "holds another run" in one_line(res)


def test_bad_set_fails(tmp_path):
    res = cli("--preset", "coco", *TINY, "--set", "train.nonsense=1", "--out", str(tmp_path))
    assert res.exit_code == 1 and "unknown key 'nonsense'" in one_line(res)


def test_init_backbone_without_matching_keys_fails(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(5, 3, 3, 3), "fc.weight": torch.zeros(2, 2)}, path)
    res = cli("--preset", "coco", *TINY, "--init-backbone", str(path), "--out", str(tmp_path / "run"))
    assert res.exit_code == 1 and "tensors match" in one_line(res) and "Traceback" not in res.output


def test_init_backbone_loads_official_layout(tmp_path):
    """A backbone saved with the official ImageNet HRNet keys (plus a classifier) loads into model.backbone."""
    torch.manual_seed(1)
    source = build_model("hrnet-small", 17)
    for p in source.parameters():
        p.data.normal_()
    official = dict(source.backbone.state_dict())  # keys conv1.weight, layer1..., stage2...: no prefix
    official.update({"incre_modules.0.0.conv1.weight": torch.zeros(4, 4, 1, 1), "classifier.weight": torch.zeros(1000, 2048)})
    path = tmp_path / "hrnet_imagenet.pth"
    torch.save(official, path)
    model = build_model("hrnet-small", 17)
    loaded = load_backbone(model, path)
    assert loaded.matched == len(source.backbone.state_dict()) and not loaded.mismatched and not loaded.missing
    assert sorted(loaded.ignored) == ["classifier.weight", "incre_modules.0.0.conv1.weight"]
    mine = model.backbone.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in source.backbone.state_dict().items())
