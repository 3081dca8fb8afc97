"""Training augmentations of the top-down pipeline, step by step as MMPose's train pipeline.

    from_box          GetBBoxCenterScale: box -> centre, scale (padding 1.25)
    random_flip       RandomFlip: mirror image, keypoints (swapped by flip_indices) and centre
    random_half_body  RandomHalfBody: centre and scale on the upper or the lower body
    random_box        RandomBBoxTransform: shift, resize, rotate the box
    affine_crop       TopdownAffine: aspect ratio fixed, warp to the network input

Each step is a pure function of a ``Sample`` and the random numbers it needs, which
come from a ``Draws`` object in the order MMPose consumes them. Tests script the
draws to replay MMPose's; training draws them from a generator seeded by (seed, epoch, index).
The arithmetic keeps MMPose's dtypes: float32, except that keypoints mapped from another
layout are float64 (MMPose's KeypointConverter writes them into float64 arrays), and so are
the half-body centre and scale made from them and everything computed from those. The crops
and targets then agree with MMPose's bit for bit for plain and remapped sources alike
(reference README §5, §7 item 8; tests/test_diff_train.py).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

import cv2
import numpy as np

from posecli.geometry import box_center_scale, fix_aspect_ratio, warp_image, warp_matrix
from posecli.layouts import Layout
from posecli.presets import AugmentCfg


@dataclass(frozen=True)
class Sample:
    """One person on its way through the pipeline; image and keypoints are in image pixels until the crop."""

    image: np.ndarray  # (H, W, 3) uint8 BGR: the whole image, after affine_crop the (h, w) network input
    keypoints: np.ndarray  # (K, 2) xy, float32 (float64 if remapped): image px, after affine_crop input px
    visible: np.ndarray  # (K,) float32 (float64 if remapped): 0 = unlabelled, 1 = labelled (annotation v clipped to 1)
    center: np.ndarray  # (2,) float32, float64 after a half body of remapped keypoints: centre of the region to crop, image px
    scale: np.ndarray  # (2,) same dtype as center: (w, h) of that region, image px
    rotation: np.float32 = np.float32(0.0)  # degrees; float32 as MMPose's, the warp matrix depends on it


class Draws:
    """The random numbers of one sample, from Python's Mersenne Twister keyed by ints (training: seed, epoch, index).

    One generator per item: Python's costs ~6 us to make, NumPy's ``default_rng`` several times
    that. Anything with the same two methods can stand in (tests replay MMPose's scripted draws).
    """

    def __init__(self, *key: int):
        self.rng = random.Random(",".join(str(int(k)) for k in key))  # str seeds hash the same in every process

    def uniform(self) -> float:
        """One draw from U[0, 1)."""
        return self.rng.random()

    def truncnorm(self, n: int) -> np.ndarray:
        """(n,) float32 standard normal draws truncated to [-1, 1] (scipy's truncnorm(-1, 1)), by rejection."""
        kept = []
        while len(kept) < n:  # 68 % are accepted
            z = self.rng.normalvariate(0.0, 1.0)
            if -1.0 <= z <= 1.0:
                kept.append(z)
        return np.array(kept, dtype=np.float32)


def from_box(image: np.ndarray, keypoints: np.ndarray, visible: np.ndarray, xyxy: np.ndarray, remapped: bool = False) -> Sample:
    """A sample whose crop is the padded box: (K, 2) keypoints, (K,) visibility, (4,) float32 xyxy.

    ``remapped``: the keypoints were mapped from another layout. MMPose's KeypointConverter
    then holds them (and the visibility) in float64; the values are the source's float32 ones.
    """
    dtype = np.float64 if remapped else np.float32
    center, scale = box_center_scale(xyxy)
    return Sample(image, np.asarray(keypoints).astype(dtype), np.asarray(visible).astype(dtype), center[0], scale[0])


def random_flip(s: Sample, draws, flip_indices: tuple[int, ...], prob: float) -> Sample:
    """Mirror with probability ``prob``: x -> w - 1 - x (w = image width), left and right swapped."""
    if not draws.uniform() < prob:  # MMPose: np.random.choice(['horizontal', None], p=[prob, 1 - prob])
        return s
    w = s.image.shape[1]
    idx = list(flip_indices)
    keypoints = s.keypoints[idx]
    keypoints[:, 0] = (w - 1) - keypoints[:, 0]
    center = s.center.copy()
    center[0] = (w - center[0]) - 1  # MMPose's flip_bbox order of operations (float32 rounding)
    return replace(s, image=cv2.flip(s.image, 1), keypoints=keypoints, visible=s.visible[idx], center=center)


def random_half_body(s: Sample, draws, upper_ids: tuple[int, ...], lower_ids: tuple[int, ...], cfg: AugmentCfg) -> Sample:
    """With probability ``cfg.half_body_prob``, centre the crop on the labelled upper or lower body.

    No draw at all below ``half_body_min_keypoints`` labelled keypoints; then one to decide,
    one for the upper/lower preference (drawn even when only one half qualifies).
    """
    if s.visible.sum() < cfg.half_body_min_keypoints:
        return s
    if draws.uniform() > cfg.half_body_prob:
        return s
    upper = [i for i in upper_ids if s.visible[i] > 0]
    lower = [i for i in lower_ids if s.visible[i] > 0]
    prefer_upper = draws.uniform() < cfg.half_body_upper_prob
    upper_ok, lower_ok = len(upper) >= cfg.half_body_min_upper, len(lower) >= cfg.half_body_min_lower
    if not (upper_ok or lower_ok):
        return s
    ids = upper if (upper_ok and (prefer_upper or not lower_ok)) else lower
    selected = s.keypoints[ids]
    center = selected.mean(axis=0)  # the mean, not the middle of the extent; the keypoints' dtype
    scale = (selected.max(axis=0) - selected.min(axis=0)) * cfg.half_body_padding
    return replace(s, center=center, scale=scale)


def random_box(s: Sample, draws, cfg: AugmentCfg) -> Sample:
    """Shift, resize and rotate the crop box (MMPose's RandomBBoxTransform).

    Draws: 4 truncated normals (shift x, shift y, scale, rotation), then one uniform each
    for shift, scale and rotation. The shift is relative to the scale before resizing.
    """
    v = draws.truncnorm(4)  # float32
    shift = v[:2] * cfg.shift_factor if draws.uniform() < cfg.shift_prob else np.zeros(2, np.float32)
    lo, hi = cfg.scale_range
    resize = v[2:3] * ((hi - lo) * 0.5) + (hi + lo) * 0.5 if draws.uniform() < cfg.scale_prob else np.ones(1, np.float32)
    rotation = v[3] * np.float32(cfg.rotate_factor) if draws.uniform() < cfg.rotate_prob else np.float32(0.0)
    return replace(s, center=s.center + shift * s.scale, scale=s.scale * resize, rotation=np.float32(rotation))


def augment(s: Sample, draws, cfg: AugmentCfg, layout: Layout) -> Sample:
    """Flip, half body, box transform: MMPose's random steps in its order."""
    s = random_flip(s, draws, layout.flip_indices, cfg.flip_prob)
    s = random_half_body(s, draws, layout.upper_body_ids, layout.lower_body_ids, cfg)
    return random_box(s, draws, cfg)


def crop_warp(s: Sample, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """-> (2,) scale with the input's aspect ratio (the sample's scale dtype), 2x3 float64 image -> input affine."""
    scale = fix_aspect_ratio(s.scale, input_size[0] / input_size[1])
    return scale, warp_matrix(s.center, scale, s.rotation, input_size)


def affine_crop(s: Sample, input_size: tuple[int, int]) -> Sample:
    """Warp image and keypoints to the (w, h) network input (bilinear, black outside the image)."""
    scale, matrix = crop_warp(s, input_size)
    crop = warp_image(s.image, matrix, input_size)
    keypoints = cv2.transform(s.keypoints[None], matrix)[0]  # in the keypoints' dtype, as MMPose's cv2.transform
    return replace(s, image=crop, keypoints=keypoints, scale=scale)
