"""From per-box keypoints to COCO keypoint AP, as MMPose's ``CocoMetric`` with its defaults.

rescore (box score x mean confident keypoint score) -> OKS NMS per image -> results JSON
-> pycocotools ``COCOeval(iouType='keypoints')`` with the layout's sigmas, on the file
re-read from disk. MMPose evaluates with xtcocotools; ``coco_keypoint_eval`` reproduces, on
top of pycocotools, each way xtcocotools differs for keypoints (listed there).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from posecli.choices import ScoreMode
from posecli.geometry import xyxy_to_xywh

METRIC_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")  # COCOeval.stats order
NMS_MODES = ("oks", "soft_oks", "none")
_INSERTION_RUN = 16  # numpy's introsort leaves runs of at most 16 to insertion sort


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


def introsort_argsort(values) -> np.ndarray:
    """(N,) numbers -> ascending indices, ties in the order numpy's default argsort leaves them
    when it runs its own introsort (NaN last).

    MMPose orders instances by ``scores.argsort()[::-1]``, which ties make depend on numpy's
    build: numpy 1.25+ hands the sort to x86-simd-sort on AVX-512 CPUs (numpy 2 on AVX2 too),
    whose tie order differs from its own introsort from 4 instances on (measured with numpy
    1.26.4 and 2.4.6). The introsort is what MMPose runs on other CPUs and with numpy < 1.25,
    and the order MMPose's reference outputs here were made with (tests/data/reference/eval).
    Replaying it keeps posecli's results the same on every machine.
    """
    arr = np.asarray(values)
    if arr.size < 2 or (np.unique(arr).size == arr.size and not np.isnan(arr).any()):
        return np.argsort(arr, kind="stable")  # without ties every sort gives this order
    v = arr.tolist()
    idx = list(range(len(v)))
    pending = []  # (lo, hi, depth) left to sort
    lo, hi, depth = 0, len(v) - 1, 2 * (len(v).bit_length() - 1)  # numpy: 2 * floor(log2 n) partitions
    while True:
        if depth < 0:  # too many partitions: numpy's heapsort finishes this part
            _heapsort(v, idx, lo, hi)
        else:
            while hi - lo >= _INSERTION_RUN:
                p = _partition(v, idx, lo, hi)
                depth -= 1
                if p - lo < hi - p:  # go on with the smaller side, the larger waits
                    pending.append((p + 1, hi, depth))
                    hi = p - 1
                else:
                    pending.append((lo, p - 1, depth))
                    lo = p + 1
            for i in range(lo + 1, hi + 1):  # insertion sort
                item, j = idx[i], i
                while j > lo and _less(v[item], v[idx[j - 1]]):
                    idx[j] = idx[j - 1]
                    j -= 1
                idx[j] = item
        if not pending:
            return np.array(idx, dtype=np.intp)
        lo, hi, depth = pending.pop()


def _less(a: float, b: float) -> bool:
    return a < b or (b != b and a == a)  # numpy's order puts NaN after every number


def _partition(v: list, idx: list, lo: int, hi: int) -> int:
    """Median of three as pivot (parked at hi - 1), Hoare scan; returns the pivot's final place."""
    mid = lo + ((hi - lo) >> 1)
    for a, b in ((mid, lo), (hi, mid), (mid, lo)):
        if _less(v[idx[a]], v[idx[b]]):
            idx[a], idx[b] = idx[b], idx[a]
    pivot = v[idx[mid]]
    i, j = lo, hi - 1
    idx[mid], idx[j] = idx[j], idx[mid]
    while True:
        i += 1
        while _less(v[idx[i]], pivot):
            i += 1
        j -= 1
        while _less(pivot, v[idx[j]]):
            j -= 1
        if i >= j:
            break
        idx[i], idx[j] = idx[j], idx[i]
    idx[i], idx[hi - 1] = idx[hi - 1], idx[i]
    return i


def _heapsort(v: list, idx: list, lo: int, hi: int) -> None:
    """numpy's heapsort of idx[lo..hi] (1-based heap over the range)."""
    base, n = lo - 1, hi - lo + 1

    def sift(item: int, i: int, n: int) -> None:
        j = 2 * i
        while j <= n:
            if j < n and _less(v[idx[base + j]], v[idx[base + j + 1]]):
                j += 1
            if not _less(v[item], v[idx[base + j]]):
                break
            idx[base + i] = idx[base + j]
            i, j = j, 2 * j
        idx[base + i] = item

    for top in range(n >> 1, 0, -1):
        sift(idx[base + top], top, n)
    while n > 1:
        item = idx[base + n]
        idx[base + n] = idx[base + 1]
        n -= 1
        sift(item, 1, n)


def _by_score(scores: np.ndarray) -> np.ndarray:
    """Indices by descending score as MMPose's ``argsort()[::-1]``: among ties the later sorted comes first."""
    return introsort_argsort(scores)[::-1]


