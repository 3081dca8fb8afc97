"""MMPose 1.3.2's evaluation side on seeded random cases -> goldens for tests/test_diff_eval.py.

Runs in the MMPose environment, never posecli's (it does not import posecli):

    python -W ignore benchmarks/mmpose/goldens_eval.py [--out DIR]

Every case calls MMPose's own code: ``ndarray.argsort()`` (the order OKS NMS rests on),
``oks_nms`` and ``soft_oks_nms`` (mmpose.evaluation.functional), the whole ``CocoMetric``
(rescoring, NMS, results file, xtcocotools' COCOeval) and the ``MSRAHeatmap`` codec (encode,
decode standard and DARK). It stores the inputs and what MMPose returned.

Tied scores: numpy 1.25+ sorts on AVX-512 CPUs with x86-simd-sort, which orders ties unlike
numpy's own introsort (the order of every other CPU, and of MMPose's reference outputs in
tests/data/reference). This script turns that dispatch off before numpy loads, so the goldens
hold the introsort order on any machine, and checks that it did.

Files (see the README beside them): per area one ``.npz``; arrays whose cases differ in length
are stored end to end with a per-case count (``*_n``) beside them.
"""

from __future__ import annotations

import os

os.environ["NPY_DISABLE_CPU_FEATURES"] = (  # before numpy is imported (see above)
    "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import warnings  # noqa: E402
from collections import defaultdict  # noqa: E402
from importlib.metadata import version  # noqa: E402
from pathlib import Path  # noqa: E402

warnings.filterwarnings("ignore")  # MMPose and mmengine warn on every import and call

import numpy as np  # noqa: E402
from mmengine.logging import MMLogger  # noqa: E402

import mmpose  # noqa: E402
from mmpose.codecs import MSRAHeatmap  # noqa: E402
from mmpose.datasets.datasets.utils import parse_pose_metainfo  # noqa: E402
from mmpose.evaluation.functional import oks_nms, soft_oks_nms  # noqa: E402
from mmpose.evaluation.metrics import CocoMetric  # noqa: E402

SEED = 12
OUT = Path(__file__).resolve().parents[2] / "tests" / "data" / "mmpose_goldens"
# numpy's introsort of 20 equal numbers (x86-simd-sort gives 0..19 instead)
INTROSORT_OF_20_EQUAL = [0, *range(17, 0, -1), 18, 19]


class Store:
    """Arrays of many cases: ``add`` stacks one value per case, ``ragged`` puts them end to end."""

    def __init__(self):
        self.parts = defaultdict(list)
        self.end_to_end = set()

    def add(self, **values):
        for name, value in values.items():
            self.parts[name].append(value)

    def ragged(self, **values):
        """Values whose length differs per case, with ``<name>_n`` (their lengths) beside them."""
        for name, value in values.items():
            value = np.asarray(value)
            self.parts[name].append(value)
            self.parts[f"{name}_n"].append(len(value))
            self.end_to_end.add(name)

    def arrays(self) -> dict:
        return {name: np.concatenate(parts) if name in self.end_to_end else np.array(parts)
                for name, parts in self.parts.items()}  # fmt: skip


def metainfo(name: str) -> dict:
    return parse_pose_metainfo(dict(from_file=f"configs/_base_/datasets/{name}.py"))


def check_introsort():
    got = np.zeros(20).argsort().tolist()
    if got != INTROSORT_OF_20_EQUAL:
        raise SystemExit(f"numpy sorts ties with a SIMD sort here ({got[:5]}...); the goldens need its introsort")


# ------------------------------------------------------------------ argsort and OKS NMS


def adversary(n: int) -> np.ndarray:
    """McIlroy's quicksort adversary, played against numpy's own argsort: values that push its
    introsort past its depth limit, so that its heapsort finishes the job."""
    gas, frozen, candidate = n, [0], [None]
    value = [gas] * n

    class Item:
        __slots__ = ("i",)

        def __init__(self, i):
            self.i = i

        def __lt__(self, other):
            x, y = self.i, other.i
            if value[x] == gas and value[y] == gas:
                f = x if x == candidate[0] else y
                value[f] = frozen[0]
                frozen[0] += 1
            if value[x] == gas:
                candidate[0] = x
            elif value[y] == gas:
                candidate[0] = y
            return value[x] < value[y]

    items = np.empty(n, dtype=object)
    items[:] = [Item(i) for i in range(n)]
    np.argsort(items)
    for i in range(n):
        if value[i] == gas:
            value[i] = frozen[0]
            frozen[0] += 1
    return np.array(value, np.float64)


def sort_cases(rng, store: Store):
    families = []
    for n in list(range(1, 41)) + list(rng.integers(41, 200, 12)):
        for levels in (1, 2, 3, 5):
            families.append(("ties", rng.integers(0, levels, n) * 0.25))
    for n in rng.integers(2, 80, 50):  # a few distinct positives among many zeros, as scores are
        v = rng.random(n)
        v[rng.random(n) < rng.uniform(0.2, 0.95)] = 0.0
        families.append(("zeros", v))
    for n in rng.integers(2, 80, 20):
        v = rng.integers(0, 3, n) * 0.5
        v[rng.random(n) < 0.2] = np.nan
        v[rng.random(n) < 0.2] = -0.0
        families.append(("nan", v))
    for n in (64, 200, 500):
        for d in (1, 2, 3):
            families.append(("adversary", np.floor(adversary(n) / d)))
    for n in rng.integers(2, 100, 20):
        families.append(("float32", (rng.integers(0, 4, n) * 0.1).astype(np.float32)))
    for family, v in families:
        store.add(sort_family=family, sort_float32=v.dtype == np.float32)
        store.ragged(sort_values=v.astype(np.float64), sort_order=v.argsort().astype(np.int32))
    return len(families)


def pose(rng, k: int, size: float) -> np.ndarray:
    return rng.uniform(0, size, (k, 2))


def float32_threshold_pair(rng, thr: float, sigmas: np.ndarray, area: np.float32):
    """Two instances on which MMPose's float32 OKS and the float64 OKS fall on either side of ``thr``.

    Terms: some keypoints equal (1 each), a few at random distances, the others far off (0). The
    last distance is walked float32 by float32 around where the float64 OKS crosses ``thr``, for a
    step where the float32 OKS is at or below float32(thr) but the float64 one above (MMPose keeps
    the pair where float64 would suppress it) or, failing that, the other way round.
    """
    k = len(sigmas)
    few = int(rng.integers(1, 5))
    equal = int(np.floor(thr * k)) - few + 1
    if equal < 0 or equal + few > k:
        return None
    a = pose(rng, k, 200).astype(np.float32)
    b = a.copy()
    b[equal + few:, 1] += np.float32(1e4)
    shares = rng.dirichlet(np.ones(few)) * (thr * k - equal)
    if shares.max() >= 0.98:
        return None
    var = (2 * sigmas.astype(np.float64)) ** 2
    for j, t in zip(range(equal, equal + few - 1), shares):
        b[j, 1] += np.float32(np.sqrt(-np.log(t) * 2 * var[j] * float(area)))
    last = equal + few - 1

    def with_x(x):
        c = b.copy()
        c[last, 0] = x
        return c

    lo, hi = 0.0, 1e4  # bisect the float64 OKS in the last distance
    for _ in range(80):
        mid = (lo + hi) / 2
        above = oks_float64(a, with_x(np.float32(a[last, 0] + mid)), area, area, sigmas) > thr
        lo, hi = (mid, hi) if above else (lo, mid)
    x = np.float32(a[last, 0] + lo)
    for _ in range(8):
        x = np.nextafter(x, np.float32(-np.inf))
    found = {}
    for _ in range(16):
        c = with_x(x)
        kept32 = mmpose_oks(a, c[None], area, np.array([area], np.float32), sigmas)[0] <= np.float32(thr)
        kept64 = oks_float64(a, c, area, area, sigmas) <= thr
        if kept32 != kept64:
            found.setdefault(bool(kept32), np.stack([a, c]))
        x = np.nextafter(x, np.float32(np.inf))
    return found.get(True, found.get(False))


def mmpose_oks(a, others, area, other_areas, sigmas):
    from mmpose.evaluation.functional.nms import oks_iou

    g = np.concatenate([a, np.ones((len(a), 1), a.dtype)], 1).reshape(-1)
    d = np.concatenate([others, np.ones((*others.shape[:2], 1), a.dtype)], 2).reshape(len(others), -1)
    return oks_iou(g, d, area, other_areas, sigmas)


def oks_float64(a, b, area_a, area_b, sigmas) -> float:
    d2 = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).sum(-1)
    var = (2 * sigmas.astype(np.float64)) ** 2
    return float(np.exp(-d2 / var / ((float(area_a) + float(area_b)) / 2 + np.spacing(1)) / 2).mean())


