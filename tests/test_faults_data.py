"""Faults of data, run as a user runs the CLI: bad records in annotation, detection and raw AIC files,
bad image files, and predict's faults. Each case checks the exit status, that no traceback is printed,
the key words of the message and that nothing partial is written.

Policy (posecli/data/records.py, posecli/data/images.py): bad ground truth is refused, naming the
file and the record, before any work; bad detector boxes are skipped with one counted warning;
bad images stop train and eval before the work starts (or are left out with --skip-bad-images),
and predict skips them with a warning; all three use the same check.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import said, cli, CKPT17, COCO_ANN, COCO_DET, COCO_IMAGES, DATA, SAMPLE
from posecli.cli import common
from posecli.data import dataset as dataset_module
from posecli.data.images import image_problem

COCO = json.loads(COCO_ANN.read_text())
DETS = json.loads(COCO_DET.read_text())
AIC_RAW = DATA / "aic_raw" / "aic_raw_3.json"
AIC_IMAGES = SAMPLE / "aic"
TRUNCATED = "truncated: no end-of-image marker (FF D9) at the end of the JPEG"
# A small model on 64x96 crops, one epoch of 3 steps: seconds a run (as tests/test_train.py).
TINY_TRAIN = ["--epochs", "1", "--batch-size", "8", "--workers", "0"] + [a for kv in [
    "model.arch=hrnet-small", "model.input_size=[64,96]", "model.heatmap_size=[16,24]", "test.batch_size=64",
    "augment.rotate_prob=0", "augment.half_body_prob=0",
] for a in ("--set", kv)]  # fmt: skip


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    """Messages unwrapped, so that paths and phrases can be matched whole."""
    monkeypatch.setattr(common.console, "width", 2000)
    monkeypatch.setattr(common.out, "width", 2000)


def failed(result, *words: str) -> str:
    """Exit 1 with one clear message holding ``words``; no traceback. -> the message."""
    text = said(result)
    assert result.exit_code == 1, text
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), text
    for word in words:
        assert word in text, f"{word!r} not in: {text}"
    return text


def succeeded(result, *words: str) -> str:
    text = said(result)
    assert result.exit_code == 0, text
    assert "Traceback" not in result.output
    for word in words:
        assert word in text, f"{word!r} not in: {text}"
    return text


def strict_json(path: Path):
    """Parse as a strict JSON reader does: NaN and Infinity are not JSON."""

    def refuse(constant):
        raise AssertionError(f"{path} holds {constant}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def write(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))  # json writes NaN / Infinity as a user's tool would
    return path


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # libjpeg decodes this without an error: the lower half grey


def images_copy(tmp_path: Path, name: str = "images") -> Path:
    folder = tmp_path / name
    shutil.copytree(COCO_IMAGES, folder, ignore=shutil.ignore_patterns("*.json"))
    return folder


# --- bad ground truth: refused before anything runs, naming the file and the record -------------

PERSON = 2  # annotations[2]: id 230195 on image 40083, 15 labelled keypoints


def _set(key, index, value):
    def change(ann):
        ann[key][index] = value

    return change


GROUND_TRUTH = {
    "NaN keypoint": (_set("keypoints", 0, float("nan")), "keypoints[0] is NaN"),
    "infinite keypoint": (_set("keypoints", 4, float("inf")), "keypoints[4] is Infinity"),
    "keypoint count": (lambda ann: ann["keypoints"].pop(), "keypoints is a list of 50 values, expected 51"),
    "string keypoint": (_set("keypoints", 1, "12"), 'keypoints[1] is a string ("12")'),
    "null keypoint": (_set("keypoints", 1, None), "keypoints[1] is null"),
    "nested keypoint": (_set("keypoints", 1, [1, 2]), "keypoints[1] is a list ([1, 2])"),
    "visibility 3": (_set("keypoints", 2, 3), "visibility 3 at keypoint nose"),
    "NaN bbox": (_set("bbox", 1, float("nan")), "bbox[1] is NaN"),
    "negative box": (_set("bbox", 2, -5.0), "negative width or height"),
    "bbox of 3": (lambda ann: ann["bbox"].pop(), "bbox is a list of 3 values"),
    "NaN area": (lambda ann: ann.update(area=float("nan")), "area is NaN"),
}


@pytest.mark.parametrize("case", GROUND_TRUTH)
def test_eval_refuses_bad_ground_truth_before_the_model_runs(tmp_path, case):
    change, detail = GROUND_TRUTH[case]
    data = copy.deepcopy(COCO)
    change(data["annotations"][PERSON])
    ann = write(tmp_path / "gt.json", data)
    result = cli("eval", "-w", CKPT17, "--ann", ann, "--images", COCO_IMAGES, "--workers", "0", "--out", tmp_path / "out")
    failed(result, f"{ann}: annotation 230195 (image 40083): ", detail, "fix or remove the record")
    assert files_in(tmp_path / "out") == []


def test_eval_refuses_duplicate_or_mistyped_ids_and_bad_image_sizes(tmp_path):
    data = copy.deepcopy(COCO)
    data["annotations"][5]["id"] = data["annotations"][4]["id"]  # COCOeval would keep only one of them
    failed(cli("eval", "-w", CKPT17, "--ann", write(tmp_path / "a.json", data), "--images", COCO_IMAGES),
           "annotation id 460541 is used twice")  # fmt: skip
    data = copy.deepcopy(COCO)
    data["annotations"][5]["image_id"] = [196141]
    failed(cli("eval", "-w", CKPT17, "--ann", write(tmp_path / "b.json", data), "--images", COCO_IMAGES),
           "annotations[5] image_id is a list ([196141]), expected an integer")  # fmt: skip
    data = copy.deepcopy(COCO)
    data["images"][1]["width"] = 0
    failed(cli("eval", "-w", CKPT17, "--ann", write(tmp_path / "c.json", data), "--images", COCO_IMAGES),
           "images[1] width is 0, expected a number > 0")  # fmt: skip


def test_train_refuses_bad_ground_truth_before_epoch_1(tmp_path):
    root = _train_root(tmp_path)
    data = copy.deepcopy(COCO)
    data["annotations"][PERSON]["keypoints"][3] = float("nan")
    write(root / "coco/annotations/person_keypoints_train2017.json", data)
    result = cli("train", "--preset", "coco", "--data-root", root, "--out", tmp_path / "run", *TINY_TRAIN)
    failed(result, "person_keypoints_train2017.json: annotation 230195 (image 40083): keypoints[3] is NaN")
    assert not (tmp_path / "run" / "last.safetensors").exists()


def test_ground_truth_without_area_or_iscrowd_is_evaluated_as_xtcocotools_does(tmp_path):
    """MMPose's AIC files have no 'area': xtcocotools then scales OKS by 0.53 x the box area; COCOeval needs iscrowd."""
    data = copy.deepcopy(COCO)
    keep = {785}
    data["images"] = [i for i in data["images"] if i["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    for a in data["annotations"]:
        del a["area"], a["iscrowd"], a["num_keypoints"]
    result = cli("eval", "-w", CKPT17, "--ann", write(tmp_path / "gt.json", data), "--images", COCO_IMAGES, "--workers", "0",
                 "--no-flip", "--out", tmp_path / "out")  # fmt: skip
    succeeded(result, "AP")
    assert 0 < strict_json(tmp_path / "out" / "metrics.json")["metrics"]["AP"] <= 1


# --- bad detector boxes: skipped, one counted warning ------------------------------------------


def test_eval_skips_bad_detector_boxes_with_one_counted_warning(tmp_path):
    dets = copy.deepcopy(DETS[::12])  # 10 boxes over the 4 images keep the run short
    dets[0]["bbox"][0] = float("nan")
    dets[1]["bbox"][2] = "40"
    dets[2]["bbox"][3] = 0.0
    dets[3]["bbox"] = [5000.0, 10.0, 30.0, 60.0]  # the image is 640 wide
    dets[4]["score"] = None
    dets.append({"image_id": 1, "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9})  # not an image of the file
    dets.append({"image_id": [785], "category_id": 1, "bbox": [1, 2, 30, 40], "score": 0.9})
    det = write(tmp_path / "det.json", dets)
    result = cli("eval", "-w", CKPT17, "--sample", "--boxes", det, "--workers", "0", "--no-flip", "--out", tmp_path / "out")
    text = succeeded(result, f"{det}: skipped 7 of 12 detector boxes", "entry 0 (image 785): bbox[0] is NaN",
                     "1 box outside the image", "1 score not a number", "1 image not in the annotations",
                     "1 image_id not an integer")  # fmt: skip
    assert text.count("skipped 7 of 12") == 1  # one line, not one per box
    metrics = strict_json(tmp_path / "out" / "metrics.json")
    assert metrics["num_boxes"] == 5 and "skipped 7 of 12" in metrics["warnings"][0]


def test_eval_with_no_usable_detector_box_is_an_error(tmp_path):
    dets = [dict(d, bbox=[float("nan")] * 4) for d in DETS[:3]]
    result = cli("eval", "-w", CKPT17, "--sample", "--boxes", write(tmp_path / "det.json", dets), "--out", tmp_path / "out")
    failed(result, "no usable person boxes", "skipped 3 of 3 detector boxes")
    assert files_in(tmp_path / "out") == []


# --- raw AIC and remapping: refused, or skipped with --skip-invalid; never NaN in the output ------


def _raw_aic(change) -> list:
    raw = json.loads(AIC_RAW.read_text())
    change(raw[1])
    return raw


def _aic_keypoint(entry):
    entry["keypoint_annotations"]["human2"][0] = float("nan")


def _aic_box(entry):
    entry["human_annotations"]["human2"][3] = float("inf")


def _aic_empty_box(entry):
    box = entry["human_annotations"]["human2"]
    box[2] = box[0]


def _aic_off_image(entry):
    entry["human_annotations"]["human2"] = [5000, 10, 5100, 200]  # the images are 900-950 px wide


AIC_CASES = {
    "NaN keypoint": (_aic_keypoint, "keypoints[0] is NaN", "non-finite keypoints"),
    "infinite box": (_aic_box, "box[3] is Infinity", "non-finite box"),
    "empty box": (_aic_empty_box, "has x2 <= x1 or y2 <= y1", "box with x2 <= x1 or y2 <= y1"),
    "box off the image": (_aic_off_image, "lies outside the", "box outside the image"),
}


@pytest.mark.parametrize("case", AIC_CASES)
def test_convert_aic_refuses_a_bad_person_and_never_writes_nan(tmp_path, case):
    change, detail, reason = AIC_CASES[case]
    raw = _raw_aic(change)
    path = write(tmp_path / "raw.json", raw)
    out = tmp_path / "out" / "aic.json"
    result = cli("convert", "aic", path, "-o", out, "--images", AIC_IMAGES)
    failed(result, f"{path}: image {raw[1]['image_id']}, human2: ", detail, "--skip-invalid")
    assert files_in(out.parent) == []
    result = cli("convert", "aic", path, "-o", out, "--images", AIC_IMAGES, "--skip-invalid")
    succeeded(result, "skipped 1 records", reason)
    assert len(strict_json(out)["annotations"]) == 8


REMAP_CASES = {
    "NaN keypoint": (_set("keypoints", 6, float("nan")), "keypoints[6] is NaN", "non-finite keypoints"),
    "infinite bbox": (_set("bbox", 0, float("-inf")), "bbox[0] is -Infinity", "non-finite bbox"),
    "NaN in another field": (lambda ann: ann.update(segmentation=[[1.0, float("nan"), 3.0]]),
                             "segmentation[0][1] is NaN or Infinity", "non-finite value"),
}  # fmt: skip


@pytest.mark.parametrize("case", REMAP_CASES)
def test_convert_remap_refuses_non_finite_values_and_never_writes_nan(tmp_path, case):
    change, detail, reason = REMAP_CASES[case]
    data = copy.deepcopy(COCO)
    change(data["annotations"][PERSON])
    path = write(tmp_path / "coco.json", data)
    out = tmp_path / "out" / "remapped.json"
    failed(cli("convert", "remap", path, "--to", "coco-aic", "-o", out), "annotation id 230195", detail, "--skip-invalid")
    assert files_in(out.parent) == []
    succeeded(cli("convert", "remap", path, "--to", "coco-aic", "-o", out, "--skip-invalid"), "skipped 1 records", reason)
    assert len(strict_json(out)["annotations"]) == len(COCO["annotations"]) - 1


# --- bad images: train, eval and predict use one check ----------------------------------------


def _train_root(tmp_path: Path) -> Path:
    """A data root laid out as the coco preset expects, holding the bundled sample."""
    root = tmp_path / "root"
    write(root / "coco/annotations/person_keypoints_train2017.json", COCO)
    write(root / "coco/annotations/person_keypoints_val2017.json", COCO)
    write(root / "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json", DETS[::6])
    images_copy(root / "coco", "train2017")
    images_copy(root / "coco", "val2017")
    return root


def _spoil(folder: Path) -> None:
    """Three of the four images: one missing, one empty, one truncated."""
    (folder / "000000000785.jpg").unlink()
    (folder / "000000040083.jpg").write_bytes(b"")
    truncate(folder / "000000196141.jpg")


def test_train_stops_before_epoch_1_listing_bad_images(tmp_path):
    root = _train_root(tmp_path)
    _spoil(root / "coco/train2017")
    result = cli("train", "--preset", "coco", "--data-root", root, "--out", tmp_path / "run", *TINY_TRAIN)
    failed(result, "3 of 4 training images cannot be used", "000000000785.jpg: does not exist",
           "000000040083.jpg: empty file (0 bytes)", f"000000196141.jpg: {TRUNCATED}", "--skip-bad-images")  # fmt: skip
    assert not [n for n in files_in(tmp_path / "run") if n.endswith((".safetensors", ".pt"))]


def test_train_stops_before_epoch_1_on_bad_validation_images(tmp_path):
    root = _train_root(tmp_path)
    truncate(root / "coco/val2017/000000197388.jpg")
    result = cli("train", "--preset", "coco", "--data-root", root, "--out", tmp_path / "run", *TINY_TRAIN)
    failed(result, "1 of 4 validation images cannot be used", f"000000197388.jpg: {TRUNCATED}")
    assert not [n for n in files_in(tmp_path / "run") if n.endswith((".safetensors", ".pt"))]


def test_train_skip_bad_images_trains_without_them_and_says_so(tmp_path):
    root = _train_root(tmp_path)
    truncate(root / "coco/train2017/000000196141.jpg")
    truncate(root / "coco/val2017/000000196141.jpg")
    result = cli("train", "--preset", "coco", "--data-root", root, "--out", tmp_path / "run", *TINY_TRAIN,
                 "--skip-bad-images")  # fmt: skip
    text = succeeded(result, "1 of 4 training images cannot be used", "training without them: 4 of 12 instances left out",
                     "1 of 4 validation images cannot be used", "validation leaves them out")  # fmt: skip
    assert "metrics are over the other 3 images" in text  # said at validation
    assert (tmp_path / "run" / "last.safetensors").exists()


def test_train_replaces_a_sample_whose_image_turns_bad_mid_run(tmp_path, monkeypatch):
    root = _train_root(tmp_path)
    check = dataset_module.check_training_images

    def check_then_spoil(instances, skip, note):  # the file is cut after the check, as a failing disk would
        checked = check(instances, skip, note)
        truncate(root / "coco/train2017/000000197388.jpg")
        return checked

    monkeypatch.setattr(dataset_module, "check_training_images", check_then_spoil)
    result = cli("train", "--preset", "coco", "--data-root", root, "--out", tmp_path / "run", *TINY_TRAIN)
    text = succeeded(result, f"000000197388.jpg: {TRUNCATED}; its samples are replaced by other samples")
    assert text.count("its samples are replaced") == 1  # once per image, not per sample
    assert (tmp_path / "run" / "last.safetensors").exists()


def test_a_replaced_sample_is_the_same_in_every_run(tmp_path):
    root = _train_root(tmp_path)
    from posecli.presets import load_preset

    preset = load_preset("coco", ["model.input_size=[64,96]", "model.heatmap_size=[16,24]"])
    a = dataset_module.build_train_dataset(preset, root, seed=3)
    b = dataset_module.build_train_dataset(preset, root, seed=3)
    (root / "coco/train2017/000000000785.jpg").unlink()  # instance 0's image, gone after the check
    a.set_epoch(2)
    b.set_epoch(2)
    first, again = a[0], b[0]
    assert first["bad_image"].item() == 0 and all(torch.equal(first[k], again[k]) for k in first)
    assert a[1]["bad_image"].item() == -1  # the other images are unaffected


def test_eval_stops_before_the_model_runs_listing_bad_images(tmp_path):
    images = images_copy(tmp_path)
    _spoil(images)
    result = cli("eval", "-w", CKPT17, "--ann", COCO_ANN, "--images", images, "--workers", "0", "--out", tmp_path / "out")
    failed(result, "3 of 4 images with boxes", "000000000785.jpg: does not exist", f"000000196141.jpg: {TRUNCATED}",
           "--skip-bad-images")  # fmt: skip
    assert files_in(tmp_path / "out") == []


def test_eval_skip_bad_images_leaves_them_out_with_their_ground_truth(tmp_path):
    images = images_copy(tmp_path)
    truncate(images / "000000196141.jpg")
    result = cli("eval", "-w", CKPT17, "--ann", COCO_ANN, "--images", images, "--workers", "0", "--no-flip",
                 "--skip-bad-images", "--out", tmp_path / "out")  # fmt: skip
    succeeded(result, "1 of 4 images with boxes", TRUNCATED, "metrics are over the other 3 images")
    metrics = strict_json(tmp_path / "out" / "metrics.json")
    assert metrics["num_boxes"] == 8  # 12 ground-truth boxes, 4 of them on the truncated image


@pytest.mark.parametrize("skip", [False, True])
def test_eval_image_that_turns_bad_during_the_run(tmp_path, monkeypatch, skip):
    from posecli.engine import evaluate as evaluate_module

    images = images_copy(tmp_path)
    check = evaluate_module.check_images

    def check_then_spoil(paths):  # cut after the check, as a failing disk would
        bad = check(paths)
        truncate(images / "000000196141.jpg")
        return bad

    monkeypatch.setattr(evaluate_module, "check_images", check_then_spoil)
    args = ["eval", "-w", CKPT17, "--ann", COCO_ANN, "--images", images, "--workers", "0", "--no-flip", "--out", tmp_path / "out"]
    if not skip:
        failed(cli(*args), f"000000196141.jpg: {TRUNCATED}; replace the file or remove its boxes")
        assert files_in(tmp_path / "out") == []
    else:
        succeeded(cli(*args, "--skip-bad-images"), "(they changed during the evaluation)", "metrics are over the other 3 images")
        assert strict_json(tmp_path / "out" / "metrics.json")["num_boxes"] == 8


def test_train_eval_and_predict_agree_on_a_truncated_jpeg(tmp_path):
    images = images_copy(tmp_path)
    truncate(images / "000000196141.jpg")
    assert image_problem(images / "000000196141.jpg") == TRUNCATED
    assert cv2.imread(str(images / "000000196141.jpg")) is not None  # what training read before: half grey
    failed(cli("eval", "-w", CKPT17, "--ann", COCO_ANN, "--images", images, "--workers", "0"), TRUNCATED)
    result = cli("predict", images / "000000196141.jpg", images / "000000000785.jpg",
                 "--weights", CKPT17, "--detector", "none", "--no-flip", "--out", tmp_path / "out")  # fmt: skip
    succeeded(result, f"000000196141.jpg: not a readable image; skipped ({TRUNCATED})")
    assert [Path(r["file"]).name for r in strict_json(tmp_path / "out" / "predictions.json")["images"]] == ["000000000785.jpg"]


# --- predict ---------------------------------------------------------------------------------


def _predict(tmp_path, *inputs, det=None, extra=()):
    args = ["predict", *inputs, "--weights", CKPT17, "--no-flip", "--out", tmp_path / "out", *extra]
    return cli(*args, *(["--boxes", det] if det else []))


def test_predict_image_without_a_box_after_the_score_filter_has_no_people(tmp_path):
    dets = [d for d in DETS if d["image_id"] in (785, 40083)]
    keep = max((d for d in dets if d["image_id"] == 785), key=lambda d: d["score"])
    dets = [dict(d, score=0.1) if d["image_id"] == 40083 else d for d in dets if d["image_id"] == 40083 or d is keep]
    det = write(tmp_path / "det.json", dets)
    result = _predict(tmp_path, COCO_IMAGES / "000000000785.jpg", COCO_IMAGES / "000000040083.jpg", det=det,
                      extra=["--min-box-score", str(keep["score"] - 1e-3)])  # fmt: skip
    succeeded(result, "1 of 2 images have no person box in det.json scoring >=", "000000040083.jpg")
    records = {Path(r["file"]).name: r for r in strict_json(tmp_path / "out" / "predictions.json")["images"]}
    assert len(records["000000000785.jpg"]["people"]) == 1 and records["000000040083.jpg"]["people"] == []
    assert (tmp_path / "out" / "000000040083.jpg").exists()  # drawn, with nobody on it


def test_predict_skips_bad_det_boxes_with_one_counted_warning(tmp_path):
    dets = [copy.deepcopy(d) for d in DETS if d["image_id"] == 785][:4]
    dets[0]["bbox"][1] = float("nan")
    dets[1]["bbox"] = [9000.0, 5.0, 50.0, 80.0]  # off the 640 x 425 image: known once the image is read
    dets.append({"image_id": 785, "category_id": 1, "bbox": "0 0 10 10", "score": 0.9})
    det = write(tmp_path / "det.json", dets)
    result = _predict(tmp_path, COCO_IMAGES / "000000000785.jpg", det=det, extra=["--min-box-score", "0", "--nms", "none"])  # both good boxes, not OKS NMS
    text = succeeded(result, f"{det}: skipped 3 of 5 detector boxes", "entry 0 (image 785): bbox[1] is NaN",
                     "entry 4 (image 785): bbox is a string", "entry 1: box [x1, y1, x2, y2] = [9000.0")  # fmt: skip
    assert text.count("skipped") == 1  # one line for all three
    preds = strict_json(tmp_path / "out" / "predictions.json")
    assert len(preds["images"][0]["people"]) == 2


def test_predict_with_no_usable_det_box_is_an_error_and_writes_nothing(tmp_path):
    det = write(tmp_path / "det.json", [dict(DETS[0], bbox=[1, 2, float("nan"), 4])])
    failed(_predict(tmp_path, COCO_IMAGES / "000000000785.jpg", det=det), "no usable person detections", "bbox[2] is NaN")
    assert files_in(tmp_path / "out") == []


def test_predict_failing_half_way_leaves_the_previous_outputs_and_nothing_new(tmp_path, monkeypatch):
    """Every drawn file and predictions.json are one unit: a failure at the second image keeps the last run's."""
    inputs = [COCO_IMAGES / "000000000785.jpg", COCO_IMAGES / "000000040083.jpg"]
    succeeded(_predict(tmp_path, *inputs, extra=["--detector", "none"]))
    before = {n: (tmp_path / "out" / n).read_bytes() for n in files_in(tmp_path / "out")}
    encode, calls = cv2.imencode, []

    def fail_second(ext, image, *args):
        calls.append(ext)
        return (False, None) if len(calls) == 2 else encode(ext, image, *args)

    monkeypatch.setattr(cv2, "imencode", fail_second)
    failed(_predict(tmp_path, *inputs, extra=["--detector", "none", "--flip"]), "000000040083.jpg", "cannot encode")
    assert {n: (tmp_path / "out" / n).read_bytes() for n in files_in(tmp_path / "out")} == before  # no temp files either
