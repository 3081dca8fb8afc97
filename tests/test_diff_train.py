"""posecli against MMPose 1.3.2 itself on seeded random cases: the training and geometry side, function by function.

tests/data/mmpose_goldens/train_*.npz hold MMPose's own outputs, written in MMPose's environment by
benchmarks/mmpose/goldens_train.py (README there). Each test replays every case of one area through
posecli and collects the cases that differ, so a failure names them all. Tolerances: crops and
integer-valued results exact, warp matrices 1e-6, heatmaps 1e-5, keypoints 1e-3 px; dtypes equal
where MMPose's dtype changes the arithmetic that follows (remapped sources: float64).
"""

from __future__ import annotations

import hashlib
import json
import zlib
from functools import lru_cache

import cv2
import numpy as np
import pytest
import torch
from conftest import DATA

from posecli.augment import Sample, affine_crop, crop_warp, from_box, random_box, random_flip, random_half_body
from posecli.codec import HeatmapCodec
from posecli.data.dataset import TrainDataset, load_instances
from posecli.geometry import box_center_scale, clip_xyxy, fix_aspect_ratio, input_to_image, warp_matrix, xywh_to_xyxy
from posecli.layouts import LAYOUTS, get_layout, make_mapping
from posecli.models.topdown import TopDown, flip_back
from posecli.presets import AugmentCfg, Source

GOLDENS = DATA / "mmpose_goldens"
META = json.loads((GOLDENS / "train_meta.json").read_text())
# Remapped kinds of the pipeline and remap goldens: (source, target, averaged targets by name).
KINDS = {
    "coco": ("coco", "coco", {}),
    "merge-aic": ("aic", "coco", {}),
    "combine-coco": ("coco", "coco-aic", {}),
    "combine-aic": ("aic", "coco-aic", {}),
    "average-coco": ("coco", "coco-aic", {"neck": ("left_shoulder", "right_shoulder")}),
    "average-aic": ("aic", "coco", {"nose": ("head_top", "neck")}),
}
KEYPOINT_TOL = 1e-3  # px
HEATMAP_TOL = 1e-5
WARP_TOL = 1e-6


@lru_cache(maxsize=None)
def cases(area: str) -> list[dict]:
    """One golden file as a list of cases {name: array in the dtype MMPose produced} (format: the generator's docstring)."""
    npz = np.load(GOLDENS / f"train_{area}.npz", allow_pickle=False)
    columns = {}
    for name in npz.files:
        if name.endswith((".shape", ".dtype")):
            continue
        values = npz[name]
        if name + ".shape" in npz.files:
            shapes = npz[name + ".shape"]
            ends = np.cumsum([int(np.prod(s)) for s in shapes])
            values = [part.reshape(s) for part, s in zip(np.split(values, ends[:-1]), shapes)]
        if name + ".dtype" in npz.files:
            values = [np.asarray(v).astype(d) for v, d in zip(values, npz[name + ".dtype"])]
        columns[name] = list(values)
    n = len(next(iter(columns.values())))
    return [{name: column[i] for name, column in columns.items()} for i in range(n)]


