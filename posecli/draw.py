"""Drawing people on an image: boxes with their scores, skeleton links and keypoints in the layout's colours."""

from __future__ import annotations

import cv2
import numpy as np

from posecli.layouts import Layout

BOX_BGR = (255, 255, 255)
# a box colour per track id (BGR), cycled: distinct hues that read on light and dark backgrounds
TRACK_BGR = ((75, 25, 230), (75, 180, 60), (25, 225, 255), (200, 130, 0), (48, 130, 245), (180, 30, 145),
             (240, 240, 70), (230, 50, 240), (60, 245, 210), (190, 190, 250))  # fmt: skip


def bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Layout colours are RGB (as MMPose's dataset files); OpenCV draws BGR."""
    return rgb[2], rgb[1], rgb[0]


def draw_people(image: np.ndarray, layout: Layout, keypoints: np.ndarray, keypoint_scores: np.ndarray,
                xyxy: np.ndarray, box_scores: np.ndarray, min_keypoint_score: float = 0.3,
                labels: list[str] | None = None, track_ids: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """A drawn copy of ``image`` (H, W, 3) BGR.

    keypoints (N, K, 2) image px, keypoint_scores (N, K), xyxy (N, 4), box_scores (N,). Keypoints at or
    below ``min_keypoint_score`` are left out, and so is any link that touches one. Each box is labelled
    ``labels[n]`` (default its score); with ``track_ids`` (N,) each track's box has its own colour.
    """
    out = image.copy()
    size = max(image.shape[:2])
    radius = max(3, round(size / 160))
    thickness = max(1, round(size / 400))
    names = layout.keypoints
    labels = [f"{s:.2f}" for s in box_scores] if labels is None else labels
    for n, (box, kpts, scores) in enumerate(zip(xyxy, keypoints, keypoint_scores)):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        colour = BOX_BGR if track_ids is None else TRACK_BGR[int(track_ids[n]) % len(TRACK_BGR)]
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness + (track_ids is not None), cv2.LINE_AA)
        _label(out, labels[n], (x1 + 2, max(y1 - 4, 12) if y1 > 14 else y1 + 16), size)
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