def nms_case(rng, family: str, sigmas: np.ndarray):
    """-> keypoints (n, K, 2) float32, scores (n,) float64, areas (n,) float32, threshold."""
    k = len(sigmas)
    thr = 0.9 if rng.random() < 0.75 else float(rng.choice([0.3, 0.5, 0.7, 0.95, 1.0]))
    if family == "threshold_exact":  # 9 keypoints of 10 equal, one far: OKS 0.9 exactly, in float32 too
        a = pose(rng, k, 200).astype(np.float32)
        b = a.copy()
        b[-1] += np.float32(1e4)
        kpts = np.stack([a, b, a + np.float32(300)])
        return kpts, rng.choice([0.5, 0.8], 3), np.full(3, rng.uniform(100, 1e4), np.float32), 0.9
    if family == "threshold":
        thr = float(rng.choice([0.9, 0.9, 0.5, 0.7]))
        pair = None
        while pair is None:
            area = np.float32(rng.uniform(500, 40000))
            pair = float32_threshold_pair(rng, thr, sigmas, area)
        extra = rng.integers(0, 3)
        kpts = np.concatenate([pair, pair[:1] + rng.normal(0, 30, (extra, k, 2)).astype(np.float32)])
        scores = rng.permutation(np.linspace(0.9, 0.5, len(kpts)))
        scores = scores if rng.random() < 0.5 else np.full(len(kpts), 0.5)
        return kpts, scores, np.full(len(kpts), area, np.float32), thr
    fewest, most = {"crowd": (17, 64), "ties_large": (17, 40), "zeros": (2, 40)}.get(family, (2, 10))
    n = {"empty": 0, "single": 1}.get(family, int(rng.integers(fewest, most)))  # ties reorder from 17 on
    people = max(1, int(rng.integers(1, 5)))
    size = rng.uniform(5, 300, people)
    centers = [pose(rng, k, s) + rng.uniform(0, 600, 2) for s in size]
    who = rng.integers(0, people, n)
    jitter = rng.choice([0.0, 0.002, 0.01, 0.03, 0.1, 0.5], n)
    kpts = np.array([centers[p] + rng.normal(0, 1, (k, 2)) * jitter[i] * size[p] for i, p in enumerate(who)])
    kpts = kpts.reshape(n, k, 2)
    if family == "border":  # on and outside an image's border (keypoints are not clipped)
        edges = rng.choice([-50.0, -0.5, 0.0, 639.0, 640.0, 1e4], kpts.shape)
        kpts = np.where(rng.random(kpts.shape) < 0.3, edges, kpts)
    kpts = (np.round(kpts * 4) / 4).astype(np.float32)
    areas = np.array([(size[p] * rng.uniform(0.8, 1.6)) ** 2 for p in who], np.float32)
    if family == "areas":
        areas = rng.choice(np.array([0.0, 1e-6, 1.0, 16.0, 1e6, 3e7], np.float32), n)
    scores = np.round(rng.random(n), 6)
    if family in ("ties", "ties_large", "crowd"):
        scores = rng.choice([0.0, 0.0, 0.25, 0.5, 0.75], n)
    elif family == "zeros":
        scores = np.zeros(n)
    elif family == "equal":
        scores = np.full(n, 0.7)
    elif family == "duplicates":
        dup = rng.integers(0, n, n // 2)
        kpts[n // 2:][: len(dup)] = kpts[dup]
        scores = rng.choice([0.0, 0.5, 0.9], n)
    return kpts, scores, areas, thr


def nms_cases(rng, store: Store, sigmas_by_layout: dict):
    families = (["random"] * 60 + ["ties"] * 60 + ["ties_large"] * 25 + ["zeros"] * 15 + ["equal"] * 12
                + ["duplicates"] * 30 + ["border"] * 20 + ["areas"] * 20 + ["crowd"] * 6 + ["threshold"] * 40
                + ["threshold_exact"] * 8 + ["empty"] * 3 + ["single"] * 5)  # fmt: skip
    for family in families:
        layout = "coco" if rng.random() < 0.8 or family == "threshold" else str(rng.choice(["aic", "custom10"]))
        layout = "custom10" if family == "threshold_exact" else layout
        sigmas = sigmas_by_layout[layout]
        kpts, scores, areas, thr = nms_case(rng, family, sigmas)
        score_f32 = family == "zeros" and rng.random() < 0.5  # CocoMetric's score is a float32 0 when no keypoint counts
        db = [dict(score=np.float32(s) if score_f32 else np.float64(s),
                   keypoints=np.concatenate([kp, rng.random((len(kp), 1)).astype(np.float32)], 1), area=a)
              for kp, s, a in zip(kpts, scores, areas)]  # fmt: skip
        keep = oks_nms(db, thr, sigmas=sigmas)
        soft = soft_oks_nms(db, thr, sigmas=sigmas)
        store.add(nms_family=family, nms_layout=layout, nms_thr=thr, nms_k=len(sigmas), nms_score_f32=score_f32)
        store.ragged(nms_kpts=kpts.reshape(-1, 2), nms_scores=np.asarray(scores, np.float64), nms_areas=areas,
                     nms_keep=np.asarray(keep, np.int32), nms_soft_keep=np.asarray(soft, np.int32))  # fmt: skip
        if family.startswith("threshold"):
            store.add(nms_threshold_oks=mmpose_oks(kpts[0], kpts[1:2], areas[0], areas[1:2], sigmas)[0],
                      nms_threshold_oks64=oks_float64(kpts[0], kpts[1], areas[0], areas[1], sigmas))  # fmt: skip
    return len(families)


# ------------------------------------------------------------------ CocoMetric


def aspect_fixed_scale(wh: np.ndarray, ratio: float = 192 / 256) -> np.ndarray:
    w, h = wh * np.float32(1.25)
    return np.array([w, w / ratio] if w > h * ratio else [h * ratio, h], np.float32)


def metric_case(rng, k: int):
    """Random ground truth and results, with the edge cases: -> (gt json, predictions, settings)."""
    images, anns, preds = [], [], []
    image_ids = rng.choice(10**6, int(rng.integers(1, 4)), replace=False)
    if rng.random() < 0.2:
        image_ids[0] = 0
    next_ann = int(rng.choice([0, 1, 1000]))
    all_zero = rng.random() < 0.08  # every result's keypoint scores 0: xtcocotools drops them all
    for image_id in image_ids:
        width, height = (int(v) for v in rng.integers(32, 800, 2))
        images.append(dict(id=int(image_id), width=width, height=height))
        for _ in range(int(rng.integers(0, 4))):
            w, h = np.exp(rng.uniform(np.log(3), np.log(700), 2))
            x, y = rng.random() * width - 0.3 * w, rng.random() * height - 0.3 * h  # some partly outside
            xy = np.stack([x + rng.random(k) * w, y + rng.random(k) * h], 1)
            vis = rng.choice([0, 1, 2], k, p=[0.35, 0.15, 0.5]) * (rng.random() > 0.1)
            kp = np.concatenate([np.round(xy * 4) / 4 * (vis[:, None] > 0), vis[:, None]], 1).astype(np.float32)
            ann = dict(id=next_ann, image_id=int(image_id), category_id=1, keypoints=kp.reshape(-1).tolist(),
                       bbox=np.float32([x, y, w, h]).tolist(), area=float(np.float32(w * h * rng.uniform(0.2, 0.9))))  # fmt: skip
            next_ann += int(rng.integers(1, 3))
            count = int((vis > 0).sum())
            r = rng.random()
            if r < 0.8:
                ann["num_keypoints"] = count
            elif r < 0.9:  # wrong: xtcocotools counts the visibilities itself
                ann["num_keypoints"] = int(rng.integers(0, k + 1))
            if rng.random() < 0.92:
                ann["iscrowd"] = int(rng.random() < 0.06)
            anns.append(ann)
            for _ in range(int(rng.choice([0, 1, 1, 1, 2]))):
                preds.append(prediction(rng, image_id, xy, (x, y, w, h), k, all_zero))
        for _ in range(int(rng.integers(0, 3))):  # false positives anywhere on the image
            w, h = np.exp(rng.uniform(np.log(2), np.log(600), 2))
            x, y = rng.uniform(-w, width), rng.uniform(-h, height)
            xy = np.stack([x + rng.random(k) * w, y + rng.random(k) * h], 1)
            preds.append(prediction(rng, image_id, xy, (x, y, w, h), k, all_zero))
    if not preds:
        preds.append(prediction(rng, image_ids[0], rng.uniform(0, 50, (k, 2)), (0, 0, 50, 50), k, all_zero))
    order = rng.permutation(len(preds))
    preds = [preds[i] for i in order]
    for i, p in enumerate(preds):
        p["id"] = i if rng.random() > 0.05 or i == 0 else preds[int(rng.integers(0, i))]["id"]  # some duplicate ids
    nms = str(rng.choice(["oks_nms"] * 6 + ["soft_oks_nms"] * 2 + ["none"]))
    settings = dict(nms_mode=nms, nms_thr=0.9 if rng.random() < 0.7 else float(rng.choice([0.5, 0.7])),
                    keypoint_score_thr=0.2 if rng.random() < 0.7 else float(rng.choice([0.0, 0.5])),
                    score_mode=str(rng.choice(["bbox_keypoint"] * 6 + ["bbox", "keypoint"])))  # fmt: skip
    return dict(images=images, annotations=anns), preds, settings


def prediction(rng, image_id, xy, box, k, all_zero) -> dict:
    x, y, w, h = box
    noise = rng.choice([0.3, 1.0, 3.0, 10.0, 40.0]) * max(0.05, min(1.0, np.sqrt(w * h) / 100))
    kp = np.round((xy + rng.normal(0, noise, (k, 2))) * 8) / 8
    kind = rng.random()
    if all_zero or kind < 0.08:
        scores = np.zeros(k)
    elif kind < 0.15:  # none above the rescoring threshold: instance score 0
        scores = rng.choice([0.0, 0.1, 0.2], k)
    elif kind < 0.2:  # a heatmap maximum can be negative
        scores = rng.uniform(-0.3, 0.1, k)
    else:
        scores = np.round(rng.random(k) * 64) / 64
    jitter = rng.normal(0, 0.1, 4) * [w, h, w, h]
    xyxy = np.float32([x, y, x + w, y + h] + jitter)
    if rng.random() < 0.05:
        xyxy[2:] = xyxy[:2] + np.float32(rng.uniform(0.01, 1.0, 2))  # tiny box
    return dict(image_id=int(image_id), keypoints=kp.astype(np.float32), keypoint_scores=scores.astype(np.float32),
                bbox_score=np.float32(rng.choice([1.0, 0.5, 0.25, np.round(rng.random(), 3)])), xyxy=xyxy,
                scale=aspect_fixed_scale(np.abs(xyxy[2:] - xyxy[:2])))  # fmt: skip


def run_metric(gt: dict, preds: list[dict], settings: dict, meta: dict, categories: list):
    """MMPose's CocoMetric -> (ten stats, ids and scores of the results file in its order)."""
    written = {}
    original = CocoMetric.results2json

    def spy(self, keypoints, outfile_prefix):
        kept = [inst for insts in keypoints.values() for inst in insts]
        written.update(ids=[inst["id"] for inst in kept], scores=[float(inst["score"]) for inst in kept])
        return original(self, keypoints, outfile_prefix)

    with tempfile.TemporaryDirectory() as tmp:
        ann_file = Path(tmp) / "gt.json"
        ann_file.write_text(json.dumps({**gt, "categories": categories}))
        with contextlib.redirect_stdout(io.StringIO()):  # xtcocotools prints its progress
            metric = CocoMetric(ann_file=str(ann_file), outfile_prefix=f"{tmp}/results", **settings)
        metric.dataset_meta = meta
        for p in preds:
            metric.process([], [dict(id=p["id"], img_id=p["image_id"],
                pred_instances=dict(keypoints=p["keypoints"][None], keypoint_scores=p["keypoint_scores"][None],
                                    bboxes=p["xyxy"][None]),
                gt_instances=dict(bbox_scores=np.array([p["bbox_score"]]), bbox_scales=p["scale"][None]))])  # fmt: skip
        CocoMetric.results2json = spy
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                stats = list(metric.compute_metrics(metric.results).values())
        finally:
            CocoMetric.results2json = original
    return stats, written["ids"], written["scores"]


def metric_cases(rng, store: Store, metas: dict, n_cases: int):
    for c in range(n_cases):
        layout = "coco" if c % 8 else "aic"
        meta = metas[layout]
        k = meta["num_keypoints"]
        gt, preds, settings = metric_case(rng, k)
        names = list(meta["keypoint_id2name"].values())
        categories = [dict(id=1, name="person", supercategory="person", keypoints=names, skeleton=[])]
        stats, kept_ids, kept_scores = run_metric(gt, preds, settings, meta, categories)
        anns = gt["annotations"]
        store.add(m_layout=layout, m_nms=settings["nms_mode"], m_nms_thr=settings["nms_thr"],
                  m_kpt_thr=settings["keypoint_score_thr"], m_score_mode=settings["score_mode"],
                  m_stats=np.array(stats, np.float64))  # fmt: skip
        store.ragged(
            m_img_id=[i["id"] for i in gt["images"]], m_img_wh=[[i["width"], i["height"]] for i in gt["images"]],
            m_ann_id=np.array([a["id"] for a in anns], np.int64).reshape(-1),
            m_ann_image=np.array([a["image_id"] for a in anns], np.int64).reshape(-1),
            m_ann_kpts=np.array([a["keypoints"] for a in anns], np.float32).reshape(-1, 3),
            m_ann_bbox=np.array([a["bbox"] for a in anns], np.float32).reshape(-1, 4),
            m_ann_area=np.array([a["area"] for a in anns], np.float32).reshape(-1),
            m_ann_iscrowd=np.array([a.get("iscrowd", -1) for a in anns], np.int8).reshape(-1),  # -1: no field
            m_ann_num_kpts=np.array([a.get("num_keypoints", -1) for a in anns], np.int16).reshape(-1),
            m_pred_id=np.array([p["id"] for p in preds], np.int64),
            m_pred_image=np.array([p["image_id"] for p in preds], np.int64),
            m_pred_kpts=np.concatenate([p["keypoints"] for p in preds]),
            m_pred_kpt_scores=np.concatenate([p["keypoint_scores"] for p in preds]),
            m_pred_box_score=np.array([p["bbox_score"] for p in preds], np.float32),
            m_pred_xyxy=np.array([p["xyxy"] for p in preds], np.float32),
            m_pred_scale=np.array([p["scale"] for p in preds], np.float32),
            m_kept_id=np.array(kept_ids, np.int64), m_kept_score=np.array(kept_scores, np.float64),
        )  # fmt: skip
    return n_cases


# ------------------------------------------------------------------ MSRAHeatmap


def encode_cases(rng, store: Store, n_cases: int):
    for c in range(n_cases):
        w, h = [(12, 16), (16, 12), (9, 7), (48, 64)][rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])]
        sigma = 2.0 if c % 5 else 3.0
        k = int(rng.integers(1, 6))
        stride = 4
        kind = rng.random(k)
        kp = rng.uniform(-8, 4 * w + 8, (k, 2)) * [1, h / w]
        on_grid = kind < 0.2
        kp[on_grid] = rng.integers(-2, max(w, h) + 2, (on_grid.sum(), 2)) * stride
        edge = (kind >= 0.2) & (kind < 0.5)  # where int(x / 4 + 0.5) flips, and 3 sigma (the radius) off the map
        for axis, size in ((0, w), (1, h)):
            base = rng.choice([0, -3 * sigma - 1, size - 1, size + 3 * sigma], edge.sum())
            kp[edge, axis] = (base + rng.choice([-0.75, -0.5, -0.25, 0.25, 0.5, 0.75], edge.sum())) * stride
        far = kind > 0.95
        kp[far] = rng.choice([-1e3, 1e4], (far.sum(), 2))
        kp = kp.astype(np.float32)
        vis = rng.choice(np.float32([0, 0.3, 0.49, 0.5, 1, 1, 1, 2]), k)
        codec = MSRAHeatmap(input_size=(w * stride, h * stride), heatmap_size=(w, h), sigma=sigma)
        enc = codec.encode(kp[None], vis[None])
        store.add(enc_wh=(w, h), enc_sigma=sigma)
        store.ragged(enc_kpts=kp, enc_vis=vis, enc_heatmaps=enc["heatmaps"].reshape(-1),
                     enc_weights=enc["keypoint_weights"][0])
    return n_cases


