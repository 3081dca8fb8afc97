"""posecli eval against MMPose's CocoMetric on its own small checkpoints, and its parts on known values.

Tolerances: tests/data/reference/README.md §6 (metrics 1e-3, scores 1e-5, keypoints 1e-3 px
standard / 2e-3 px DARK where the heatmap has a real peak).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CKPT17, CKPT19, COCO_ANN, COCO_DET, COCO_IMAGES, REF
from typer.testing import CliRunner

from posecli import sample
from posecli.cli import app
from posecli.data.coco import gt_boxes, read_coco, read_detections
from posecli.engine.cocometric import (METRIC_NAMES, coco_keypoint_eval, coco_results, oks_nms, rescore,
                                       select_instances, soft_oks_nms)  # fmt: skip
from posecli.engine.evaluate import crop_batches, evaluate, fit_layout, predict_boxes
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.errors import UserError
from posecli.layouts import LAYOUTS

MODES = [("coco17", m) for m in ("det_flip", "gt_flip", "det_noflip", "gt_noflip", "det_darkflip", "gt_darkflip")]
MODES += [("cocoaic19", "det_flip"), ("cocoaic19", "gt_flip")]
CKPTS = {"coco17": CKPT17, "cocoaic19": CKPT19}
runner = CliRunner()


@pytest.fixture(scope="module")
def predictors():
    return {name: Predictor.from_weights(path) for name, path in CKPTS.items()}


_HEATMAPS: dict = {}


def _share_heatmaps(predictor: Predictor, key) -> None:
    """flip and darkflip decode the same heatmaps: compute them once per crop batch (saves test time)."""
    compute = predictor.heatmaps

    def heatmaps(crops):
        k = (key, hashlib.sha1(np.asarray(crops).tobytes()).hexdigest())
        if k not in _HEATMAPS:
            _HEATMAPS[k] = compute(crops)
        return _HEATMAPS[k]

    predictor.heatmaps = heatmaps


@pytest.mark.parametrize("model,mode", MODES)
def test_metrics_and_results_match_mmpose(tmp_path, model, mode):
    boxes, setting = mode.split("_")
    settings = InferenceSettings(flip=setting != "noflip", decode="dark" if setting == "darkflip" else "standard")
    predictor = Predictor.from_weights(CKPTS[model], settings)
    _share_heatmaps(predictor, (model, setting == "noflip"))
    result = evaluate(predictor, COCO_ANN, COCO_IMAGES, COCO_DET if boxes == "det" else None, workers=0, out_dir=tmp_path)
    expected = list(json.loads((REF / "eval" / model / f"metrics_{mode}.json").read_text()).values())
    np.testing.assert_allclose([result.metrics[n] for n in METRIC_NAMES], expected, atol=1e-3)

    ours = json.loads(result.results_path.read_text())
    ref = json.loads((REF / "eval" / model / f"results_{mode}.keypoints.json").read_text())
    assert len(ours) == len(ref) == result.num_results
    # Same images, boxes and scores in NMS keep order, instances tied at score 0 included (numpy's
    # introsort order, as MMPose made these); keypoints are then compared pair by pair.
    assert [(r["image_id"], r["bbox"]) for r in ours] == [(r["image_id"], r["bbox"]) for r in ref]
    np.testing.assert_allclose([r["score"] for r in ours], [r["score"] for r in ref], atol=1e-5)
    by_box = {(r["image_id"], *np.float32(r["bbox"]).tolist()): r for r in ref}
    pairs = [(r, by_box[(r["image_id"], *np.float32(r["bbox"]).tolist())]) for r in ours]
    k_ours = np.array([a["keypoints"] for a, _ in pairs]).reshape(len(pairs), 17, 3)
    k_ref = np.array([b["keypoints"] for _, b in pairs]).reshape(len(pairs), 17, 3)
    np.testing.assert_allclose(k_ours[..., 2], k_ref[..., 2], atol=1e-5)
    np.testing.assert_allclose([a["score"] for a, _ in pairs], [b["score"] for _, b in pairs], atol=1e-5)
    peaked = k_ref[..., 2] > 0.05  # flat maps (the 17-kpt ankles, ~0.008) have an arbitrary arg-max
    np.testing.assert_allclose(k_ours[..., :2][peaked], k_ref[..., :2][peaked], atol=2e-3 if "dark" in mode else 1e-3)
    assert json.loads((tmp_path / "metrics.json").read_text())["metrics"] == result.metrics
    if importlib.util.find_spec("matplotlib"):  # the per-keypoint chart beside metrics.json (the plot extra)
        assert (tmp_path / "keypoints.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rescore_uses_keypoints_strictly_above_threshold():
    kpt = np.array([[0.25, 0.75, 0.5, 1.0], [0.5, 0.1, 0.0, 0.5]], np.float32)
    scores = rescore(np.array([0.5, 0.9], np.float32), kpt, 0.5)
    assert scores.tolist() == [0.5 * (0.75 + 1.0) / 2, 0.0]
    # compared in float64, as MMPose: float32(0.2) = 0.2000000030 is above 0.2
    assert rescore(np.ones(1), np.float32([[0.2, 0.1]]), 0.2)[0] == np.float64(np.float32(0.2))


def _instances():
    sigmas = np.array(LAYOUTS["coco"].sigmas, np.float32)
    base = np.random.default_rng(0).uniform(0, 100, (17, 2)).astype(np.float32)
    kpts = np.stack([base, base + 0.5, base + 300])  # 0 and 1 overlap (OKS ~1), 2 is far away
    return kpts, np.array([100.0 * 100] * 3, np.float32), sigmas


def test_oks_nms_drops_the_weaker_of_two_overlapping_instances():
    kpts, areas, sigmas = _instances()
    assert oks_nms(kpts, np.array([0.5, 0.9, 0.1]), areas, sigmas, 0.9) == [1, 2]
    assert oks_nms(kpts, np.array([0.0, 0.0, 0.0]), areas, sigmas, 0.9) == [2, 1]  # ties: MMPose's argsort()[::-1]
    assert oks_nms(kpts, np.array([0.5, 0.9, 0.1]), areas, sigmas, 1.0) == [1, 0, 2]  # nothing above 1


def test_soft_oks_nms_keeps_all_reorders_and_caps():
    kpts, areas, sigmas = _instances()
    # 0 is decayed below 2 by its overlap with 1; nothing is dropped
    assert soft_oks_nms(kpts, np.array([0.5, 0.9, 0.4]), areas, sigmas, 0.9) == [1, 2, 0]
    assert soft_oks_nms(kpts, np.array([0.5, 0.9, 0.4]), areas, sigmas, 0.9, max_dets=2) == [1, 2]


def test_select_instances_goes_image_by_image_and_drops_duplicate_ids():
    kpts, _, sigmas = _instances()
    kpts = np.concatenate([kpts, kpts])
    image_ids = np.array([7, 7, 7, 3, 3, 7])
    ids = np.array([5, 4, 6, 1, 2, 4])  # id 4 twice in image 7
    scores = np.array([0.2, 0.3, 0.1, 0.9, 0.8, 0.35])
    areas = np.full(6, 1e4, np.float32)
    # image 7 first; its instances sorted by id (1 before 5: id 4 then 5), the duplicate id 4 dropped
    pick = select_instances(image_ids, ids, kpts, scores, areas, sigmas, "none")
    assert pick.tolist() == [1, 0, 2, 3, 4]
    # with OKS NMS, 1 (keypoints 0.5 px from 0's, higher score) suppresses 0, and 3 suppresses 4 likewise
    assert select_instances(image_ids, ids, kpts, scores, areas, sigmas, "oks", 0.9).tolist() == [1, 2, 3]


def test_ground_truth_keypoints_score_ap_one_and_every_joint_within_tolerance(tmp_path):
    coco = read_coco(COCO_ANN)
    anns = [a for a in coco.data["annotations"] if a["num_keypoints"] > 0]
    kpts = np.array([a["keypoints"] for a in anns], np.float32).reshape(len(anns), 17, 3)
    xyxy = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
    results = coco_results([a["image_id"] for a in anns], kpts[..., :2], np.ones((len(anns), 17)), np.ones(len(anns)), xyxy)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(results))
    metrics, joints = coco_keypoint_eval(coco.data, path, coco.layout.sigmas, coco.layout.keypoints)
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AR"] == pytest.approx(1.0)
    assert all(j.within == 1.0 for j in joints)
    assert [j.labelled for j in joints][0] == int((kpts[:, 0, 2] > 0).sum())


def test_gt_boxes_drop_keypointless_and_clip_to_the_image(tmp_path):
    boxes = gt_boxes(read_coco(COCO_ANN))
    assert len(boxes) == 12  # 14 annotations, 2 without keypoints
    data = json.loads(COCO_ANN.read_text())
    data["annotations"][0]["bbox"] = [-10.0, 5.0, 1000.0, 20.5]  # image 785 is 640 x 425
    data["annotations"][1]["iscrowd"] = 1
    (tmp_path / "a.json").write_text(json.dumps(data))
    boxes = gt_boxes(read_coco(tmp_path / "a.json"))
    assert len(boxes) == 11
    np.testing.assert_array_equal(boxes.xyxy[0], np.float32([0, 5, 639, 25.5]))
    assert boxes.scores.tolist() == [1.0] * 11


def test_detections_are_float32_xywh_then_x2_and_bad_boxes_warn(tmp_path):
    coco = read_coco(COCO_ANN)
    dets = json.loads(COCO_DET.read_text())[:6]
    dets[1]["category_id"] = 2  # not a person: dropped silently
    dets[2]["bbox"][2] = 0.0  # no width
    dets[3]["bbox"][0] = float("nan")
    (tmp_path / "d.json").write_text(json.dumps(dets))
    boxes = read_detections(tmp_path / "d.json", coco)
    assert len(boxes) == 3 and "skipped 2" in boxes.warnings[0]
    x, y, w, h = np.float32(dets[0]["bbox"])
    np.testing.assert_array_equal(boxes.xyxy[0], [x, y, x + w, y + h])
    assert len(read_detections(COCO_DET, coco, min_score=0.5)) == sum(d["score"] >= 0.5 for d in json.loads(COCO_DET.read_text()))


@pytest.mark.parametrize("content,message", [
    ({"image_id": 785}, "a JSON list"),
    ([{"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 1.0}], "not in"),
    ([{"image_id": 785, "bbox": [0, 0, 5, 5]}], "not a detection"),
    ([], "no person detections"),
])  # fmt: skip
def test_bad_detection_files_are_user_errors(tmp_path, content, message):
    (tmp_path / "d.json").write_text(json.dumps(content))
    with pytest.raises(UserError, match=message):
        read_detections(tmp_path / "d.json", read_coco(COCO_ANN))


def test_layout_fit_keeps_coco_outputs_of_a_combine_model_and_rejects_a_mismatch(predictors):
    assert fit_layout(predictors["cocoaic19"], LAYOUTS["coco"]).num_keypoints == 17
    assert fit_layout(predictors["coco17"], LAYOUTS["coco"]) is predictors["coco17"]
    with pytest.raises(UserError, match="'aic'"):
        fit_layout(predictors["coco17"], LAYOUTS["aic"])


def test_crop_batches_group_images_by_crop_count():
    assert crop_batches([3, 4, 2, 40, 1], 8) == [[0, 1], [2], [3], [4]]


def test_network_calls_are_full_batches_across_images_but_the_last(predictors):
    coco = read_coco(COCO_ANN)
    boxes = read_detections(COCO_DET, coco)  # 118 boxes on 4 images of 22 to 37 boxes
    predictor = predictors["coco17"]
    sizes, heatmaps = [], predictor.heatmaps
    predictor.heatmaps = lambda crops: sizes.append(len(crops)) or heatmaps(crops)
    try:
        index, keypoints, _ = predict_boxes(predictor, coco, COCO_IMAGES, boxes, 32, 0)
    finally:
        del predictor.heatmaps
    assert sizes == [32, 32, 32, 22]
    assert sorted(index.tolist()) == list(range(118))
    one_by_one = [predictor.predict_image(cv2.imread(str(COCO_IMAGES / coco.images[int(boxes.image_ids[b])]["file_name"])),
                                          boxes.xyxy[b : b + 1])[0][0] for b in index[::20]]  # fmt: skip
    np.testing.assert_allclose(keypoints[::20], one_by_one, atol=1e-3)


def test_image_shards_cover_every_box_once(predictors):
    coco = read_coco(COCO_ANN)
    boxes = gt_boxes(coco)
    whole = predict_boxes(predictors["coco17"], coco, COCO_IMAGES, boxes, 8, 0)
    parts = [predict_boxes(predictors["coco17"], coco, COCO_IMAGES, boxes, 8, 0, (r, 2)) for r in range(2)]
    index = np.concatenate([p[0] for p in parts])
    assert sorted(index.tolist()) == list(range(len(boxes)))
    keypoints = np.concatenate([p[1] for p in parts])[np.argsort(index)]
    np.testing.assert_allclose(keypoints, whole[1][np.argsort(whole[0])], atol=1e-3)


def _copy_sample(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    shutil.copytree(COCO_IMAGES, images, ignore=shutil.ignore_patterns("*.json"))
    return images


def test_cli_eval_on_the_sample_writes_results_and_metrics(tmp_path):
    dets = json.loads(COCO_DET.read_text())[::6]  # a few boxes of every image keep the test short
    (tmp_path / "det.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    res = runner.invoke(app, ["eval", "-w", str(CKPT17), "--sample", "--boxes", str(tmp_path / "det.json"), "--workers", "1",
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "AP75" in res.stdout and "left_ankle" in res.stdout
    results = json.loads((out / "results.keypoints.json").read_text())
    assert 0 < len(results) <= len(dets) and len(results[0]["keypoints"]) == 17 * 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) == set(METRIC_NAMES) and metrics["num_boxes"] == len(dets)


def test_cli_preset_reads_val_data_under_data_root_and_shows_published(tmp_path):
    root = tmp_path / "root"
    (root / "coco" / "annotations").mkdir(parents=True)
    (root / "coco" / "person_detection_results").mkdir()
    shutil.copy(COCO_ANN, root / "coco/annotations/person_keypoints_val2017.json")
    shutil.copytree(COCO_IMAGES, root / "coco/val2017", ignore=shutil.ignore_patterns("*.json"))
    dets = [d for d in json.loads(COCO_DET.read_text()) if d["score"] > 0.9]
    (root / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json").write_text(json.dumps(dets))
    res = runner.invoke(app, ["eval", "-w", str(CKPT17), "--preset", "coco", "--data-root", str(root), "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert "published" in res.stdout and "0.749" in res.stdout
    assert f"{len(dets)} boxes" in res.stdout


def test_cli_bad_detection_file_exits_1_with_a_message(tmp_path):
    (tmp_path / "det.json").write_text(json.dumps({"not": "a list"}))
    res = runner.invoke(app, ["eval", "-w", str(CKPT17), "--ann", str(COCO_ANN), "--images", str(COCO_IMAGES),
                              "--boxes", str(tmp_path / "det.json"), "--workers", "0"])  # fmt: skip
    assert res.exit_code == 1
    assert "a JSON list" in res.output and "Traceback" not in res.output


def test_cli_missing_image_exits_1_with_a_message(tmp_path):
    images = _copy_sample(tmp_path)
    (images / "000000040083.jpg").unlink()
    res = runner.invoke(app, ["eval", "-w", str(CKPT17), "--ann", str(COCO_ANN), "--images", str(images), "--workers", "0"])
    assert res.exit_code == 1
    assert "000000040083.jpg" in res.output.replace("\n", "") and "Traceback" not in res.output


def test_unreadable_image_is_a_user_error(tmp_path, predictors):
    images = _copy_sample(tmp_path)
    (images / "000000196141.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="000000196141.jpg: cannot be read"):
        evaluate(predictors["coco17"], COCO_ANN, images, workers=1)


def test_torchrun_two_processes_give_mmposes_metrics(tmp_path):
    """Images sharded over 2 gloo ranks, keypoints gathered on rank 0: the same ten numbers as MMPose."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "posecli", "eval", "-w", str(CKPT17), "--ann", str(COCO_ANN), "--images", str(COCO_IMAGES),
           "--boxes", str(COCO_DET), "--no-flip", "--workers", "0", "--out", str(tmp_path)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          cwd=tmp_path)  # the installed posecli, not a checkout in the working folder  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    expected = list(json.loads((REF / "eval" / "coco17" / "metrics_det_noflip.json").read_text()).values())
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], expected, atol=1e-3)
    assert done.stdout.count("COCO keypoint AP") == 1  # only rank 0 reports


def test_annotation_layout_from_mmposes_aic_spelling_and_unknown_names_are_a_user_error(tmp_path):
    assert read_coco(sample.AIC_ANN).layout.name == "aic"  # its categories say "Right Shoulder", "Head top"
    data = json.loads(COCO_ANN.read_text())
    data["categories"][0]["keypoints"] = ["a", "b", "c"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(UserError, match="not a known layout"):
        read_coco(bad)
