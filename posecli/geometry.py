"""Boxes, warp matrices and coordinate maps of the top-down pipeline (MMPose's conventions).

Coordinates are pixels, x right and y down, with pixel centres on integers.
Boxes enter as COCO (x, y, w, h); a crop is described by a ``center`` (2,) and a
``scale`` (2,) = the (w, h) of the image region that fills the network input.
"""

from __future__ import annotations

import cv2
import numpy as np

BOX_PADDING = 1.25


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xywh -> float32 xyxy, as MMPose casts detector boxes (float32 first, then x2 = x + w)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 2:] += b[:, :2]
    return b


def xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) xyxy -> xywh in the input's dtype (results files write float32 boxes, as MMPose)."""
    b = np.asarray(boxes).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)


def clip_xyxy(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Clip ground-truth boxes to [0, W-1] x [0, H-1], as MMPose's COCO loader does."""
    b = boxes.copy()
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width - 1)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height - 1)
    return b


def box_center_scale(xyxy: np.ndarray, padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """(N, 4) float32 xyxy -> centers (N, 2) and scales (N, 2) = padded box (w, h)."""
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    center = (xyxy[:, :2] + xyxy[:, 2:]) * np.float32(0.5)
    scale = (xyxy[:, 2:] - xyxy[:, :2]) * np.float32(padding)
    return center, scale


def box_dtype(values) -> np.ndarray:
    """Centres and scales as MMPose carries them: float64 stays float64, anything else becomes float32.

    Boxes are float32; a half-body box of remapped keypoints (float64 after MMPose's
    KeypointConverter) is float64, and the crop's warp matrix depends on which.
    """
    values = np.asarray(values)
    return values if values.dtype == np.float64 else values.astype(np.float32)


def fix_aspect_ratio(scale: np.ndarray, aspect_ratio: float) -> np.ndarray:
    """Grow (w, h) scales so that w / h == aspect_ratio (input width / height); float32 or float64 as ``box_dtype``."""
    scale = box_dtype(scale)
    w, h = scale[..., 0:1], scale[..., 1:2]
    return np.where(w > h * aspect_ratio, np.concatenate([w, w / aspect_ratio], -1),
                    np.concatenate([h * aspect_ratio, h], -1)).astype(scale.dtype)  # fmt: skip


def _third_point(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a - b
    return b + np.array([-d[1], d[0]], dtype=a.dtype)


def warp_matrix(center, scale, rotation_deg, output_size: tuple[int, int], inv: bool = False) -> np.ndarray:
    """2x3 float64 affine from the image to an output of ``output_size`` = (w, h).

    Only ``scale[0]`` matters (the aspect ratio is already fixed): the second point
    lies half a width left of the centre and the third is the second turned by 90
    degrees. The three point pairs are float32, but centre and width enter in their own
    dtype (``box_dtype``: float64 for remapped half-body boxes) and ``rotation_deg`` keeps its
    (a float32 angle in training), exactly as MMPose, because the matrix differs by up to 2e-4 otherwise.
    """
    center = box_dtype(center)
    src_w = box_dtype(scale)[0]
    dst_w, dst_h = output_size
    rad = np.deg2rad(rotation_deg)
    sn, cs = np.sin(rad), np.cos(rad)
    rot = np.array([[cs, -sn], [sn, cs]])
    src_dir = rot @ np.array([src_w * -0.5, 0.0])
    src = np.zeros((3, 2), dtype=np.float32)
    dst = np.zeros((3, 2), dtype=np.float32)
    src[0] = center
    src[1] = center + src_dir
    dst[0] = [dst_w * 0.5, dst_h * 0.5]
    dst[1] = dst[0] + np.array([dst_w * -0.5, 0.0])
    src[2] = _third_point(src[0], src[1])
    dst[2] = _third_point(dst[0], dst[1])
    return cv2.getAffineTransform(dst, src) if inv else cv2.getAffineTransform(src, dst)


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Bilinear crop with a constant 0 border; ``output_size`` = (w, h)."""
    return cv2.warpAffine(image, matrix, output_size, flags=cv2.INTER_LINEAR)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(..., 2) points through a 2x3 affine matrix, result in the points' dtype."""
    pts = np.asarray(points)
    out = pts.astype(np.float64) @ matrix[:, :2].T + matrix[:, 2]
    return out.astype(pts.dtype if pts.dtype.kind == "f" else np.float64)


def input_to_image(keypoints: np.ndarray, center: np.ndarray, scale: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """(N, K, 2) input-pixel keypoints -> image pixels, for unrotated crops (MMPose's formula: no half-pixel offset)."""
    size = np.asarray(input_size, dtype=np.float64)
    center = np.asarray(center, dtype=np.float64)[:, None]
    scale = np.asarray(scale, dtype=np.float64)[:, None]
    return keypoints / size * scale + center - 0.5 * scale
