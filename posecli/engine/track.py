"""People across video frames: a track id per person, and boxes for the next frame from this one's keypoints.

The tracker is a pure function of (previous frame's people, this frame's people): each current
person takes the id of the previous person it overlaps most (OKS of the keypoints, or box IoU),
greedily by similarity, if that similarity reaches a threshold; the rest get new ids. It looks one
frame back only, as rtmlib's PoseTracker does; a person missed for a frame comes back with a new id.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATCH_BY = ("oks", "iou")
MIN_SIMILARITY = {"oks": 0.3, "iou": 0.3}  # below this a person is taken to be somebody new
CONFIDENT = 0.3  # keypoints scored above this count for OKS and for boxes from keypoints
MIN_COMMON = 3  # OKS over fewer keypoints confident in both is chance: such pairs match by box IoU alone
KEYPOINT_BOX_EXPAND = 1.25  # the keypoints' tight box grown by this to cover the whole body (rtmlib grows it by 1.25)


@dataclass
class People:
    """The people of one frame."""

    keypoints: np.ndarray  # (N, K, 2) image px
    scores: np.ndarray  # (N, K)
    xyxy: np.ndarray  # (N, 4) image px, the boxes they were found in
    ids: np.ndarray | None = None  # (N,) int64 track ids, once tracked

    def __len__(self) -> int:
        return len(self.keypoints)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(M, 4) and (N, 4) xyxy boxes -> (M, N) intersection over union."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def keypoint_oks(a: People, b: People, sigmas: np.ndarray) -> np.ndarray:
    """(M, N) OKS between ``a``'s and ``b``'s people over keypoints confident in both (at least three), scaled by
    the smaller box's area, or their box IoU where that is higher: a person whose keypoints were placed badly still
    matches by its box."""
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2  # (K,)
    area_a = np.clip(a.xyxy[:, 2:] - a.xyxy[:, :2], 1, None).prod(-1)
    area_b = np.clip(b.xyxy[:, 2:] - b.xyxy[:, :2], 1, None).prod(-1)
    areas = np.minimum(area_a[:, None], area_b[None])  # (M, N): a loose box (a false detection) does not make OKS lenient
    d2 = ((a.keypoints[:, None] - b.keypoints[None]) ** 2).sum(-1)  # (M, N, K)
    terms = np.exp(-d2 / variances / areas[..., None] / 2)
    both = (a.scores[:, None] > CONFIDENT) & (b.scores[None] > CONFIDENT)
    count = both.sum(-1)
    oks = np.where(both, terms, 0).sum(-1) / np.maximum(count, 1)
    return np.maximum(np.where(count >= MIN_COMMON, oks, 0.0), box_iou(a.xyxy, b.xyxy))


def assign_ids(previous: People | None, current: People, next_id: int, match_by: str = "oks",
               sigmas: np.ndarray | None = None, min_similarity: float | None = None) -> tuple[np.ndarray, int]:  # fmt: skip
    """Track ids (N,) for ``current``'s people, and the next unused id.

    Greedy: the most similar (previous, current) pair is matched first, then the next among those
    left, while the similarity reaches ``min_similarity``; unmatched current people get new ids.
    """
    if match_by not in MATCH_BY:
        raise ValueError(f"match_by must be one of {MATCH_BY}, got {match_by!r}")
    threshold = MIN_SIMILARITY[match_by] if min_similarity is None else min_similarity
    ids = np.full(len(current), -1, np.int64)
    if previous is not None and len(previous) and len(current):
        if match_by == "oks":
            if sigmas is None:
                raise ValueError("OKS matching needs the layout's sigmas")
            similarity = keypoint_oks(previous, current, sigmas)
        else:
            similarity = box_iou(previous.xyxy, current.xyxy)
        for flat in np.argsort(-similarity, axis=None, kind="stable"):
            i, j = np.unravel_index(flat, similarity.shape)
            if similarity[i, j] < threshold:
                break
            if ids[j] < 0 and previous.ids[i] not in ids:
                ids[j] = previous.ids[i]
    for j in np.flatnonzero(ids < 0):
        ids[j] = next_id
        next_id += 1
    return ids, next_id


def boxes_from_keypoints(people: People, width: int, height: int) -> np.ndarray:
    """(N, 4) xyxy boxes for the next frame: each person's confident keypoints' box, grown by 1.25, inside the image.

    A person with fewer than two confident keypoints keeps the box it was found in.
    """
    out = people.xyxy.astype(np.float32).copy()
    for n, (kpts, scores) in enumerate(zip(people.keypoints, people.scores)):
        good = kpts[scores > CONFIDENT]
        if len(good) < 2:
            continue
        lo, hi = good.min(0), good.max(0)
        centre, half = (lo + hi) / 2, np.maximum((hi - lo) / 2 * KEYPOINT_BOX_EXPAND, 4.0)  # never a line
        out[n] = [*(centre - half), *(centre + half)]
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out
