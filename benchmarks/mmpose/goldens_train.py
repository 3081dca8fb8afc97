"""MMPose 1.3.2's training and geometry side on seeded random cases -> goldens for tests/test_diff_train.py.

Runs in the MMPose environment, never posecli's (it does not import posecli):

    python -W ignore benchmarks/mmpose/goldens_train.py [--out DIR] [--full-crops]

Every case calls MMPose's own code (parse_data_info, KeypointConverter, GetBBoxCenterScale,
RandomFlip, RandomHalfBody, RandomBBoxTransform, TopdownAffine, GenerateTarget,
get_warp_matrix, flip_heatmaps, TopdownPoseEstimator.add_pred_to_datasample) and stores its
inputs and outputs. The random transforms draw from NumPy's global generator as in training;
every draw is recorded on the way (``Recorder``) so that posecli can replay it.

Files (``train_*.npz``, see the README beside them): an array ``name`` holds all cases stacked
on axis 0, or, when the cases' shapes differ, all cases flattened end to end with
``name.shape`` (cases, ndim) beside it; ``name.dtype`` is the dtype MMPose produced per case
(values of mixed dtypes are stored as float64, which holds float32 exactly).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
import zlib
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

warnings.filterwarnings("ignore")  # MMPose and mmengine warn on every import and call

import cv2  # noqa: E402
import mmpose  # noqa: E402
import numpy as np  # noqa: E402
import scipy  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402
from mmengine.structures import InstanceData  # noqa: E402
from mmpose.datasets.datasets.base import BaseCocoStyleDataset  # noqa: E402
from mmpose.datasets.datasets.utils import parse_pose_metainfo  # noqa: E402
from mmpose.datasets.transforms import common_transforms  # noqa: E402
from mmpose.datasets.transforms import (GenerateTarget, GetBBoxCenterScale, KeypointConverter, RandomBBoxTransform,  # noqa: E402
                                        RandomFlip, RandomHalfBody, TopdownAffine)
from mmpose.models.pose_estimators import TopdownPoseEstimator  # noqa: E402
from mmpose.models.utils.tta import flip_heatmaps  # noqa: E402
from mmpose.structures import PoseDataSample  # noqa: E402
from mmpose.structures.bbox import bbox_xywh2xyxy, bbox_xyxy2cs, get_warp_matrix  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = Path(mmpose.__file__).parent / ".mim" / "configs"
TOPDOWN = CONFIGS / "body_2d_keypoint" / "topdown_heatmap" / "coco"
SEED = 12
META = {name: parse_pose_metainfo(dict(from_file=str(CONFIGS / "_base_" / "datasets" / f"{name}.py"))) for name in ("coco", "aic", "coco_aic")}
POSECLI_LAYOUT = {"coco": "coco", "aic": "aic", "coco_aic": "coco-aic"}


def config_mappings() -> dict[str, tuple[str, str, list]]:
    """The KeypointConverter mappings of MMPose's merge and combine configs, plus two averaged ones."""
    merge = Config.fromfile(str(TOPDOWN / "td-hm_hrnet-w32_8xb64-210e_coco-aic-256x192-merge.py"))
    combine = Config.fromfile(str(TOPDOWN / "td-hm_hrnet-w32_8xb64-210e_coco-aic-256x192-combine.py"))
    mapping = lambda cfg, i: [tuple(m) for m in cfg.train_dataloader.dataset.datasets[i].pipeline[0].mapping]  # noqa: E731
    combine_coco = mapping(combine, 0)
    return {
        "merge-aic": ("aic", "coco", mapping(merge, 1)),
        "combine-coco": ("coco", "coco_aic", combine_coco),
        "combine-aic": ("aic", "coco_aic", mapping(combine, 1)),
        # Not in a config: the combine row's COCO map with neck = mean of the shoulders.
        "average-coco": ("coco", "coco_aic", combine_coco + [((5, 6), 18)]),
        # AIC -> COCO with the nose as the mean of head top and neck.
        "average-aic": ("aic", "coco", mapping(merge, 1) + [((12, 13), 0)]),
    }


