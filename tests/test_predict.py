"""posecli predict: the shared inference path and MMPose's keypoints per box, videos, detectors, bad input."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CKPT17, COCO_DET, COCO_IMAGES, DATA, REF
from posecli.cli import app
from posecli.engine.detect import HogDetector, OnnxYoloxDetector, decode_yolox, letterbox, onnx_input_size, yolox_grid
from posecli.engine.inference import Predictor
from posecli.engine.predict import BoxFinder, Boxes, Inputs, output_names, person_records, read_det_file
from posecli.errors import UserError
from posecli.geometry import xywh_to_xyxy

VIDEO = DATA / "video" / "demo.mp4"
runner = CliRunner()


def predict(*args):
    return runner.invoke(app, ["predict", *map(str, args), "--weights", str(CKPT17)])


def said(result) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def coco_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pred")
    result = predict(COCO_IMAGES, "--boxes", COCO_DET, "--min-box-score", "0", "--out", out)
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "predictions.json").read_text())


def _keypoints(person) -> np.ndarray:
    return np.array(person["keypoints"], np.float32).reshape(-1, 3)


def test_keypoints_equal_the_shared_inference_path_per_box(coco_run):
    out, preds = coco_run
    predictor = Predictor.from_weights(CKPT17)
    det = json.loads(COCO_DET.read_text())
    assert len(preds["images"]) == 4 and preds["keypoint_names"][5] == "left_shoulder"
    for record in preds["images"]:
        image = cv2.imread(record["file"])
        boxes = [d["bbox"] for d in det if d["image_id"] == int(Path(record["file"]).stem)]
        kpts, scores = predictor.predict_image(image, xywh_to_xyxy(np.array(boxes)))
        got = np.stack([_keypoints(p) for p in record["people"]])
        np.testing.assert_array_equal(got[..., :2], kpts)
        np.testing.assert_array_equal(got[..., 2], scores)
        assert cv2.imread(str(out / record["drawn"])).shape == image.shape


def test_first_boxes_match_mmpose(coco_run, first5):
    _, preds = coco_run
    index, arrays = first5
    people = next(r for r in preds["images"] if r["file"].endswith("000000000785.jpg"))["people"]
    for i, box in enumerate(index["boxes"]):
        got = _keypoints(people[i])
        stable = np.array(box["stable_std_flip"])
        np.testing.assert_allclose(got[stable, :2], arrays["keypoints_image_std_flip"][i][stable], atol=1e-3)
        np.testing.assert_allclose(got[:, 2], arrays["scores_std_flip"][i], atol=1e-5)


def test_boxes_and_instance_scores_match_mmpose_results(coco_run):
    """Each result MMPose kept after OKS NMS is one of ours: same xywh box (float32 cast) and rescored score."""
    _, preds = coco_run
    ours = {int(Path(r["file"]).stem): r["people"] for r in preds["images"]}
    reference = json.loads((REF / "eval" / "coco17" / "results_det_flip.keypoints.json").read_text())
    for ref in reference:
        match = [p for p in ours[ref["image_id"]] if np.allclose(p["box"], ref["bbox"], atol=1e-4)]
        assert len(match) >= 1
        assert abs(match[0]["score"] - ref["score"]) < 1e-5


def test_instance_score_is_box_score_times_mean_of_confident_keypoints():
    # eval's bbox_keypoint rescoring (keypoint scores above 0.2), through predict's own records
    scores = np.array([[0.1, 0.15, 0.3, 0.5], [0.1, 0.15, 0.0, 0.2]], np.float32)
    boxes = Boxes(np.float32([[0, 0, 10, 20], [5, 5, 8, 9]]), np.float32([0.5, 0.9]), "test")
    records = person_records(boxes, np.zeros((2, 4, 2), np.float32), scores)
    np.testing.assert_allclose([r["score"] for r in records], [0.5 * 0.4, 0.9 * 0.2], rtol=1e-6)
    assert [r["box"] for r in records] == [[0, 0, 10, 20], [5, 5, 3, 4]]  # xywh


def test_video_gives_drawn_mp4_with_same_frames_and_fps(tmp_path):
    result = predict(VIDEO, "--detector", "none", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    src, drawn = cv2.VideoCapture(str(VIDEO)), cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    assert drawn.get(cv2.CAP_PROP_FPS) == src.get(cv2.CAP_PROP_FPS)
    frames = 0
    while drawn.read()[0]:
        frames += 1
    assert frames == int(src.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    lines = [json.loads(s) for s in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(5))
    assert all(len(line["people"]) == 1 and line["box_source"].startswith("whole image") for line in lines)
    assert "whole image" in said(result)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


def test_hog_finding_nobody_falls_back_to_the_whole_image_and_says_so():
    grey = np.full((240, 320, 3), 128, np.uint8)
    boxes = BoxFinder(None, HogDetector(), 0.3)(grey, None)
    np.testing.assert_array_equal(boxes.xyxy, [[0, 0, 320, 240]])
    assert boxes.source.startswith("whole image") and "HOG" in boxes.source


def test_det_file_matched_through_annotation_file_names(tmp_path):
    image = tmp_path / "skier.jpg"
    shutil.copy(COCO_IMAGES / "000000000785.jpg", image)
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"images": [{"id": 785, "file_name": "val/skier.jpg"}]}))
    boxes = read_det_file(COCO_DET, [image], ann)[image]
    assert len(boxes.scores) == 22
    np.testing.assert_array_equal(boxes.xyxy[0], np.float32([277.1183166503906, 45.699668884277344, 502.2095947265625, 379.25994873046875]))


def test_output_names_are_distinct_and_videos_become_mp4(tmp_path):
    a, b, v = Path("x/img.jpg"), Path("y/img.jpg"), Path("y/img.avi")
    names = output_names(Inputs([a, b], [v], []), tmp_path)
    assert names[a] == "img.jpg" and names[b] == "img_2.jpg" and names[v].endswith(".mp4")
    assert len({Path(n).stem for n in names.values()}) == 3  # the video's .jsonl cannot collide


# --- bad input -----------------------------------------------------------------------------


def test_unreadable_image_among_good_ones_is_skipped_with_a_warning(tmp_path):
    shutil.copy(COCO_IMAGES / "000000000785.jpg", tmp_path / "good.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    result = predict(tmp_path / "broken.jpg", tmp_path / "good.jpg", "--detector", "none", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "broken.jpg: not a readable image; skipped" in said(result) and "1 warning" in said(result)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [Path(r["file"]).name for r in preds["images"]] == ["good.jpg"]


def test_empty_folder_is_an_error(tmp_path):
    result = predict(tmp_path, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "no images or videos in this folder" in said(result) and "Traceback" not in said(result)
    assert not (tmp_path / "out" / "predictions.json").exists()


def test_only_input_an_unreadable_video_is_an_error(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 100)
    result = predict(tmp_path / "clip.mp4", "--detector", "none", "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "not a readable video" in said(result) and "nothing could be processed" in said(result)


def test_det_file_for_other_images_is_an_error(tmp_path):
    det = tmp_path / "det.json"
    det.write_text(json.dumps([{"image_id": 999, "bbox": [1, 2, 3, 4], "score": 0.9, "category_id": 1}]))
    result = predict(COCO_IMAGES / "000000000785.jpg", "--boxes", det, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert "det file for other images" in said(result) and "Traceback" not in said(result)


@pytest.mark.parametrize("name, content", [("bad.pth", b"hello"), ("bad.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")])
def test_weights_that_are_not_a_pose_model_are_an_error(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    args = ["predict", str(COCO_IMAGES / "000000000785.jpg"), "--detector", "none", "--weights", str(tmp_path / name), "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert name in said(result) and "Traceback" not in said(result)


# --- ONNX person detector, on hand-written ONNX graphs whose outputs are constants ---------


@pytest.mark.parametrize("runner", ["ONNX Runtime", "OpenCV"])
def test_yolox_raw_output_decodes_to_the_person_box_in_image_pixels(tmp_path, monkeypatch, runner):
    input_size = (64, 32)  # (w, h)
    grid, stride = yolox_grid(input_size)
    raw = np.zeros((len(grid), 7), np.float32)  # xy, log wh, objectness, 2 classes
    a = int(np.flatnonzero((stride[:, 0] == 8) & (grid[:, 0] == 3) & (grid[:, 1] == 1))[0])
    raw[a] = [0.5, 0.5, np.log(2.0), np.log(3.0), 0.9, 0.8, 0.1]  # centre (28, 12), size 16 x 24
    b = int(np.flatnonzero(stride[:, 0] == 16)[0])
    raw[b] = [0, 0, 0, 0, 0.95, 0.1, 0.9]  # confidently another class: not a person
    xyxy, scores = decode_yolox(raw, input_size)
    np.testing.assert_allclose(xyxy[a], [20, 0, 36, 24])
    path = tmp_path / "yolox.onnx"
    _constant_onnx(path, (1, 3, 32, 64), [raw[None]])
    # The input size comes from ONNX Runtime's session, or without it from the onnx package.
    pytest.importorskip("onnxruntime" if runner == "ONNX Runtime" else "onnx")
    if runner == "OpenCV":
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else find_spec(name))
        assert onnx_input_size(path) == (64, 32)
    detector = OnnxYoloxDetector(path, min_score=0.5)
    assert detector.input_size == (64, 32) and detector.name.endswith(f"({runner})")
    image = np.zeros((64, 128, 3), np.uint8)  # letterboxed at ratio 0.5
    assert letterbox(image, input_size)[1] == 0.5
    boxes, scores = detector(image)
    np.testing.assert_allclose(boxes, [[40, 0, 72, 48]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)


def test_onnx_detector_with_in_graph_nms_keeps_person_labels(tmp_path):
    dets = np.array([[[4, 4, 20, 30, 0.9], [0, 0, 10, 10, 0.8], [8, 2, 12, 6, 0.1]]], np.float32)
    labels = np.array([[0, 3, 0]], np.float32)
    path = tmp_path / "with_nms.onnx"
    _constant_onnx(path, (1, 3, 32, 32), [dets, labels])
    boxes, scores = OnnxYoloxDetector(path, min_score=0.3)(np.zeros((64, 64, 3), np.uint8))
    np.testing.assert_allclose(boxes, [[8, 8, 40, 60]])
    np.testing.assert_allclose(scores, [0.9])


def test_unreadable_onnx_detector_is_an_error(tmp_path):
    (tmp_path / "det.onnx").write_bytes(b"nonsense")
    with pytest.raises(UserError, match="cannot read this ONNX model"):
        OnnxYoloxDetector(tmp_path / "det.onnx")


def _constant_onnx(path: Path, input_shape: tuple[int, ...], outputs: list[np.ndarray]) -> None:
    """Write an ONNX model (protobuf by hand, no onnx package): input 'images'; output i = outputs[i] + 0 * mean(images)."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                return bytes(out)

    def field(number: int, value) -> bytes:
        if isinstance(value, int):
            return varint(number << 3) + varint(value)
        value = value.encode() if isinstance(value, str) else value
        return varint(number << 3 | 2) + varint(len(value)) + value

    def tensor_type(shape) -> bytes:  # TypeProto{tensor_type{elem_type FLOAT, shape{dim{dim_value}}}}
        return field(1, field(1, 1) + field(2, b"".join(field(1, field(1, d)) for d in shape)))

    def node(op: str, inputs: list[str], output: str, attrs: bytes = b"") -> bytes:
        return field(1, b"".join(field(1, i) for i in inputs) + field(2, output) + field(4, op) + attrs)

    def initializer(name: str, array: np.ndarray) -> bytes:
        return field(5, b"".join(field(1, d) for d in array.shape) + field(2, 1) + field(8, name) + field(9, array.tobytes()))

    keepdims_0 = field(5, field(1, "keepdims") + field(3, 0) + field(20, 2))
    graph = node("ReduceMean", ["images"], "mean", keepdims_0) + node("Mul", ["mean", "zero"], "nothing")
    graph += initializer("zero", np.zeros((), np.float32))
    for i, array in enumerate(outputs):
        graph += initializer(f"const{i}", np.asarray(array, np.float32)) + node("Add", [f"const{i}", "nothing"], f"out{i}")
    graph += field(11, field(1, "images") + field(2, tensor_type(input_shape)))
    graph += b"".join(field(12, field(1, f"out{i}") + field(2, tensor_type(a.shape))) for i, a in enumerate(outputs))
    path.write_bytes(field(1, 7) + field(7, graph) + field(8, field(2, 13)))  # ir_version 7, opset 13