QUANT = np.float32(2.0**-12)  # heatmaps are stored as int16 multiples of this (exact in float32)


def decode_heatmaps(rng, family: str, k: int, w: int, h: int) -> np.ndarray:
    """(K, H, W) int16 multiples of QUANT."""
    yy, xx = np.mgrid[0:h, 0:w]
    maps = []
    for _ in range(k):
        cx, cy = rng.uniform(-1, w), rng.uniform(-1, h)
        if family == "border":
            cx = rng.choice([0, 1, 2, w - 3, w - 2, w - 1]) + rng.uniform(-0.4, 0.4)
            cy = rng.choice([0, 1, 2, h - 3, h - 2, h - 1, cy]) + rng.uniform(-0.4, 0.4)
        peak = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rng.uniform(1.0, 3.0) ** 2)) * rng.uniform(0.05, 1.0)
        if family == "peaked":
            m = peak + rng.normal(0, 0.002, (h, w))
        elif family == "border":
            m = peak
        elif family == "noisy":
            m = peak * rng.uniform(0, 0.3) + rng.normal(0.05, rng.choice([0.01, 0.05]), (h, w))
        elif family == "flat":
            m = np.full((h, w), rng.choice([0.0, 0.008, 0.5, -0.01]))
            if rng.random() < 0.5:  # a plateau with ties, or a one-pixel step
                m[rng.integers(0, h), rng.integers(0, w)] += rng.choice([QUANT, 2 * QUANT])
        elif family == "negative":
            m = peak - rng.uniform(0.0, 1.2) + rng.normal(0, 0.003, (h, w))
        elif family == "tiny":
            m = np.zeros((h, w))
            m[rng.integers(0, h), rng.integers(0, w)] = rng.choice([QUANT, 0.3])
        maps.append(np.clip(np.round(m / QUANT), -32768, 32767).astype(np.int16))
    return np.array(maps)


