"""From per-box keypoints to COCO keypoint AP, as MMPose's ``CocoMetric`` with its defaults.

rescore (box score x mean confident keypoint score) -> OKS NMS per image -> results JSON
-> pycocotools ``COCOeval(iouType='keypoints')`` with the layout's sigmas, on the file
re-read from disk. MMPose uses xtcocotools; with ``use_area=True`` it computes the same.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posecli.choices import ScoreMode
from posecli.geometry import xyxy_to_xywh

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")  # COCOeval.stats order
NMS_MODES = ("oks", "soft_oks", "none")


def rescore(box_scores: np.ndarray, keypoint_scores: np.ndarray, threshold: float = 0.2,
            mode: ScoreMode = ScoreMode.BBOX_KEYPOINT) -> np.ndarray:  # fmt: skip
    """(N,) box scores, (N, K) keypoint scores -> (N,) float64 instance scores, as CocoMetric's ``score_mode``.

    bbox_keypoint: box score x mean of the keypoint scores strictly above ``threshold`` (0 if none),
    in float64 with a running sum as MMPose, so a float32 score of 0.2 counts as above 0.2.
    bbox: the box score. keypoint: the mean of all keypoint scores (numpy's float32 mean, as MMPose).
    """
    if mode == ScoreMode.BBOX:
        return box_scores.astype(np.float64)
    if mode == ScoreMode.KEYPOINT:
        return keypoint_scores.astype(np.float32).mean(axis=1).astype(np.float64)
    kpt = keypoint_scores.astype(np.float64)
    confident = kpt > threshold
    count = confident.sum(axis=1)
    total = np.cumsum(np.where(confident, kpt, 0.0), axis=1)[:, -1] if kpt.size else np.zeros(len(kpt))
    return np.where(count > 0, total / np.maximum(count, 1), 0.0) * box_scores.astype(np.float64)


def oks_one_to_many(kpt: np.ndarray, others: np.ndarray, area: float, other_areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of one instance (K, 2) with M others (M, K, 2), scaled by the mean of the two areas -> (M,)."""
    variances = (2 * np.asarray(sigmas, np.float64)) ** 2
    d2 = ((others.astype(np.float64) - kpt.astype(np.float64)) ** 2).sum(-1)  # (M, K)
    scale = (np.float64(area) + other_areas.astype(np.float64))[:, None] / 2 + np.spacing(1)
    return np.exp(-d2 / variances / scale / 2).mean(-1)


def _by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score, ties in input (id) order.

    MMPose uses numpy's unstable ``argsort()[::-1]``, whose tie order changes with the numpy
    version and CPU (SIMD sorts); instances tied at score 0 come out in another order there.
    """
    return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas, threshold: float = 0.9) -> list[int]:
    """Greedy NMS by score: drop every instance whose OKS with a kept one exceeds ``threshold``."""
    order = _by_score(scores)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        order = rest[oks_one_to_many(kpts[i], kpts[rest], areas[i], areas[rest], sigmas) <= threshold]
    return keep


def soft_oks_nms(kpts, scores, areas, sigmas, threshold: float = 0.9, max_dets: int = 20) -> list[int]:
    """Soft NMS: decay the others' scores by exp(-OKS^2 / threshold) and re-sort; at most ``max_dets`` kept.

    As MMPose, the decayed scores only decide the order; results keep their own scores.
    """
    order = _by_score(scores)
    decayed = np.asarray(scores, np.float64)[order]
    keep = []
    while order.size and len(keep) < max_dets:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        overlap = oks_one_to_many(kpts[i], kpts[rest], areas[i], areas[rest], sigmas)
        decayed = decayed[1:] * np.exp(-(overlap**2) / threshold)
        resort = _by_score(decayed)
        order, decayed = rest[resort], decayed[resort]
    return keep


def select_instances(image_ids, ids, kpts, scores, areas, sigmas, nms: str = "oks", threshold: float = 0.9) -> np.ndarray:
    """Indices of the instances to report, image by image in first-appearance order, each in NMS keep order.

    Within an image, instances are sorted by ``ids`` and duplicate ids dropped before NMS (MMPose does so).
    """
    if nms not in NMS_MODES:
        raise ValueError(f"nms must be one of {NMS_MODES}, got {nms!r}")
    _, first = np.unique(image_ids, return_index=True)
    out = []
    for image_id in image_ids[np.sort(first)]:
        members = np.flatnonzero(image_ids == image_id)
        members = members[np.argsort(ids[members], kind="stable")]
        members = members[np.r_[True, np.diff(ids[members]) != 0]]
        if nms == "none":
            out.extend(members)
            continue
        pick = oks_nms if nms == "oks" else soft_oks_nms
        keep = pick(kpts[members], scores[members], areas[members], sigmas, threshold)
        out.extend(members[keep])
    return np.asarray(out, dtype=np.int64)


def coco_results(image_ids, kpts, kpt_scores, scores, xyxy, category_id: int = 1) -> list[dict]:
    """COCO keypoint results: keypoints [x, y, score] * K, instance score, bbox xywh from the float32 xyxy box."""
    triples = np.concatenate([kpts, kpt_scores[..., None]], axis=-1).reshape(len(kpts), -1)
    xyxy = np.asarray(xyxy, np.float32)
    xywh = xyxy_to_xywh(xyxy)  # float32, as MMPose
    return [
        {"image_id": int(i), "category_id": category_id, "keypoints": t.tolist(), "score": float(s), "bbox": b.tolist()}
        for i, t, s, b in zip(image_ids, triples, scores, xywh)
    ]


@dataclass
class KeypointStat:
    name: str
    labelled: int  # labelled keypoints on ground-truth persons matched at OKS 0.5
    within: float  # share of those whose own OKS term exp(-d^2 / 2s^2k^2) exceeds 0.5
    mean_oks: float  # mean per-keypoint OKS term


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        return fn(*args)


def coco_keypoint_eval(annotations: dict, results_file: str | Path, sigmas, names) -> tuple[dict, list[KeypointStat]]:
    """COCOeval on a results file re-read from disk -> ({AP, AP50, ...}, per-keypoint stats)."""
    gt = COCO()
    gt.dataset = annotations
    _quiet(gt.createIndex)
    dt = _quiet(gt.loadRes, str(results_file))
    ev = COCOeval(gt, dt, iouType="keypoints")
    ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
    ev.params.catIds = [1]
    for step in (ev.evaluate, ev.accumulate, ev.summarize):
        _quiet(step)
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}
    return metrics, per_keypoint_stats(ev, names)


def per_keypoint_stats(ev: COCOeval, names) -> list[KeypointStat]:
    """Per keypoint, on persons matched at OKS 0.5 (all areas): how often it lands within its tolerance."""
    variances = (2 * ev.params.kpt_oks_sigmas) ** 2
    all_areas = ev.params.areaRng[ev.params.areaRngLbl.index("all")]
    terms = []  # (K,) per matched pair, NaN where the ground truth is unlabelled
    for e in ev.evalImgs:
        if e is None or e["aRng"] != all_areas:
            continue
        for dt_id, gt_id, ignored in zip(e["dtIds"], e["dtMatches"][0], e["dtIgnore"][0]):
            if gt_id == 0 or ignored:  # unmatched, or matched to a crowd / keypoint-less person
                continue
            g = np.array(ev.cocoGt.anns[int(gt_id)]["keypoints"], np.float64).reshape(-1, 3)
            d = np.array(ev.cocoDt.anns[dt_id]["keypoints"], np.float64).reshape(-1, 3)
            area = ev.cocoGt.anns[int(gt_id)]["area"] + np.spacing(1)
            term = np.exp(-((d[:, :2] - g[:, :2]) ** 2).sum(1) / variances / area / 2)
            terms.append(np.where(g[:, 2] > 0, term, np.nan))
    terms = np.array(terms).reshape(-1, len(names))
    stats = []
    for k, name in enumerate(names):
        col = terms[:, k][~np.isnan(terms[:, k])]
        n = len(col)
        stats.append(KeypointStat(name, n, float((col > 0.5).mean()) if n else float("nan"),
                                  float(col.mean()) if n else float("nan")))  # fmt: skip
    return stats
