"""posecli against MMPose 1.3.2 itself on seeded random cases: argsort ties, OKS NMS, the COCO metric, the codec.

The goldens (tests/data/mmpose_goldens/eval_*.npz, see the README there) hold MMPose's inputs
and outputs; each test replays one area through posecli's own function. Tolerances (issue 12):
kept indices and their order exact, metrics 1e-6, heatmaps 1e-5, keypoints 1e-3 px.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DATA

from posecli.choices import ScoreMode
from posecli.codec import HeatmapCodec
from posecli.engine.cocometric import (coco_keypoint_eval, coco_results, introsort_argsort, oks_nms, oks_one_to_many,
                                       rescore, select_instances, soft_oks_nms)  # fmt: skip
from posecli.layouts import LAYOUTS

GOLDENS = DATA / "mmpose_goldens"
NMS_MODES = {"oks_nms": "oks", "soft_oks_nms": "soft_oks", "none": "none"}  # MMPose's names -> posecli's


def _load(name: str) -> dict:
    with np.load(GOLDENS / f"eval_{name}.npz", allow_pickle=False) as f:
        return dict(f)


def _split(data: dict, name: str) -> list[np.ndarray]:
    """A ragged golden array, one piece per case."""
    return np.split(data[name], np.cumsum(data[f"{name}_n"])[:-1])


def _mismatches(bad: list, total: int) -> str:
    return f"{len(bad)} of {total} cases differ from MMPose, first: {bad[:5]}"


@pytest.fixture(scope="module")
def nms():
    return _load("nms")


def test_goldens_are_small_and_name_their_source(nms):
    sizes = [(GOLDENS / f"eval_{n}.npz").stat().st_size for n in ("nms", "metric", "codec")]
    assert sum(sizes) < 600_000  # the eval area's share of the repository
    meta = json.loads(str(nms["meta"]))
    assert meta["mmpose"] == "1.3.2" and meta["numpy_sort"].startswith("introsort")


def test_layout_sigmas_are_mmposes_float32_sigmas(nms):
    for name in ("coco", "aic"):
        np.testing.assert_array_equal(np.asarray(LAYOUTS[name].sigmas, np.float32), nms[f"sigmas_{name}"])


def test_argsort_orders_ties_as_numpys_introsort(nms):
    values, orders = _split(nms, "sort_values"), _split(nms, "sort_order")
    bad = []
    for i, (v, order, f32) in enumerate(zip(values, orders, nms["sort_float32"])):
        if not np.array_equal(introsort_argsort(v.astype(np.float32) if f32 else v), order):
            bad.append((i, str(nms["sort_family"][i]), len(v)))
    assert len(values) >= 300 and not bad, _mismatches(bad, len(values))
    assert {"ties", "zeros", "nan", "adversary", "float32"} <= set(nms["sort_family"].tolist())


def _nms_cases(nms):
    kpts, scores, areas = _split(nms, "nms_kpts"), _split(nms, "nms_scores"), _split(nms, "nms_areas")
    for i, (k, s, a) in enumerate(zip(kpts, scores, areas)):
        layout = str(nms["nms_layout"][i])
        yield i, k.reshape(len(s), int(nms["nms_k"][i]), 2), s, a, nms[f"sigmas_{layout}"], float(nms["nms_thr"][i])


@pytest.mark.parametrize("soft", [False, True], ids=["oks_nms", "soft_oks_nms"])
def test_nms_keeps_mmposes_instances_in_mmposes_order(nms, soft):
    expected = _split(nms, "nms_soft_keep" if soft else "nms_keep")
    bad = []
    for (i, kpts, scores, areas, sigmas, thr), keep in zip(_nms_cases(nms), expected):
        got = soft_oks_nms(kpts, scores, areas, sigmas, thr) if soft else oks_nms(kpts, scores, areas, sigmas, thr)
        if got != keep.tolist():
            bad.append((i, str(nms["nms_family"][i]), got[:6], keep[:6].tolist()))
    assert len(expected) >= 300 and not bad, _mismatches(bad, len(expected))


def test_oks_at_the_threshold_is_mmposes_float32_oks(nms):
    """Pairs whose float32 OKS (MMPose's) and float64 OKS fall on either side of the threshold, and OKS 0.9 exactly."""
    cases = [c for c in _nms_cases(nms) if nms["nms_family"][c[0]].startswith("threshold")]
    kept_by_float32 = 0
    expected = zip(nms["nms_threshold_oks"], nms["nms_threshold_oks64"])
    for (i, kpts, scores, areas, sigmas, thr), (oks32, oks64) in zip(cases, expected):
        assert oks_one_to_many(kpts[0], kpts[1:2], areas[0], areas[1:2], sigmas)[0] == oks32
        kept32 = oks32 <= np.float32(thr)
        if nms["nms_family"][i] == "threshold":
            assert kept32 != (oks64 <= thr)  # the edge the case was made for
            kept_by_float32 += kept32
        else:
            assert oks32 == np.float32(0.9) and oks64 == 0.9
        assert ({0, 1} <= set(oks_nms(kpts, scores, areas, sigmas, thr))) == kept32
    assert len(cases) >= 40 and kept_by_float32 >= 10  # the case: MMPose keeps what float64 would suppress


def _ground_truth(m: dict, c: int, layout) -> dict:
    images = [{"id": int(i), "width": int(w), "height": int(h)} for i, (w, h) in zip(m["m_img_id"][c], m["m_img_wh"][c])]
    anns = []
    keypoints = m["m_ann_kpts"][c].reshape(-1, len(layout.keypoints) * 3)
    for j in range(len(m["m_ann_id"][c])):
        ann = {"id": int(m["m_ann_id"][c][j]), "image_id": int(m["m_ann_image"][c][j]), "category_id": 1,
               "keypoints": keypoints[j].tolist(), "bbox": m["m_ann_bbox"][c][j].tolist(),
               "area": float(m["m_ann_area"][c][j])}  # fmt: skip
        for field, key in (("iscrowd", "m_ann_iscrowd"), ("num_keypoints", "m_ann_num_kpts")):
            if m[key][c][j] != -1:  # -1: the golden's annotation has no such field
                ann[field] = int(m[key][c][j])
        anns.append(ann)
    categories = [{"id": 1, "name": "person", "keypoints": list(layout.keypoints), "skeleton": []}]
    return {"images": images, "annotations": anns, "categories": categories}


def test_coco_metric_equals_mmposes_cocometric(tmp_path):
    """Rescoring (each score_mode), per-image NMS, results file and COCOeval (xtcocotools' rules) on random data."""
    data = _load("metric")
    ragged = [k[:-2] for k in data if k.endswith("_n")]
    m = {k: _split(data, k) for k in ragged}
    bad, n_cases, dropped_all = [], len(data["m_stats"]), 0
    for c in range(n_cases):
        layout = LAYOUTS[str(data["m_layout"][c])]
        k = len(layout.keypoints)
        ids, image_ids = m["m_pred_id"][c], m["m_pred_image"][c]
        kpts, kpt_scores = m["m_pred_kpts"][c].reshape(len(ids), k, 2), m["m_pred_kpt_scores"][c].reshape(len(ids), k)
        scale = m["m_pred_scale"][c]
        mode = ScoreMode(str(data["m_score_mode"][c]))
        scores = rescore(m["m_pred_box_score"][c], kpt_scores, float(data["m_kpt_thr"][c]), mode)
        sigmas = np.asarray(layout.sigmas, np.float32)
        pick = select_instances(image_ids, ids, kpts, scores, scale[:, 0] * scale[:, 1], sigmas,
                                NMS_MODES[str(data["m_nms"][c])], float(data["m_nms_thr"][c]))  # fmt: skip
        results = coco_results(image_ids[pick], kpts[pick], kpt_scores[pick], scores[pick], m["m_pred_xyxy"][c][pick])
        path = tmp_path / f"{c}.json"
        path.write_text(json.dumps(results))
        metrics, _ = coco_keypoint_eval(_ground_truth(m, c, layout), path, layout.sigmas, layout.keypoints)
        stats = np.array(list(metrics.values()))
        dropped_all += not (kpt_scores[pick] > 0).any()
        if ids[pick].tolist() != m["m_kept_id"][c].tolist() or scores[pick].tolist() != m["m_kept_score"][c].tolist():
            bad.append((c, "kept instances", ids[pick][:6].tolist(), m["m_kept_id"][c][:6].tolist()))
        elif not np.allclose(stats, data["m_stats"][c], rtol=0, atol=1e-6):
            bad.append((c, "stats", stats.round(4).tolist(), data["m_stats"][c].round(4).tolist()))
    assert n_cases >= 200 and not bad, _mismatches(bad, n_cases)
    assert dropped_all >= 5  # cases where xtcocotools drops every result (all keypoint scores <= 0)


@pytest.fixture(scope="module")
def codec():
    return _load("codec")


def test_msra_encode_equals_mmposes(codec):
    kpts, vis, maps, weights = (_split(codec, n) for n in ("enc_kpts", "enc_vis", "enc_heatmaps", "enc_weights"))
    bad = []
    for i, ((w, h), sigma) in enumerate(zip(codec["enc_wh"], codec["enc_sigma"])):
        got, got_w = HeatmapCodec((4 * w, 4 * h), (w, h), float(sigma)).encode(kpts[i], vis[i])
        if not (np.allclose(got.reshape(-1), maps[i], rtol=0, atol=1e-5) and np.array_equal(got_w, weights[i])):
            bad.append(i)
    assert len(kpts) >= 300 and not bad, _mismatches(bad, len(kpts))


@pytest.mark.parametrize("decoder", ["std", "dark"])
def test_msra_decode_equals_mmposes(codec, decoder):
    q, kpts, scores = _split(codec, "dec_q"), _split(codec, f"dec_{decoder}_kpts"), _split(codec, f"dec_{decoder}_scores")
    bad = []
    for i, (w, h) in enumerate(codec["dec_wh"]):
        heatmaps = q[i].astype(np.float32).reshape(-1, h, w) * np.float32(2.0**-12)  # the golden's exact values
        got, got_scores = HeatmapCodec((4 * w, 4 * h), (w, h), dark=decoder == "dark").decode(heatmaps)
        if not (np.allclose(got, kpts[i], rtol=0, atol=1e-3) and np.allclose(got_scores, scores[i], rtol=0, atol=1e-5)):
            bad.append((i, str(codec["dec_family"][i]), float(np.abs(got - kpts[i]).max())))
    assert len(q) >= 300 and not bad, _mismatches(bad, len(q))