class Golden:
    """Per-case arrays under names, saved as described in the module docstring."""

    def __init__(self):
        self.arrays: dict[str, list[np.ndarray]] = defaultdict(list)

    def add(self, **arrays) -> None:
        for name, value in arrays.items():
            self.arrays[name].append(np.array(value))

    def __len__(self) -> int:
        return max((len(v) for v in self.arrays.values()), default=0)

    def save(self, path: Path) -> dict:
        out = {}
        for name, values in self.arrays.items():
            assert len(values) == len(self), f"{name}: {len(values)} values for {len(self)} cases"
            dtypes = {v.dtype for v in values}
            if all(v.dtype.kind == "f" for v in values):
                out[name + ".dtype"] = np.array([str(v.dtype) for v in values])
            dtype = np.result_type(*dtypes) if len(dtypes) > 1 else values[0].dtype
            if len({v.shape for v in values}) == 1:
                out[name] = np.stack(values).astype(dtype)
            else:
                out[name] = np.concatenate([v.astype(dtype).ravel() for v in values])
                out[name + ".shape"] = np.array([v.shape for v in values], dtype=np.int64)
        np.savez_compressed(path, **out)
        return {"file": path.name, "cases": len(self), "bytes": path.stat().st_size}


class Recorder:
    """Patches NumPy's and scipy's draws inside MMPose's transforms; records each one.

    ``draws`` gets (0, u) for a uniform draw (RandomFlip's ``np.random.choice`` consumes one
    uniform: 'horizontal' iff u < p) and (1, v0..v3) for RandomBBoxTransform's truncnorm values.
    """

    def __init__(self):
        self.draws: list[list[float]] = []

    def __enter__(self):
        self.saved = np.random.rand, np.random.choice, common_transforms.truncnorm
        rand, choice, truncnorm = self.saved

        def recorded_rand(*shape):
            value = rand(*shape)
            self.draws += [[0, float(u), np.nan, np.nan, np.nan] for u in np.ravel(value)]
            return value

        def recorded_choice(options, p=None):
            state = np.random.get_state()
            chosen = choice(options, p=p)
            after = np.random.get_state()
            np.random.set_state(state)
            u = np.random.random_sample()  # the one uniform that choice consumed
            assert np.array_equal(np.random.get_state()[1], after[1]) and np.random.get_state()[2] == after[2]
            assert (chosen == options[0]) == (u < p[0])
            self.draws.append([0, u, np.nan, np.nan, np.nan])
            return chosen

        def recorded_rvs(low, high, size):
            value = truncnorm.rvs(low, high, size=size)
            assert value.size == 4
            self.draws.append([1, *map(float, np.ravel(value))])
            return value

        np.random.rand, np.random.choice = recorded_rand, recorded_choice
        common_transforms.truncnorm = SimpleNamespace(rvs=recorded_rvs)
        return self

    def __exit__(self, *exc):
        np.random.rand, np.random.choice, common_transforms.truncnorm = self.saved


def image_recipe(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A small synthetic image as 33 numbers (``render`` draws it; tests draw it the same way).

    h, w, then base, x slope, y slope for each of 3 channels, then up to 3 filled rectangles
    (x0, y0, x1, y1, b, g, r); unused rectangles are all -1. Gradients and edges show sub-pixel shifts.
    """
    channels = [[rng.uniform(0, 255), rng.uniform(-6, 6), rng.uniform(-6, 6)] for _ in range(3)]
    rects = [[rng.integers(0, w), rng.integers(0, h), rng.integers(0, w), rng.integers(0, h), *rng.integers(0, 256, 3)]
             for _ in range(rng.integers(1, 4))]  # fmt: skip
    rects += [[-1] * 7] * (3 - len(rects))
    return np.array([h, w, *np.ravel(channels), *np.ravel(rects)], dtype=np.float64)


def render(recipe: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 BGR image of an ``image_recipe`` (whole-number arithmetic: the same in every NumPy)."""
    h, w = int(recipe[0]), int(recipe[1])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    image = np.stack([np.clip(b + ax * xx + ay * yy, 0, 255).astype(np.uint8) for b, ax, ay in recipe[2:11].reshape(3, 3)], -1)
    for x0, y0, x1, y1, *colour in recipe[11:].reshape(3, 7).astype(int).tolist():
        if x0 >= 0:
            cv2.rectangle(image, (x0, y0), (x1, y1), colour, -1)
    return image


def synthetic_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray, int]:
    """-> (recipe, image, crc32 of the image's bytes) so that tests can check they drew the same image."""
    recipe = image_recipe(rng, h, w)
    image = render(recipe)
    return recipe, image, zlib.crc32(image.tobytes())


