"""Training augmentation and targets against MMPose's own transforms, with MMPose's draws replayed.

Every case of tests/data/reference/geometry/ and the encode cases of codec/ (README §4, §5).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import COCO_IMAGES, REF

from posecli.augment import Draws, Sample, affine_crop, augment, crop_warp, from_box, random_box, random_flip, random_half_body
from posecli.codec import HeatmapCodec
from posecli.geometry import warp_matrix
from posecli.layouts import get_layout
from posecli.presets import AugmentCfg

GEOMETRY = json.loads((REF / "geometry" / "geometry_cases.json").read_text())
ARRAYS = np.load(REF / "geometry" / "geometry_arrays.npz")
CODEC_CASES = json.loads((REF / "codec" / "codec_cases.json").read_text())["encode_cases"]
ENCODED = np.load(REF / "codec" / "codec_encode.npz")
CFG = AugmentCfg()  # MMPose's defaults, the presets' values
INPUT_SIZE = (192, 256)


class ScriptedDraws:
    """Replays a case's draws (README §5: in the order MMPose consumes them) and checks the order."""

    def __init__(self, draws: list):
        self.script = list(draws)

    def _next(self, kind: str):
        assert self.script, f"a {kind} draw that MMPose does not make"
        name, *rest = self.script.pop(0)
        assert (name == "truncnorm(-1,1).rvs") == (kind == "truncnorm"), f"drew {kind}, MMPose drew {name}"
        return name, rest

    def uniform(self) -> float:
        name, rest = self._next("uniform")
        if name == "np.random.choice":  # RandomFlip: 'horizontal' iff U[0,1) < p; replay as such a uniform
            options, p, chosen = rest
            return 0.0 if chosen == options[0] else float(p[0])
        return float(rest[1][0])

    def truncnorm(self, n: int) -> np.ndarray:
        _, (shape, values) = self._next("truncnorm")
        assert n == math.prod(shape)
        return np.asarray(values, np.float64).astype(np.float32)

    def done(self) -> bool:
        return not self.script


def f32(values) -> np.ndarray:
    return np.asarray(values, np.float64).astype(np.float32).reshape(-1)


def make_sample(image=None, keypoints=None, visible=None, center=(0, 0), scale=(1, 1), rotation=0.0) -> Sample:
    k = 17 if keypoints is None else len(keypoints)
    return Sample(
        image=np.zeros((4, 4, 3), np.uint8) if image is None else image,
        keypoints=np.zeros((k, 2), np.float32) if keypoints is None else np.asarray(keypoints, np.float32).reshape(k, 2),
        visible=np.ones(k, np.float32) if visible is None else f32(visible),
        center=f32(center),
        scale=f32(scale),
        rotation=np.float32(rotation),
    )


