"""MSRA heatmap codec: keypoints <-> Gaussian heatmaps (MMPose's ``MSRAHeatmap``).

Conventions, stated once: sizes are (w, h); heatmaps are (K, H, W) float32;
keypoints are (K, 2) xy in *input* pixels (192x256), the heatmap grid is 4x coarser.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class HeatmapCodec:
    input_size: tuple[int, int] = (192, 256)  # (w, h) of the network input
    heatmap_size: tuple[int, int] = (48, 64)  # (w, h) of its output
    sigma: float = 2.0
    dark: bool = False  # DARK sub-pixel refinement when decoding
    blur_kernel_size: int = 11  # DARK's blur

    @property
    def stride(self) -> np.ndarray:
        """input pixels per heatmap pixel, (2,) float32."""
        return (np.array(self.input_size) / np.array(self.heatmap_size)).astype(np.float32)

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, 2) input-pixel keypoints, (K,) visibility -> heatmaps (K, H, W), weights (K,)."""
        return encode_msra(keypoints / self.stride, visible, self.heatmap_size, self.sigma)

    def decode(self, heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(K, H, W) heatmaps -> keypoints (K, 2) in input pixels, scores (K,)."""
        keypoints, scores = heatmap_argmax(heatmaps)
        if self.dark:
            keypoints = refine_dark(keypoints, heatmaps, self.blur_kernel_size)
        else:
            keypoints = refine_quarter(keypoints, heatmaps)
        return keypoints * self.stride, scores


@functools.lru_cache(maxsize=8)
def gaussian_patch(radius: int, sigma: float) -> np.ndarray:
    """(2r+1, 2r+1) float32 unnormalised Gaussian, peak 1 at the centre (read-only, shared)."""
    g = np.arange(2 * radius + 1, dtype=np.float32)
    patch = np.exp(-((g - radius) ** 2 + (g[:, None] - radius) ** 2) / np.float32(2 * sigma**2))
    patch.flags.writeable = False
    return patch


def encode_msra(keypoints: np.ndarray, visible: np.ndarray, heatmap_size: tuple[int, int], sigma: float):
    """Unnormalised Gaussians at the rounded keypoint, one channel per keypoint.

    MMPose's quirks kept on purpose (its published models were trained so):
    the centre is ``int(kpt + 0.5)`` (truncation toward zero, no sub-pixel shift);
    keypoints with visibility < 0.5 draw nothing but keep their visibility as
    weight; the weight becomes 0 only when the whole 13x13 patch is off the map.
    """
    W, H = heatmap_size
    weights = np.array(visible, dtype=np.float32)  # a copy
    radius = int(sigma * 3)
    patch = gaussian_patch(radius, sigma)
    heatmaps = np.zeros((len(keypoints), H, W), dtype=np.float32)
    centres = (keypoints + 0.5).astype(np.int64).tolist()  # Python ints: this loop runs once per training sample
    for k, (labelled, (mx, my)) in enumerate(zip((~(weights < 0.5)).tolist(), centres)):
        if not labelled:
            continue
        left, top, right, bottom = mx - radius, my - radius, mx + radius + 1, my + radius + 1
        if left >= W or top >= H or right < 0 or bottom < 0:
            weights[k] = 0
            continue
        x0, x1, y0, y1 = max(0, left), min(W, right), max(0, top), min(H, bottom)
        heatmaps[k, y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]
    return heatmaps, weights


def heatmap_argmax(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First maximum in row-major order per channel -> (K, 2) float32 xy, (K,) scores; (-1, -1) where max <= 0."""
    K, H, W = heatmaps.shape
    flat = heatmaps.reshape(K, -1)
    idx = flat.argmax(axis=1)
    scores = flat[np.arange(K), idx]
    locs = np.stack([idx % W, idx // W], axis=-1).astype(np.float32)
    locs[scores <= 0] = -1
    return locs, scores


def refine_quarter(locs: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Move each arg-max a quarter pixel toward its higher neighbour.

    The bounds are MMPose's, asymmetric on purpose: an x-step needs 1 < x < W-1
    (and 0 < y < H), a y-step 1 < y < H-1 (and 0 < x < W).
    """
    K, H, W = heatmaps.shape
    out = locs.copy()
    for k in range(K):
        x, y = int(locs[k, 0]), int(locs[k, 1])
        hm = heatmaps[k]
        dx = hm[y, x + 1] - hm[y, x - 1] if (1 < x < W - 1 and 0 < y < H) else 0.0
        dy = hm[y + 1, x] - hm[y - 1, x] if (1 < y < H - 1 and 0 < x < W) else 0.0
        out[k] += np.sign(np.array([dx, dy], dtype=np.float32)) * np.float32(0.25)
    return out


def _blur_keep_max(heatmaps: np.ndarray, kernel: int) -> np.ndarray:
    """Gaussian blur with a zero border of kernel//2, rescaled to each map's original maximum."""
    border = (kernel - 1) // 2
    out = np.empty_like(heatmaps)
    for k, hm in enumerate(heatmaps):
        padded = np.pad(hm, border).astype(np.float32)
        blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[border:-border, border:-border]
        with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero map is not refined anyway
            out[k] = blurred * (hm.max() / blurred.max())
    return out


def refine_dark(locs: np.ndarray, heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK: one Newton step on the log of the blurred heatmap (Zhang et al., 2020).

    In MMPose's dtypes (numpy 1.x, where a Python number times a float32 scalar is float64):
    the log maps stay float32, so do the first differences and the four-term mixed difference;
    the halving and quartering, the second differences (with their 2 * centre term) and the
    step are float64; the step is LAPACK's 2x2 inverse and is added to the float32 location in
    float64. On flat or noisy maps a float64 log moved the keypoint by up to 0.17 px.
    """
    K, H, W = heatmaps.shape
    logs = np.log(np.maximum(_blur_keep_max(heatmaps, kernel), 1e-10))  # float32, as MMPose's in-place ops
    out = locs.copy()
    for k in range(K):
        x, y = int(locs[k, 0]), int(locs[k, 1])
        if not (1 < x < W - 2 and 1 < y < H - 2):
            continue
        h = logs[k]
        dx = 0.5 * float(h[y, x + 1] - h[y, x - 1])
        dy = 0.5 * float(h[y + 1, x] - h[y - 1, x])
        dxx = 0.25 * (float(h[y, x + 2]) - 2 * float(h[y, x]) + float(h[y, x - 2]))
        dyy = 0.25 * (float(h[y + 2, x]) - 2 * float(h[y, x]) + float(h[y - 2, x]))
        dxy = 0.25 * float(h[y + 1, x + 1] - h[y - 1, x + 1] - h[y + 1, x - 1] + h[y - 1, x - 1])
        if dxx * dyy - dxy * dxy != 0:
            step = -np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ np.array([[dx], [dy]])  # (2, 1) as MMPose
            out[k] = (out[k].astype(np.float64) + step[:, 0]).astype(out.dtype)
    return out