def edge_values(rng: np.random.Generator, n: int, size: float) -> np.ndarray:
    """n coordinates along an axis of ``size`` px: inside, on and outside the borders, fractional and not."""
    kind = rng.integers(0, 6, n)
    v = rng.uniform(0, size, n)
    v = np.where(kind == 1, np.round(v), v)
    v = np.where(kind == 2, rng.choice([0.0, size - 1.0, size, -1.0, -0.5]), v)
    v = np.where(kind == 3, rng.uniform(-0.5 * size, 1.5 * size, n), v)
    v = np.where(kind == 4, v + rng.normal(0, 1e-4, n), v)  # values float32 cannot hold
    return v


# ---------------------------------------------------------------- geometry: boxes, centres, warps, back to the image

def random_box(rng: np.random.Generator, w: int, h: int) -> list[float]:
    kind = rng.integers(0, 8)
    bw, bh = rng.uniform(1, w), rng.uniform(1, h)
    x, y = rng.uniform(-0.2 * w, w), rng.uniform(-0.2 * h, h)
    if kind == 1:  # tiny
        bw, bh = rng.uniform(0, 2, 2)
    elif kind == 2:  # zero width or zero height
        bw, bh = (0.0, bh) if rng.random() < 0.5 else (bw, 0.0)
    elif kind == 3:  # off the image
        x, y = rng.choice([-1.5 * w - bw, 1.2 * w]), rng.uniform(-h, 2 * h)
    elif kind == 4:  # larger than the image
        x, y, bw, bh = -rng.uniform(0, w), -rng.uniform(0, h), rng.uniform(w, 3 * w), rng.uniform(h, 3 * h)
    elif kind == 5:  # integer pixels
        x, y, bw, bh = np.round([x, y, bw, bh])
    elif kind == 6:  # on the borders
        x, y, bw, bh = 0.0, 0.0, float(w - 1), float(h - 1)
    return [float(x), float(y), float(bw), float(bh)]