def oks_one_to_many(kpt: np.ndarray, others: np.ndarray, area: float, other_areas: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
    """OKS of one instance (K, 2) with M others (M, K, 2), scaled by the mean of the two areas -> (M,) float32.

    As MMPose's ``oks_nms`` under numpy 1.x: float32 keypoints and sigmas keep the sum of the
    per-keypoint terms in float32, the area term is cast to it (its 2.2e-16 then vanishes),
    and the mean is stored as float32.
    """
    sigmas = np.asarray(sigmas)
    work = np.result_type(others.dtype, kpt.dtype, sigmas.dtype)
    variances = (sigmas.astype(work) * 2) ** 2
    pair_areas = np.asarray(area, np.result_type(other_areas)) + other_areas
    scale = (pair_areas.astype(np.float64) / 2 + np.spacing(1)).astype(work)
    kpt, others = kpt.astype(work), others.astype(work)
    d2 = (others[..., 0] - kpt[:, 0]) ** 2 + (others[..., 1] - kpt[:, 1]) ** 2  # (M, K)
    terms = np.exp(-(d2 / variances / scale[:, None] / work.type(2)))
    if terms.shape[-1] == 0:
        return np.zeros(len(others), np.float32)
    return (terms.sum(-1).astype(np.float64) / terms.shape[-1]).astype(np.float32)  # row sums: numpy's pairwise sum


def oks_nms(kpts: np.ndarray, scores: np.ndarray, areas: np.ndarray, sigmas, threshold: float = 0.9) -> list[int]:
    """Greedy NMS by score: drop every instance whose float32 OKS with a kept one exceeds float32 ``threshold``."""
    order = _by_score(scores)
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(int(i))
        order = rest[oks_one_to_many(kpts[i], kpts[rest], areas[i], areas[rest], sigmas) <= np.float32(threshold)]
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
        decayed = decayed[1:] * np.exp(-(overlap**2) / np.float32(threshold))  # float32 factor, float64 scores
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
    """COCOeval on a results file re-read from disk -> ({AP, AP50, ...}, per-keypoint stats).

    MMPose's xtcocotools differs from pycocotools for keypoints in four ways, each reproduced here:
    1. a detection with no keypoint score above 0 is dropped (``_xtcoco_results``);
    2. a person counts as labelled if a keypoint has visibility > 0, whatever ``num_keypoints`` says;
    3. an annotation id 0 matches like any other (pycocotools takes a match to id 0 for no match;
       not followed: xtcocotools counts a match to a negative id as a false positive);
    4. the sigmas are MMPose's float32 array, so the OKS variances (2 sigma)^2 are rounded to float32.
    The rest is the same for keypoints (checked on xtcocotools 1.14.3 against pycocotools 2.0.11):
    area ranges, maxDets 20, score sorting (stable), ``use_area=True`` (the annotation's area),
    every category of the file evaluated, and ``loadRes`` taking a result's area and box from its
    ``bbox``. The ground-truth and result dicts are copies: COCOeval writes into them.
    """
    gt = COCO()
    gt.dataset = _xtcoco_ground_truth(annotations)
    _quiet(gt.createIndex)
    dt = _xtcoco_results(gt, json.loads(Path(results_file).read_text()))
    ev = COCOeval(gt, dt, iouType="keypoints")
    ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float32)  # MMPose passes dataset_meta's float32 sigmas
    for step in (ev.evaluate, ev.accumulate, ev.summarize):
        _quiet(step)
    metrics = {name: float(v) for name, v in zip(METRIC_NAMES, ev.stats)}
    return metrics, per_keypoint_stats(ev, names)


def _xtcoco_ground_truth(annotations: dict) -> dict:
    """The annotation file as xtcocotools evaluates it, written for pycocotools.

    ``num_keypoints`` is recounted (visibility > 0) and a missing ``iscrowd`` is 0, as xtcocotools
    reads them. Ids are renumbered 1, 2, ... in their own order, so that an id 0 matches (the
    numbers are not reported). Annotations without keypoints (other categories) are left out:
    xtcocotools cannot evaluate a file that has them.
    """
    anns = [a for a in annotations["annotations"] if "keypoints" in a]
    new_id = {old: new for new, old in enumerate(sorted({a["id"] for a in anns}), start=1)}
    anns = [{**a, "id": new_id[a["id"]], "iscrowd": a.get("iscrowd", 0),
             "num_keypoints": sum(v > 0 for v in a["keypoints"][2::3])} for a in anns]  # fmt: skip
    return {"images": annotations["images"], "categories": annotations["categories"], "annotations": anns}


def _xtcoco_results(gt: COCO, results: list[dict]) -> COCO:
    """``loadRes`` of the results xtcocotools keeps: those with a keypoint score above 0.

    xtcocotools drops the others when it prepares the evaluation; dropping them first gives the
    same matches (results keep their order; their ids, renumbered by loadRes, only mark matches).
    If none is left, the result set is empty (pycocotools' loadRes fails on an empty list).
    """
    kept = [r for r in results if any(s > 0 for s in r["keypoints"][2::3])]
    if kept:
        return _quiet(gt.loadRes, kept)
    empty = COCO()
    empty.dataset = {"images": list(gt.dataset["images"]), "categories": copy.deepcopy(gt.dataset["categories"]),
                     "annotations": []}  # fmt: skip
    _quiet(empty.createIndex)
    return empty


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