def decode_cases(rng, store: Store, n_cases: int):
    families = ["peaked", "border", "noisy", "flat", "negative", "tiny"]
    for c in range(n_cases):
        family = families[c % len(families)]
        w, h = [(12, 16), (16, 12), (20, 12), (48, 64)][rng.choice(4, p=[0.4, 0.3, 0.25, 0.05])]
        k = 1 if (w, h) == (48, 64) else int(rng.integers(1, 3))
        q = decode_heatmaps(rng, family, k, w, h)
        heatmaps = q.astype(np.float32) * QUANT
        out = {}
        for name, unbiased in (("std", False), ("dark", True)):
            codec = MSRAHeatmap(input_size=(w * 4, h * 4), heatmap_size=(w, h), sigma=2, unbiased=unbiased, blur_kernel_size=11)
            kpts, scores = codec.decode(heatmaps)
            out[f"dec_{name}_kpts"], out[f"dec_{name}_scores"] = kpts[0].astype(np.float32), scores[0].astype(np.float32)
        store.add(dec_family=family, dec_wh=(w, h))
        store.ragged(dec_q=q.reshape(-1), **out)
    return n_cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    check_introsort()
    args.out.mkdir(parents=True, exist_ok=True)
    MMLogger.get_instance("goldens_eval", log_level="ERROR")
    metas = {name: metainfo(name) for name in ("coco", "aic")}
    sigmas = {name: m["sigmas"] for name, m in metas.items()}
    sigmas["custom10"] = np.full(10, 0.05, np.float32)  # 9 equal keypoints of 10 give OKS 0.9 exactly
    counts = {}

    nms = Store()
    counts["sort"] = sort_cases(np.random.default_rng([SEED, 1]), nms)
    counts["nms"] = nms_cases(np.random.default_rng([SEED, 2]), nms, sigmas)
    metric = Store()
    counts["metric"] = metric_cases(np.random.default_rng([SEED, 3]), metric, metas, 200)
    codec = Store()
    counts["encode"] = encode_cases(np.random.default_rng([SEED, 4]), codec, 300)
    counts["decode"] = decode_cases(np.random.default_rng([SEED, 5]), codec, 300)

    versions = dict(mmpose=mmpose.__version__, numpy=np.__version__, xtcocotools=version('xtcocotools'), seed=SEED,
                    numpy_sort="introsort (AVX-512 dispatch off)", cases=counts)  # fmt: skip
    extra = {"eval_nms": {f"sigmas_{k}": v for k, v in sigmas.items()}}
    for name, store in (("eval_nms", nms), ("eval_metric", metric), ("eval_codec", codec)):
        arrays = {**store.arrays(), **extra.get(name, {})}
        np.savez_compressed(args.out / f"{name}.npz", meta=json.dumps(versions), **arrays)
        print(f"{name}.npz: {(args.out / f'{name}.npz').stat().st_size / 1e3:.0f} kB")
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