def geometry_cases(rng: np.random.Generator, n: int) -> Golden:
    g = Golden()
    sizes = [(192, 256), (288, 384), (48, 64), (64, 64)]
    for i in range(n):
        img_w, img_h = (int(v) for v in rng.integers(1, 2000, 2))
        xywh = random_box(rng, img_w, img_h)
        img = dict(width=img_w, height=img_h, img_path="x.jpg")
        ann = dict(bbox=xywh, keypoints=[1.0, 1.0, 2.0] * 17, image_id=0, id=i, category_id=1)
        gt = BaseCocoStyleDataset.parse_data_info(None, dict(raw_ann_info=ann, raw_img_info=img))["bbox"]
        det = bbox_xywh2xyxy(np.array(xywh, dtype=np.float32).reshape(1, 4))
        out_w, out_h = sizes[i % len(sizes)]
        rows = {}
        for name, xyxy in (("gt", gt), ("det", det)):
            center, scale = bbox_xyxy2cs(xyxy, padding=1.25)
            fixed = TopdownAffine._fix_aspect_ratio(scale, aspect_ratio=out_w / out_h)
            rows.update({f"{name}_xyxy": xyxy[0], f"{name}_center": center[0], f"{name}_scale": scale[0], f"{name}_fixed": fixed[0],
                         f"{name}_warp": get_warp_matrix(center[0], fixed[0], 0.0, output_size=(out_w, out_h))})  # fmt: skip
        # Training: a float32 angle; centre and scale float32 or, after a remapped half body, float64.
        rot = np.float32(rng.uniform(-80, 80)) if rng.random() < 0.8 else np.float32(0)
        center64 = np.array([rng.uniform(-img_w, 2 * img_w), rng.uniform(-img_h, 2 * img_h)])
        scale64 = np.array([rng.uniform(0, 2 * img_w), rng.uniform(0, 2 * img_h)]) * rng.choice([1.0, 1e-3])
        dtype = np.float64 if i % 2 else np.float32
        center, scale = center64.astype(dtype), scale64.astype(dtype)
        fixed = TopdownAffine._fix_aspect_ratio(scale[None], aspect_ratio=out_w / out_h)[0]
        inv = bool(rng.random() < 0.25)
        rows.update(center=center, scale=scale, fixed=fixed, rotation=rot, inv=inv,
                    warp=get_warp_matrix(center, fixed, rot, output_size=(out_w, out_h), inv=inv))  # fmt: skip
        # Decoded keypoints (input px) back to the image, as TopdownPoseEstimator.add_pred_to_datasample.
        k = 17
        kpts = np.stack([edge_values(rng, k, out_w), edge_values(rng, k, out_h)], -1).astype(np.float32)[None]
        kpts[0, :3] = -4.0  # where decode found no maximum
        sample = PoseDataSample(metainfo=dict(input_center=rows["det_center"], input_scale=rows["det_fixed"], input_size=(out_w, out_h)))
        sample.gt_instances = InstanceData(bboxes=det, bbox_scores=np.ones(1, np.float32))
        pred = InstanceData(keypoints=kpts.copy(), keypoint_scores=np.ones((1, k), np.float32))
        TopdownPoseEstimator.add_pred_to_datasample(SimpleNamespace(test_cfg={}), [pred], None, [sample])
        rows.update(img_wh=(img_w, img_h), xywh=xywh, output_wh=(out_w, out_h), input_keypoints=kpts[0], image_keypoints=sample.pred_instances.keypoints[0])
        g.add(**rows)
    return g


# ---------------------------------------------------------------- crops: TopdownAffine on small synthetic images

def crop_cases(rng: np.random.Generator, n: int) -> Golden:
    g = Golden()
    sizes = [(12, 16), (24, 32), (16, 16), (9, 7), (48, 64)]
    for i in range(n):
        h, w = (int(v) for v in rng.integers(1, 64, 2))
        recipe, image, crc = synthetic_image(rng, h, w)
        out_w, out_h = sizes[i % len(sizes)]
        dtype = np.float64 if i % 2 else np.float32
        center = np.array([edge_values(rng, 1, w)[0], edge_values(rng, 1, h)[0]])
        if i % 10 == 3:
            center = center + rng.choice([-1, 1], 2) * np.array([w, h]) * 1.5  # off the image
        scale = np.array([rng.uniform(0.5, 2 * w), rng.uniform(0.5, 2 * h)])
        if i % 10 == 5:
            scale = scale * 1e-2  # tiny region: a few pixels blown up
        k = 17
        kpts = np.stack([edge_values(rng, k, w), edge_values(rng, k, h)], -1)[None]
        results = dict(img=image.copy(), bbox_center=center[None].astype(dtype), bbox_scale=scale[None].astype(dtype),
                       keypoints=kpts.astype(dtype), keypoints_visible=np.ones((1, k), np.float32))  # fmt: skip
        if rng.random() < 0.7:
            results["bbox_rotation"] = np.array([rng.uniform(-80, 80)], np.float32) * rng.choice([1, 0])
        g.add(image=recipe, image_crc32=crc, center=results["bbox_center"][0], scale=results["bbox_scale"][0], keypoints=results["keypoints"][0],
              rotation=results.get("bbox_rotation", np.zeros(1, np.float32))[0], rotated=("bbox_rotation" in results), output_wh=(out_w, out_h))  # fmt: skip
        results = TopdownAffine(input_size=(out_w, out_h)).transform(results)
        rot = results["bbox_rotation"][0] if "bbox_rotation" in results else 0.0
        warp = get_warp_matrix(results["bbox_center"][0], results["bbox_scale"][0], rot, output_size=(out_w, out_h))
        g.add(crop=results["img"], fixed=results["bbox_scale"][0], warp=warp, transformed=results["transformed_keypoints"][0])
    return g


