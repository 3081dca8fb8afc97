"""Drawing people on an image: boxes with their scores, skeleton links and keypoints in the layout's colours."""

from __future__ import annotations

import cv2
import numpy as np

from posecli.layouts import Layout

BOX_BGR = (255, 255, 255)


def bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Layout colours are RGB (as MMPose's dataset files); OpenCV draws BGR."""
    return rgb[2], rgb[1], rgb[0]


def draw_people(image: np.ndarray, layout: Layout, keypoints: np.ndarray, keypoint_scores: np.ndarray,
                xyxy: np.ndarray, box_scores: np.ndarray, min_keypoint_score: float = 0.3) -> np.ndarray:  # fmt: skip
    """A drawn copy of ``image`` (H, W, 3) BGR.

    keypoints (N, K, 2) image px, keypoint_scores (N, K), xyxy (N, 4), box_scores (N,). Keypoints at or
    below ``min_keypoint_score`` are left out, and so is any link that touches one.
    """
    out = image.copy()
    size = max(image.shape[:2])
    radius = max(3, round(size / 160))
    thickness = max(1, round(size / 400))
    names = layout.keypoints
    for box, box_score, kpts, scores in zip(xyxy, box_scores, keypoints, keypoint_scores):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), BOX_BGR, thickness, cv2.LINE_AA)
        _label(out, f"{box_score:.2f}", (x1 + 2, max(y1 - 4, 12)), size)
        shown = scores[: len(names)] > min_keypoint_score
        for a, b in layout.skeleton_ids:
            if shown[a] and shown[b]:
                colour = bgr(layout.link_colour(names[a], names[b]))
                cv2.line(out, _point(kpts[a]), _point(kpts[b]), colour, thickness + 1, cv2.LINE_AA)
        for k in np.flatnonzero(shown):
            cv2.circle(out, _point(kpts[k]), radius, bgr(layout.colour(names[k])), -1, cv2.LINE_AA)
    return out


def _point(xy: np.ndarray) -> tuple[int, int]:
    return int(round(float(xy[0]))), int(round(float(xy[1])))


def _label(image: np.ndarray, text: str, origin: tuple[int, int], size: int) -> None:
    """White text with a dark outline, readable on any background."""
    scale = max(0.4, size / 1600)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, BOX_BGR, 1, cv2.LINE_AA)
