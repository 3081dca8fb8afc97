"""Presets: complete files into frozen dataclasses; bad keys fail by name; overrides."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from posecli.errors import UserError
from posecli.layouts import LAYOUTS
from posecli.models.hrnet import build_model
from posecli.presets import available_presets, load_preset

TABLE = {"coco": 0.749, "coco-aic-merge": 0.757, "coco-aic-combine": 0.756}


def test_the_three_rows_are_bundled():
    assert set(TABLE) <= set(available_presets())


@pytest.mark.parametrize("name", list(TABLE))
def test_every_preset_builds_its_model(name):
    preset = load_preset(name)
    assert preset.published["AP"] == TABLE[name]
    with torch.device("meta"):
        model = build_model(preset.model.arch, LAYOUTS[preset.model.layout].num_keypoints)
    assert model.head.final_layer.out_channels == (19 if name == "coco-aic-combine" else 17)
    # MMPose's recipe
    assert (preset.train.lr, preset.train.epochs, preset.train.milestones) == (5e-4, 210, (170, 200))
    assert (preset.train.batch_size, preset.train.base_batch_size) == (64, 512)  # 8 GPUs x 64
    assert (preset.test.flip, preset.test.nms_thr, preset.test.keypoint_score_thr) == (True, 0.9, 0.2)


def test_sources_per_row():
    assert [s.layout for s in load_preset("coco").data.train] == ["coco"]
    assert [s.layout for s in load_preset("coco-aic-merge").data.train] == ["coco", "aic"]
    combine = load_preset("coco-aic-combine")
    assert combine.model.layout == "coco-aic" and combine.test.output_keypoints == 17


def test_presets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        load_preset("coco").train.lr = 1.0


def test_overrides_are_checked_like_the_file():
    preset = load_preset("coco", ["train.lr=1e-3", "model.arch=hrnet-w48", "train.milestones=[1, 2]"])
    assert preset.train.lr == 1e-3 and preset.model.arch == "hrnet-w48" and preset.train.milestones == (1, 2)
    with pytest.raises(UserError, match="unknown key 'lrr'"):
        load_preset("coco", ["train.lrr=1"])
    with pytest.raises(UserError, match="train.epochs: expected int"):
        load_preset("coco", ["train.epochs=many"])
    with pytest.raises(UserError, match="model.arch"):
        load_preset("coco", ["model.arch=vit"])


def test_a_mistyped_key_in_a_file_is_named(tmp_path):
    text = (load_preset.__globals__["find_preset"]("coco")).read_text().replace("warmup_iters:", "warmup_iter:")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError, match="bad.yaml: train: unknown key 'warmup_iter'"):
        load_preset(str(tmp_path / "bad.yaml"))


def test_unknown_preset_lists_the_bundled_ones():
    with pytest.raises(UserError, match="coco-aic-merge"):
        load_preset("mpii")


@pytest.mark.parametrize("override, words", [
    ("test.nms=bogus", "test.nms 'bogus': choose one of oks, soft_oks, none"),
    ("test.decode=fast", "test.decode 'fast': choose one of standard, dark"),
    ("model.layout=mpii", "model.layout 'mpii': choose one of"),
    ("train.optimizer=sgd", "train.optimizer 'sgd': choose one of adam"),
    ("test.score_mode=bbox_rle", "test.score_mode 'bbox_rle': choose one of bbox, bbox_keypoint, keypoint"),
    ("train.epochs=0", "train.epochs 0: must be >= 1"),
    ("train.batch_size=-2", "train.batch_size -2: must be >= 1"),
    ("train.workers=-1", "train.workers -1: must be >= 0"),
    ("train.lr=0", "train.lr 0.0: must be > 0"),
    ("train.lr=.nan", "train.lr: expected a finite number"),
    ("train.checkpoint_interval=0", "train.checkpoint_interval 0: must be >= 1"),
    ("data.val.interval=0", "data.val.interval 0: must be >= 1"),
    ("augment.flip_prob=1.5", "augment.flip_prob 1.5: a probability must be in [0, 1]"),
    ("augment.scale_range=[1.5, 0.5]", "augment.scale_range [1.5, 0.5]: must be (low, high)"),
    ("model.input_size=[100, 100]", "model.input_size [100, 100]: (w, h) must be positive multiples of 32"),
    ("model.heatmap_size=[16, 24]", "model.heatmap_size [16, 24]: must be model.input_size / 4, (48, 64)"),
    ("test.nms_thr=2", "test.nms_thr 2.0: must be in [0, 1]"),
    ("test.output_keypoints=18", "test.output_keypoints 18: must be null or 1..17"),
])
def test_values_are_checked_when_the_preset_loads(override, words):
    """Every choice and range fails at load time (before any training), naming the key and what it must be."""
    with pytest.raises(UserError) as e:
        load_preset("coco", [override])
    assert words in str(e.value)


def test_set_fills_a_section_the_file_leaves_out(tmp_path):
    text = (load_preset.__globals__["find_preset"]("coco")).read_text()
    (tmp_path / "no_test.yaml").write_text(text[: text.index("\ntest:")] + "\n")
    assert load_preset(str(tmp_path / "no_test.yaml")).test.flip  # the section's defaults
    filled = load_preset(str(tmp_path / "no_test.yaml"), ["test.flip=false", "test.nms=soft_oks"])
    assert not filled.test.flip and filled.test.nms == "soft_oks"


def test_choices_round_trip_as_plain_strings():
    d = load_preset("coco", ["test.decode=dark"]).to_dict()
    assert d["test"]["decode"] == "dark" and type(d["test"]["decode"]) is str