# ---------------------------------------------------------------- flip test: flip_heatmaps and the fused maps

def flip_cases(rng: np.random.Generator, n: int) -> Golden:
    g = Golden()
    for i in range(n):
        meta = ("coco", "coco_aic", "aic")[i % 3]
        flip_indices = META[meta]["flip_indices"]
        b, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 6))
        shape = (b, len(flip_indices), h, w)
        plain = (rng.integers(-4, 12, shape) / 8).astype(np.float32)  # few distinct values: small files, same arithmetic
        mirrored = (rng.integers(-4, 12, shape) / 8).astype(np.float32)
        shift = bool(i % 4 != 1)
        flipped = flip_heatmaps(torch.from_numpy(mirrored.copy()), flip_mode="heatmap", flip_indices=flip_indices, shift_heatmap=shift)
        fused = (torch.from_numpy(plain) + flipped) * 0.5  # HeatmapHead.predict
        g.add(layout=POSECLI_LAYOUT[meta], shift=shift, plain=plain, mirrored=mirrored, flipped=flipped.numpy(), fused=fused.numpy())
    return g


# ---------------------------------------------------------------- remapping: KeypointConverter

def annotation(rng: np.random.Generator, k: int, img_w: int, img_h: int) -> dict:
    """A COCO-style annotation as posecli and MMPose read it from a file (x, y, v lists; v in 0/1/2)."""
    while True:
        bw, bh = rng.uniform(4, 1.2 * img_w), rng.uniform(4, 1.2 * img_h)
        x, y = rng.uniform(-0.2 * bw, img_w - 0.8 * bw), rng.uniform(-0.2 * bh, img_h - 0.8 * bh)
        xs = x + bw * rng.uniform(-0.1, 1.1, k)
        ys = y + bh * rng.uniform(-0.1, 1.1, k)
        edge = rng.random(k) < 0.15
        xs = np.where(edge, rng.choice([0.0, img_w - 1.0, -2.0, img_w + 0.0], k), xs)
        integer = rng.random() < 0.6  # COCO and AIC store whole pixels; converted files may not
        xs, ys = (np.round(xs), np.round(ys)) if integer else (xs, ys)
        v = rng.choice([0, 1, 2], k, p=[0.15, 0.25, 0.6])
        keep = rng.random(k) < 0.1  # an unlabelled keypoint that still has coordinates
        xs, ys = np.where((v == 0) & ~keep, 0, xs), np.where((v == 0) & ~keep, 0, ys)
        kpts = np.stack([xs, ys, v], -1).ravel()
        kpts = [int(a) if integer or j % 3 == 2 else float(a) for j, a in enumerate(kpts)]
        ann = dict(bbox=[float(x), float(y), float(bw), float(bh)], keypoints=kpts, num_keypoints=int((v > 0).sum()), image_id=0, id=0, category_id=1)
        info = BaseCocoStyleDataset.parse_data_info(None, dict(raw_ann_info=ann, raw_img_info=dict(width=img_w, height=img_h, img_path="x.png")))
        if BaseCocoStyleDataset._is_valid_instance(info):
            return ann, info


def remap_cases(rng: np.random.Generator, n: int, mappings: dict) -> Golden:
    g = Golden()
    kinds = list(mappings)
    for i in range(n):
        kind = kinds[i % len(kinds)]
        source, target, mapping = mappings[kind]
        _, info = annotation(rng, META[source]["num_keypoints"], 640, 480)
        results = KeypointConverter(META[target]["num_keypoints"], mapping).transform(dict(keypoints=info["keypoints"], keypoints_visible=info["keypoints_visible"]))
        g.add(kind=kind, keypoints_in=info["keypoints"][0], visible_in=info["keypoints_visible"][0],
              keypoints=results["keypoints"][0], visible=results["keypoints_visible"][0, :, 0], visible_weights=results["keypoints_visible"][0, :, 1])  # fmt: skip
    return g


# ---------------------------------------------------------------- the train pipeline with recorded draws