@pytest.mark.parametrize("case", GEOMETRY["get_warp_matrix"]["cases"], ids=lambda c: f"rot{c['rot_deg']:g}-{c['rot_dtype']}-inv{c['inv']}")
def test_warp_matrix_matches_mmpose(case):
    rot = np.float32(case["rot_deg"]) if case["rot_dtype"] == "float32" else float(case["rot_deg"])
    m = warp_matrix(f32(case["center"]), f32(case["scale"]), rot, tuple(case["output_size_wh"]), inv=case["inv"])
    np.testing.assert_allclose(m, case["warp_2x3"], rtol=0, atol=1e-6)
    pts = np.asarray(case["test_points_xy"], np.float64)
    np.testing.assert_allclose(pts @ m[:, :2].T + m[:, 2], case["test_points_mapped"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("case", [c for c in GEOMETRY["GetBBoxCenterScale"]["cases"] if "bbox_xyxy_float32" in c])
def test_box_center_scale_matches_mmpose(case):
    # (MMPose's fourth case, a sample that already has a centre, cannot occur here: samples start from a box.)
    s = from_box(np.zeros((4, 4, 3), np.uint8), np.zeros((17, 2)), np.ones(17), f32(case["bbox_xyxy_float32"]))
    np.testing.assert_array_equal(s.center, f32(case["bbox_center"]))
    np.testing.assert_array_equal(s.scale, f32(case["bbox_scale"]))
    assert s.center.dtype == s.scale.dtype == np.float32


@pytest.mark.parametrize("case", GEOMETRY["RandomFlip"]["cases"], ids=lambda c: c["name"])
def test_random_flip_matches_mmpose(case):
    h, w = case["img_shape_hw"]
    image = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    key = f"flip_{case['name']}"
    s = make_sample(image, ARRAYS[f"{key}_keypoints_in"][0], ARRAYS[f"{key}_visible_in"][0], case["bbox_center_in"])
    layout = get_layout("coco" if len(case["flip_indices"]) == 17 else "coco-aic")
    assert list(layout.flip_indices) == case["flip_indices"]
    draws = ScriptedDraws(case["draws"])
    out = random_flip(s, draws, layout.flip_indices, CFG.flip_prob)
    assert draws.done()
    np.testing.assert_array_equal(out.keypoints, ARRAYS[f"{key}_keypoints_out"][0])
    np.testing.assert_array_equal(out.visible, ARRAYS[f"{key}_visible_out"][0])
    np.testing.assert_array_equal(out.center, f32(case["bbox_center_out"]))
    np.testing.assert_array_equal(out.image, image[:, ::-1] if case["flip"] else image)


@pytest.mark.parametrize("case", GEOMETRY["RandomBBoxTransform"]["cases"], ids=lambda c: str(c["draws"][0][2]))
def test_random_box_matches_mmpose(case):
    s = make_sample(center=case["bbox_center_in"], scale=case["bbox_scale_in"])
    draws = ScriptedDraws(case["draws"])
    out = random_box(s, draws, CFG)
    assert draws.done()
    np.testing.assert_array_equal(out.center, f32(case["bbox_center_out"]))
    np.testing.assert_array_equal(out.scale, f32(case["bbox_scale_out"]))
    assert out.rotation == np.float32(case["bbox_rotation_deg"][0])
    assert out.center.dtype == out.scale.dtype == out.rotation.dtype == np.float32


@pytest.mark.parametrize("case", GEOMETRY["RandomHalfBody"]["cases"], ids=lambda c: c["name"])
def test_random_half_body_matches_mmpose(case):
    spec = GEOMETRY["RandomHalfBody"]
    coco = get_layout("coco")
    assert list(coco.upper_body_ids) == spec["upper_body_ids"] and list(coco.lower_body_ids) == spec["lower_body_ids"]
    s = make_sample(None, spec["keypoints_xy"], case["keypoints_visible"], case["bbox_center_in"], case["bbox_scale_in"])
    draws = ScriptedDraws(case["draws"])
    out = random_half_body(s, draws, coco.upper_body_ids, coco.lower_body_ids, CFG)
    assert draws.done()
    np.testing.assert_array_equal(out.center, f32(case["bbox_center_out"]))
    np.testing.assert_array_equal(out.scale, f32(case["bbox_scale_out"]))


@pytest.fixture(scope="module")
def image_785():
    return cv2.imread(str(COCO_IMAGES / "000000000785.jpg"), cv2.IMREAD_COLOR)


@pytest.mark.parametrize("index", range(len(GEOMETRY["TopdownAffine"]["cases"])))
def test_affine_crop_matches_mmpose(index, image_785):
    case = GEOMETRY["TopdownAffine"]["cases"][index]
    kpts = ARRAYS[f"affine{index}_keypoints_in"][0]
    s = make_sample(image_785, kpts, None, case["bbox_center_in"], case["bbox_scale_in"], case["bbox_rotation_deg"])
    scale, matrix = crop_warp(s, INPUT_SIZE)
    np.testing.assert_array_equal(scale, f32(case["input_scale_aspect_fixed"]))
    np.testing.assert_allclose(matrix, case["warp_2x3"], rtol=0, atol=1e-6)
    out = affine_crop(s, INPUT_SIZE)
    np.testing.assert_array_equal(out.image, ARRAYS[f"affine{index}_crop_bgr_u8"])  # OpenCV 4.x: bit-exact
    np.testing.assert_allclose(out.keypoints, ARRAYS[f"affine{index}_transformed_keypoints"][0], rtol=0, atol=1e-4)


STEPS = ["RandomFlip", "RandomHalfBody", "RandomBBoxTransform", "TopdownAffine"]


@pytest.mark.parametrize("index", range(len(GEOMETRY["train_pipeline"]["cases"])))
def test_train_pipeline_matches_mmpose_step_by_step(index):
    case = GEOMETRY["train_pipeline"]["cases"][index]
    image = cv2.imread(str(COCO_IMAGES / case["img_path"]), cv2.IMREAD_COLOR)
    coco = get_layout("coco")
    draws = ScriptedDraws(case["draws"])
    s = from_box(image, np.asarray(case["keypoints_in"]), f32(case["keypoints_visible_in"]), f32(case["bbox_xyxy_float32"]))
    states = {"GetBBoxCenterScale": s}
    states["RandomFlip"] = s = random_flip(s, draws, coco.flip_indices, CFG.flip_prob)
    states["RandomHalfBody"] = s = random_half_body(s, draws, coco.upper_body_ids, coco.lower_body_ids, CFG)
    states["RandomBBoxTransform"] = s = random_box(s, draws, CFG)
    states["TopdownAffine"] = s = affine_crop(s, INPUT_SIZE)
    assert draws.done()
    for step, state in states.items():
        expected = case["after_each_step"][step]
        np.testing.assert_array_equal(state.center, f32(expected["bbox_center"]), err_msg=step)
        np.testing.assert_array_equal(state.scale, f32(expected["bbox_scale"]), err_msg=step)
        assert state.rotation == np.float32(expected["bbox_rotation"][0]), step
    np.testing.assert_allclose(crop_warp(states["RandomBBoxTransform"], INPUT_SIZE)[1], case["warp_2x3"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(s.image, ARRAYS[f"pipe{index}_crop_bgr_u8"])
    np.testing.assert_allclose(s.keypoints, ARRAYS[f"pipe{index}_transformed_keypoints"][0], rtol=0, atol=1e-4)
    np.testing.assert_array_equal(s.visible, ARRAYS[f"pipe{index}_keypoints_visible"][0])
    heatmaps, weights = HeatmapCodec().encode(s.keypoints, s.visible)
    np.testing.assert_allclose(heatmaps, ARRAYS[f"pipe{index}_target_heatmaps"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights, ARRAYS[f"pipe{index}_keypoint_weights"][0])


@pytest.mark.parametrize("index", range(len(GEOMETRY["train_pipeline"]["cases"])))
def test_augment_runs_the_steps_in_mmpose_order(index):
    case = GEOMETRY["train_pipeline"]["cases"][index]
    image = cv2.imread(str(COCO_IMAGES / case["img_path"]), cv2.IMREAD_COLOR)
    draws = ScriptedDraws(case["draws"])
    s = from_box(image, np.asarray(case["keypoints_in"]), f32(case["keypoints_visible_in"]), f32(case["bbox_xyxy_float32"]))
    out = affine_crop(augment(s, draws, CFG, get_layout("coco")), INPUT_SIZE)
    assert draws.done()
    np.testing.assert_array_equal(out.image, ARRAYS[f"pipe{index}_crop_bgr_u8"])


@pytest.mark.parametrize("case", CODEC_CASES, ids=lambda c: c["name"])
def test_encode_matches_mmpose(case):
    p = case["prefix"]
    heatmaps, weights = HeatmapCodec().encode(ENCODED[f"{p}keypoints"][0], ENCODED[f"{p}keypoints_visible"][0])
    np.testing.assert_allclose(heatmaps, ENCODED[f"{p}heatmaps"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(weights, ENCODED[f"{p}keypoint_weights"][0])


def test_truncnorm_is_a_standard_normal_cut_to_plus_minus_one():
    draws = Draws(0)
    v = np.concatenate([draws.truncnorm(4) for _ in range(10_000)])
    assert v.dtype == np.float32 and v.min() >= -1 and v.max() <= 1

    def phi(x):
        return 0.5 * (1 + math.erf(x / math.sqrt(2)))

    for x in (-0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75):
        expected = (phi(x) - phi(-1)) / (phi(1) - phi(-1))
        assert abs((v <= x).mean() - expected) < 0.01, x


def test_uniform_draws_decide_with_the_configured_probabilities():
    """Over many seeded draws, flips happen about flip_prob of the time and rotations about rotate_prob."""
    coco = get_layout("coco")
    s = make_sample(np.zeros((8, 8, 3), np.uint8), center=(4, 4), scale=(4, 8))
    flips = rotations = 0
    for i in range(4000):
        draws = Draws(0, i)
        flips += random_flip(s, draws, coco.flip_indices, CFG.flip_prob).center[0] != s.center[0]
        rotations += random_box(s, draws, CFG).rotation != 0
    assert abs(flips / 4000 - CFG.flip_prob) < 0.03
    assert abs(rotations / 4000 - CFG.rotate_prob) < 0.03


def test_draws_depend_only_on_their_key_in_any_process():
    """A resumed run is a new process (another PYTHONHASHSEED): the same key must give the same draws."""
    here = [Draws(3, 1, 4).uniform(), *Draws(3, 1, 4).truncnorm(4).tolist()]
    code = "import json; from posecli.augment import Draws; print(json.dumps([Draws(3, 1, 4).uniform(), *Draws(3, 1, 4).truncnorm(4).tolist()]))"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        run = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parent, capture_output=True, text=True, check=True)
        assert json.loads(run.stdout) == here
    assert Draws(3, 1, 5).uniform() != here[0] and Draws(3, 2, 4).uniform() != here[0]


def test_subprocesses_import_the_package_the_suite_tests():
    """The suite's subprocesses run from tests/, so `python -m posecli` finds the installed package (as a user's
    shell would), not a checkout in the working folder."""
    import posecli

    run = subprocess.run([sys.executable, "-c", "import posecli; print(posecli.__file__)"], cwd=Path(__file__).parent,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert Path(run.stdout.strip()).resolve() == Path(posecli.__file__).resolve()