def render(recipe: np.ndarray) -> np.ndarray:
    """The generator's synthetic image from its 33 numbers (its ``render``, kept in step by each case's CRC)."""
    h, w = int(recipe[0]), int(recipe[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([np.clip(b + ax * xx + ay * yy, 0, 255).astype(np.uint8) for b, ax, ay in recipe[2:11].reshape(3, 3)], -1)
    for x0, y0, x1, y1, *colour in recipe[11:].reshape(3, 7).astype(int).tolist():
        if x0 >= 0:
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    return image


def image_of(case: dict) -> np.ndarray:
    image = render(case["image"])
    assert zlib.crc32(image.tobytes()) == int(case["image_crc32"]), "the test draws another image than the generator did"
    return image


class ScriptedDraws:
    """Replays one case's recorded draws: rows (0, u, ...) uniform, (1, v0..v3) truncnorm; checks the order."""

    def __init__(self, rows: np.ndarray):
        self.rows = list(rows)

    def uniform(self) -> float:
        assert self.rows and self.rows[0][0] == 0, "posecli draws a uniform where MMPose does not"
        return float(self.rows.pop(0)[1])

    def truncnorm(self, n: int) -> np.ndarray:
        assert self.rows and self.rows[0][0] == 1 and n == 4, "posecli draws truncnorm values where MMPose does not"
        return self.rows.pop(0)[1:].astype(np.float32)  # MMPose: truncnorm.rvs(...).astype(np.float32)

    def done(self) -> bool:
        return not self.rows


class Mismatches:
    """Per-area collector: ``check`` records a failed comparison with its case; ``assert_none`` reports them all."""

    def __init__(self, area: str):
        self.area, self.found, self.checked = area, [], 0

    def check(self, i: int, what: str, ok: bool, detail: str = "") -> None:
        self.checked += 1
        if not ok:
            self.found.append(f"case {i} {what} {detail}")

    def close(self, i: int, what: str, ours, theirs, atol: float) -> None:
        ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
        same_shape = ours.shape == theirs.shape
        diff = np.abs(ours - theirs) if same_shape else np.array([np.inf])
        nan_ok = same_shape and np.array_equal(np.isnan(ours), np.isnan(theirs))
        bad = diff[~np.isnan(diff)].max(initial=0) > atol or not nan_ok
        self.check(i, what, not bad, f"max |diff| {diff[~np.isnan(diff)].max(initial=0):.3g} (tol {atol:g})" if same_shape else f"shape {ours.shape} vs {theirs.shape}")

    def same_dtype(self, i: int, what: str, ours: np.ndarray, theirs: np.ndarray) -> None:
        self.check(i, f"{what} dtype", np.asarray(ours).dtype == np.asarray(theirs).dtype, f"{np.asarray(ours).dtype} vs MMPose's {np.asarray(theirs).dtype}")

    def assert_none(self) -> None:
        assert self.checked, f"{self.area}: nothing compared"
        assert not self.found, f"{self.area}: {len(self.found)} of {self.checked} comparisons differ from MMPose:\n" + "\n".join(self.found[:20])


# ---------------------------------------------------------------- geometry


def test_boxes_centres_scales_and_warp_matrices_equal_mmpose():
    m = Mismatches("geometry")
    for i, c in enumerate(cases("geometry")):
        (x, y, w, h), (img_w, img_h) = c["xywh"], c["img_wh"]
        out_wh = tuple(int(v) for v in c["output_wh"])
        # Ground-truth boxes clip in float64, then cast (the training loader's order); detector boxes cast first.
        gt = clip_xyxy(np.array([[x, y, x + w, y + h]]), int(img_w), int(img_h))[0].astype(np.float32)
        m.check(i, "gt box", np.array_equal(gt, c["gt_xyxy"]))
        m.check(i, "det box", np.array_equal(xywh_to_xyxy(c["xywh"])[0], c["det_xyxy"]))
        for name in ("gt", "det"):
            center, scale = box_center_scale(c[f"{name}_xyxy"])
            m.check(i, f"{name} center", np.array_equal(center[0], c[f"{name}_center"]))
            m.check(i, f"{name} scale", np.array_equal(scale[0], c[f"{name}_scale"]))
            fixed = fix_aspect_ratio(scale, out_wh[0] / out_wh[1])[0]
            m.check(i, f"{name} aspect-fixed scale", np.array_equal(fixed, c[f"{name}_fixed"]))
            m.close(i, f"{name} warp", warp_matrix(center[0], fixed, 0.0, out_wh), c[f"{name}_warp"], WARP_TOL)
        # Training warps: float32 angle, centre and scale float32 or float64 (remapped half body).
        fixed = fix_aspect_ratio(c["scale"], out_wh[0] / out_wh[1])
        m.check(i, "aspect-fixed scale", np.array_equal(fixed, c["fixed"]))
        m.same_dtype(i, "aspect-fixed scale", fixed, c["fixed"])
        m.close(i, "training warp", warp_matrix(c["center"], c["fixed"], c["rotation"], out_wh, inv=bool(c["inv"])), c["warp"], WARP_TOL)
        back = input_to_image(c["input_keypoints"][None], c["det_center"][None], c["det_fixed"][None], out_wh)[0].astype(np.float32)
        m.close(i, "keypoints in the image", back, c["image_keypoints"], KEYPOINT_TOL)
    m.assert_none()


def test_crops_equal_mmpose_topdown_affine():
    m = Mismatches("crops")
    for i, c in enumerate(cases("crops")):
        out_wh = tuple(int(v) for v in c["output_wh"])
        k = len(c["keypoints"])
        s = Sample(image_of(c), c["keypoints"], np.ones(k, np.float32), c["center"], c["scale"], np.float32(c["rotation"]))
        scale, matrix = crop_warp(s, out_wh)
        m.close(i, "warp", matrix, c["warp"], WARP_TOL)
        out = affine_crop(s, out_wh)
        m.check(i, "crop", np.array_equal(out.image, c["crop"]), f"max |diff| {np.abs(out.image.astype(int) - c['crop']).max()}" if out.image.shape == c["crop"].shape else "shape")
        m.check(i, "aspect-fixed scale", np.array_equal(out.scale, c["fixed"]))
        m.same_dtype(i, "aspect-fixed scale", out.scale, c["fixed"])
        m.close(i, "keypoints", out.keypoints, c["transformed"], KEYPOINT_TOL)
        m.same_dtype(i, "keypoints", out.keypoints, c["transformed"])
    m.assert_none()


# ---------------------------------------------------------------- flip test


def test_layouts_flip_and_half_body_ids_equal_mmpose_metainfo():
    for name, meta in META["layouts"].items():
        layout = LAYOUTS[name]
        assert list(layout.flip_indices) == meta["flip_indices"], name
        assert list(layout.upper_body_ids) == meta["upper_body_ids"] and list(layout.lower_body_ids) == meta["lower_body_ids"], name


class Replay(torch.nn.Module):
    """A 'network' that returns stored heatmaps: the plain ones, then those of the mirrored input."""

    def __init__(self, plain: np.ndarray, mirrored: np.ndarray):
        super().__init__()
        self.out = torch.from_numpy(np.concatenate([plain, mirrored]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert len(x) == len(self.out)
        return self.out.clone()


def test_flip_test_equals_mmpose_flip_heatmaps_and_fusion():
    m = Mismatches("flip")
    for i, c in enumerate(cases("flip")):
        flip_indices, shift = get_layout(str(c["layout"])).flip_indices, bool(c["shift"])
        flipped = flip_back(torch.from_numpy(c["mirrored"]), flip_indices, shift).numpy()
        m.check(i, "flipped back", np.array_equal(flipped, c["flipped"]))
        b, _, h, w = c["plain"].shape
        model = TopDown(Replay(c["plain"], c["mirrored"]), flip_indices=flip_indices, shift_heatmap=shift)
        fused = model.heatmaps(torch.zeros((b, 4, 3, 3), dtype=torch.uint8)).numpy()
        m.close(i, "fused", fused, c["fused"], HEATMAP_TOL)
    m.assert_none()


# ---------------------------------------------------------------- remapping


def test_mappings_equal_the_mmpose_configs_keypoint_converter_tables():
    for kind, spec in META["mappings"].items():
        source, target, averages = KINDS[kind]
        assert (spec["source"], spec["target"]) == (source, target), kind
        expected = [()] * get_layout(target).num_keypoints
        for src, tgt in spec["mapping"]:
            expected[tgt] = tuple(src) if isinstance(src, list) else (src,)
        assert list(make_mapping(source, target, averages).sources) == expected, kind


def test_remapped_keypoints_and_visibility_equal_keypoint_converter():
    m = Mismatches("remap")
    for i, c in enumerate(cases("remap")):
        source, target, averages = KINDS[str(c["kind"])]
        mapping = make_mapping(source, target, averages)
        keypoints, visible = mapping.apply(c["keypoints_in"][None], c["visible_in"][None])
        labelled = c["visible"] > 0  # MMPose keeps the coordinates of unlabelled keypoints; posecli zeroes them
        m.close(i, "labelled keypoints", keypoints[0][labelled], c["keypoints"][labelled], KEYPOINT_TOL)
        m.check(i, "visibility", np.array_equal(visible[0], c["visible"]))
        m.check(i, "mapped targets", np.array_equal([bool(s) for s in mapping.sources], c["visible_weights"] > 0))
    m.assert_none()


# ---------------------------------------------------------------- the train pipeline with MMPose's draws


def source_instance(c: dict) -> tuple[np.ndarray, np.ndarray, bool]:
    """A pipeline case's keypoints as the training loader holds them: mapped onto the target layout."""
    source, target, averages = KINDS[str(c["kind"])]
    raw = c["keypoints_in"].astype(np.float32).reshape(-1, 3)  # MMPose reads annotations as float32
    keypoints, visible = make_mapping(source, target, averages).apply(raw[None, :, :2], np.minimum(1, raw[None, :, 2]))
    return keypoints[0], visible[0], source != target


def replay_pipeline(c: dict, m: Mismatches, i: int) -> tuple[Sample, Sample]:
    """-> (the sample before the crop, the cropped sample), comparing every step with MMPose's."""
    image = image_of(c)
    keypoints, visible, remapped = source_instance(c)
    labelled = c["visible"] > 0
    m.close(i, "remapped keypoints", keypoints[labelled], c["keypoints"][labelled], KEYPOINT_TOL)
    m.check(i, "remapped visibility", np.array_equal(visible, c["visible"]))
    x, y, w, h = c["xywh"]
    xyxy = clip_xyxy(np.array([[x, y, x + w, y + h]]), image.shape[1], image.shape[0])[0].astype(np.float32)
    layout = get_layout(KINDS[str(c["kind"])][1])
    cfg = AugmentCfg(half_body_prob=float(c["half_body_prob"]))
    draws = ScriptedDraws(c["draws"])
    s = from_box(image, keypoints, visible, xyxy, remapped=remapped)
    steps = {"GetBBoxCenterScale": s}
    steps["RandomFlip"] = s = random_flip(s, draws, layout.flip_indices, cfg.flip_prob)
    steps["RandomHalfBody"] = s = random_half_body(s, draws, layout.upper_body_ids, layout.lower_body_ids, cfg)
    steps["RandomBBoxTransform"] = s = random_box(s, draws, cfg)
    steps["TopdownAffine"] = out = affine_crop(s, tuple(int(v) for v in c["input_wh"]))
    m.check(i, "draws", draws.done(), "posecli used fewer draws than MMPose")
    for step, state in steps.items():
        for field in ("center", "scale"):
            ours, theirs = getattr(state, field), c[f"{step}.{field}"]
            m.check(i, f"{step} {field}", np.array_equal(ours, theirs), f"max |diff| {np.abs(np.float64(ours) - theirs).max():.3g}")
            m.same_dtype(i, f"{step} {field}", ours, theirs)
    flipped = steps["RandomFlip"]
    m.check(i, "flip", (flipped is not steps["GetBBoxCenterScale"]) == bool(c["RandomFlip.flip"]))
    on = c["RandomFlip.visible"] > 0
    m.close(i, "flipped keypoints", flipped.keypoints[on], c["RandomFlip.keypoints"][on], KEYPOINT_TOL)
    m.check(i, "flipped visibility", np.array_equal(flipped.visible, c["RandomFlip.visible"]))
    for field in ("keypoints", "visible"):
        m.same_dtype(i, f"RandomFlip {field}", getattr(flipped, field), c[f"RandomFlip.{field}"])
    m.check(i, "rotation", s.rotation == c["RandomBBoxTransform.rotation"])
    m.same_dtype(i, "rotation", s.rotation, c["RandomBBoxTransform.rotation"])
    m.close(i, "warp", crop_warp(s, tuple(int(v) for v in c["input_wh"]))[1], c["warp"], WARP_TOL)
    m.close(i, "cropped keypoints", out.keypoints[on], c["transformed"][on], KEYPOINT_TOL)
    m.same_dtype(i, "cropped keypoints", out.keypoints, c["transformed"])
    return s, out


def check_crop_and_targets(c: dict, out: Sample, m: Mismatches, i: int, heatmaps=None, weights=None) -> None:
    if "crop" in c:  # written with --full-crops
        m.check(i, "crop", np.array_equal(out.image, c["crop"]), f"max |diff| {np.abs(out.image.astype(int) - c['crop']).max()}")
    m.check(i, "crop", hashlib.sha256(out.image.tobytes()).hexdigest() == str(c["crop_sha256"]))
    if heatmaps is None:
        codec = HeatmapCodec(tuple(int(v) for v in c["input_wh"]), tuple(int(v) for v in c["heatmap_wh"]), 2.0)
        heatmaps, weights = codec.encode(out.keypoints, out.visible)
    m.close(i, "heatmaps", heatmaps, c["heatmaps"], HEATMAP_TOL)
    m.check(i, "weights", np.array_equal(weights, c["weights"]))


@pytest.mark.parametrize("kind", ["coco", "merge-aic", "combine-coco", "combine-aic", "average-coco"])
def test_train_pipeline_equals_mmpose_with_its_draws(kind):
    m = Mismatches(f"pipeline {kind}")
    for i, c in enumerate(cases("pipeline")):
        if c["kind"] == kind:
            _, out = replay_pipeline(c, m, i)
            check_crop_and_targets(c, out, m, i)
    m.assert_none()


def test_training_dataset_items_equal_mmpose_for_plain_and_remapped_sources(tmp_path):
    """The loader end to end (files -> Instances -> TrainDataset.sample/targets) on the presets' four kinds of source."""
    m = Mismatches("dataset")
    chosen = [(i, c) for i, c in enumerate(cases("pipeline")) if c["kind"] != "average-coco"][:60]
    groups: dict[tuple[str, str], list] = {}
    for i, c in chosen:
        source, target, _ = KINDS[str(c["kind"])]
        groups.setdefault((source, target), []).append((i, c))
    for (source, target), members in groups.items():
        folder = tmp_path / f"{source}-{target}"
        folder.mkdir()
        images, annotations = [], []
        for n, (i, c) in enumerate(members, start=1):
            image = image_of(c)
            cv2.imwrite(str(folder / f"{n}.png"), image)
            images.append({"id": n, "file_name": f"{n}.png", "width": image.shape[1], "height": image.shape[0]})
            kpts = c["keypoints_in"].tolist()
            annotations.append({"id": n, "image_id": n, "category_id": 1, "iscrowd": 0, "bbox": c["xywh"].tolist(), "keypoints": kpts, "num_keypoints": int(np.count_nonzero(c["keypoints_in"][2::3]))})
        coco = {"images": images, "annotations": annotations, "categories": [get_layout(source).coco_category_dict()]}
        (folder / "ann.json").write_text(json.dumps(coco))
        layout = get_layout(target)
        instances = load_instances([Source(source, source, f"{folder.name}/ann.json", folder.name)], tmp_path, layout)
        assert len(instances) == len(members), (source, target)
        ds = TrainDataset(instances, layout, HeatmapCodec((192, 256), (48, 64), 2.0), AugmentCfg(), seed=0)
        for n, (i, c) in enumerate(members):
            ds.augment = AugmentCfg(half_body_prob=float(c["half_body_prob"]))
            ds.codec = HeatmapCodec(tuple(int(v) for v in c["input_wh"]), tuple(int(v) for v in c["heatmap_wh"]), 2.0)
            draws = ScriptedDraws(c["draws"])
            out = ds.sample(n, draws)
            m.check(i, "draws", draws.done())
            for field in ("center", "scale"):
                ours, theirs = getattr(out, field), c[f"TopdownAffine.{field}"]
                m.check(i, f"crop {field}", np.array_equal(ours, theirs))
                m.same_dtype(i, f"crop {field}", ours, theirs)
            m.same_dtype(i, "cropped keypoints", out.keypoints, c["transformed"])
            item = ds.targets(out)
            check_crop_and_targets(c, out, m, i, item["heatmaps"].numpy(), item["weights"].numpy())
    m.assert_none()


# ---------------------------------------------------------------- targets


def test_targets_equal_mmpose_generate_target():
    m = Mismatches("targets")
    for i, c in enumerate(cases("targets")):
        codec = HeatmapCodec(tuple(int(v) for v in c["input_wh"]), tuple(int(v) for v in c["heatmap_wh"]), 2.0)
        heatmaps, weights = codec.encode(c["keypoints"], c["visible"])
        m.close(i, "heatmaps", heatmaps, c["heatmaps"], HEATMAP_TOL)
        m.check(i, "weights", np.array_equal(weights, c["weights"]))  # values; MMPose's are float64 after remapping
    m.assert_none()