STEPS = ("GetBBoxCenterScale", "RandomFlip", "RandomHalfBody", "RandomBBoxTransform", "TopdownAffine")


def pipeline_cases(rng: np.random.Generator, n: int, mappings: dict, big: int, full_crops: bool = False) -> Golden:
    """Train-pipeline samples of every source kind; ``big`` of them at the configs' 192x256 input.

    Crops are stored as the SHA-256 of their bytes (exact, and 40x smaller than the pixels) unless ``full_crops``.
    """
    g = Golden()
    kinds = ["coco", "merge-aic", "combine-coco", "combine-aic", "average-coco"]
    init_default_scope("mmpose")
    for i in range(n):
        kind = kinds[i % len(kinds)]
        source, target, mapping = mappings[kind] if kind != "coco" else ("coco", "coco", None)
        input_wh, heatmap_wh = ((192, 256), (48, 64)) if i < big else ((48, 64), (12, 16))
        img_h, img_w = (int(v) for v in rng.integers(24, 160, 2))
        recipe, image, crc = synthetic_image(rng, img_h, img_w)
        ann, info = annotation(rng, META[source]["num_keypoints"], img_w, img_h)
        half_body_prob = 0.3 if i % 2 else 1.0  # the configs' 0.3, and always (the remapped rounding shows in half-body crops)
        meta = META[target]
        results = dict(info, img=image.copy(), img_shape=image.shape[:2], ori_shape=image.shape[:2])
        if mapping is not None:
            results = KeypointConverter(meta["num_keypoints"], mapping).transform(results)
        results.update({key: list(meta[key]) for key in ("upper_body_ids", "lower_body_ids", "flip_indices")})  # CombinedDataset's
        results["flip_pairs"], results["dataset_keypoint_weights"] = meta["flip_pairs"], meta["dataset_keypoint_weights"]
        g.add(kind=kind, image=recipe, image_crc32=crc, xywh=ann["bbox"], keypoints_in=np.array(ann["keypoints"], np.float64), half_body_prob=half_body_prob,
              input_wh=input_wh, heatmap_wh=heatmap_wh, keypoints=results["keypoints"][0], visible=visible_of(results))  # fmt: skip
        transforms = [GetBBoxCenterScale(), RandomFlip(direction="horizontal"), RandomHalfBody(prob=half_body_prob),
                      RandomBBoxTransform(), TopdownAffine(input_size=input_wh)]  # fmt: skip
        np.random.seed(SEED * 100_000 + i)
        with Recorder() as recorder:
            for step, transform in zip(STEPS, transforms):
                results = transform.transform(results)
                g.add(**{f"{step}.center": results["bbox_center"][0], f"{step}.scale": results["bbox_scale"][0]})
                if step == "RandomFlip":
                    g.add(**{"RandomFlip.flip": results["flip"], "RandomFlip.keypoints": results["keypoints"][0], "RandomFlip.visible": visible_of(results)})
                if step == "RandomBBoxTransform":
                    g.add(**{"RandomBBoxTransform.rotation": results["bbox_rotation"][0]})
        center, scale, rot = results["bbox_center"][0], results["bbox_scale"][0], results["bbox_rotation"][0]
        g.add(draws=np.array(recorder.draws, np.float64).reshape(-1, 5), warp=get_warp_matrix(center, scale, rot, output_size=input_wh),
              crop_sha256=hashlib.sha256(results["img"].tobytes()).hexdigest(), transformed=results["transformed_keypoints"][0])  # fmt: skip
        if full_crops:
            g.add(crop=results["img"])
        codec = dict(type="MSRAHeatmap", input_size=input_wh, heatmap_size=heatmap_wh, sigma=2)
        results = GenerateTarget(encoder=codec).transform(results)
        g.add(heatmaps=results["heatmaps"], weights=results["keypoint_weights"][0])
    return g


def visible_of(results: dict) -> np.ndarray:
    """The visibility channel: (K,) of a (1, K) or, after KeypointConverter, (1, K, 2) array."""
    v = results["keypoints_visible"]
    return v[0, :, 0] if v.ndim == 3 else v[0]


# ---------------------------------------------------------------- targets: GenerateTarget with MSRAHeatmap

def target_cases(rng: np.random.Generator, n: int) -> Golden:
    """Keypoints around the rounding edges of ``int(x / stride + 0.5)`` and the map's borders; float32 and float64."""
    g = Golden()
    init_default_scope("mmpose")
    sizes = [((48, 64), (12, 16)), ((32, 32), (8, 8)), ((192, 256), (48, 64))]
    for i in range(n):
        input_wh, heatmap_wh = sizes[0] if i % 10 < 8 else sizes[1] if i % 10 == 8 else sizes[2]
        k = (17, 19, 14)[i % 3]
        stride = np.array(input_wh) / np.array(heatmap_wh)
        cells = np.stack([rng.integers(-8, heatmap_wh[0] + 8, k), rng.integers(-8, heatmap_wh[1] + 8, k)], -1)
        kpts = (cells - 0.5) * stride  # exactly on a rounding edge ...
        kpts = kpts * (1 + rng.choice([0.0, 1e-7, -1e-7, 1e-6, -1e-6], (k, 2))) + rng.choice([0.0, 0.0, 1e-5, -1e-5], (k, 2))  # ... or beside it
        loose = rng.random((k, 2)) < 0.3
        kpts = np.where(loose, rng.uniform(-10, np.array(input_wh) + 10, (k, 2)), kpts)
        remapped = bool(i % 2)
        if remapped:  # after KeypointConverter: float64 keypoints, visibility (1, K, 2) with its weights channel
            vis = rng.choice([0.0, 1.0], k, p=[0.2, 0.8])
            visible = np.stack([vis, np.ones(k)], -1)[None]
            keypoints = kpts[None]
        else:
            vis = rng.choice([0.0, 1.0, 0.3, 0.49, 0.5, 2.0], k, p=[0.15, 0.6, 0.05, 0.05, 0.1, 0.05]).astype(np.float32)
            visible = vis[None]
            keypoints = kpts[None].astype(np.float32)
        codec = dict(type="MSRAHeatmap", input_size=input_wh, heatmap_size=heatmap_wh, sigma=2)
        results = GenerateTarget(encoder=codec).transform(dict(transformed_keypoints=keypoints, keypoints_visible=visible))
        g.add(keypoints=keypoints[0], visible=visible[0, :, 0] if remapped else visible[0], input_wh=input_wh, heatmap_wh=heatmap_wh,
              heatmaps=results["heatmaps"], weights=results["keypoint_weights"][0])  # fmt: skip
    return g


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "mmpose_goldens")
    parser.add_argument("--full-crops", action="store_true", help="also store the pipeline's crops (~1 MB more), to see how far a crop is off")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    mappings = config_mappings()
    areas = {
        "geometry": lambda rng: geometry_cases(rng, 400),
        "crops": lambda rng: crop_cases(rng, 300),
        "flip": lambda rng: flip_cases(rng, 240),
        "remap": lambda rng: remap_cases(rng, 500, mappings),
        "pipeline": lambda rng: pipeline_cases(rng, 400, mappings, big=20, full_crops=args.full_crops),
        "targets": lambda rng: target_cases(rng, 300),
    }
    files = {}
    for index, (area, make) in enumerate(areas.items()):
        files[area] = make(np.random.default_rng([SEED, index])).save(args.out / f"train_{area}.npz")
        print(area, files[area])
    meta = {
        "written_by": "benchmarks/mmpose/goldens_train.py",
        "versions": {"mmpose": mmpose.__version__, "numpy": np.__version__, "opencv": cv2.__version__, "scipy": scipy.__version__, "torch": torch.__version__},
        "seed": SEED,
        "files": files,
        "layouts": {POSECLI_LAYOUT[m]: {key: list(map(int, META[m][key])) for key in ("flip_indices", "upper_body_ids", "lower_body_ids")} for m in META},
        "mappings": {kind: {"source": POSECLI_LAYOUT[s], "target": POSECLI_LAYOUT[t], "mapping": m} for kind, (s, t, m) in mappings.items()},
    }
    (args.out / "train_meta.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
