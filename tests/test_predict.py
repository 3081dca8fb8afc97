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
from posecli.engine.detect import HogDetector, OnnxYoloxDetector, box_nms, decode_yolox, letterbox, onnx_input_size, yolox_grid
from posecli.engine.inference import Predictor
from posecli.engine.predict import BoxFinder, Boxes, Inputs, PredictConfig, output_names, person_records, read_det_file
from posecli.engine.predict import predict as run_predict
from posecli.engine.sources import expand_inputs
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
    result = predict(COCO_IMAGES, "--boxes", COCO_DET, "--min-box-score", "0", "--nms", "none", "--out", out)
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
    assert all(line["people"][0]["box_score"] is None for line in lines)  # no detector scored it
    assert said(result).count("whole image served as the box") == 1  # said once, in the summary
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


# --- predict for real use: eval's NMS, HOG, live sources, tracking, frames, formats --------


def test_default_oks_nms_keeps_exactly_mmpose_results(tmp_path):
    """Eval's defaults (--nms oks --nms-thr 0.9 --min-box-score 0): the people kept are MMPose's results, box for box."""
    image = COCO_IMAGES / "000000000785.jpg"
    result = predict(image, "--boxes", COCO_DET, "--no-draw", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    people = json.loads((tmp_path / "predictions.json").read_text())["images"][0]["people"]
    reference = [r for r in json.loads((REF / "eval" / "coco17" / "results_det_flip.keypoints.json").read_text()) if r["image_id"] == 785]
    assert len(people) == len(reference) == 18  # of 22 boxes
    ours = sorted((tuple(np.round(p["box"], 3)), round(p["score"], 5)) for p in people)
    theirs = sorted((tuple(np.round(r["bbox"], 3)), round(r["score"], 5)) for r in reference)
    assert ours == theirs


def _iou(a, b) -> float:
    a, b = np.reshape(a, -1), np.reshape(b, -1)
    lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(hi - lo, 0, None))
    return inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter)


def test_hog_finds_the_readme_skier_and_half_the_labelled_people():
    annotations = json.loads((COCO_IMAGES / "test_coco.json").read_text())["annotations"]
    hog, found, total = HogDetector(), 0, 0
    for path in sorted(COCO_IMAGES.glob("*.jpg")):
        xyxy, scores = hog(cv2.imread(str(path)))
        assert np.all(np.diff(scores) <= 0) and np.all((scores > 0) & (scores < 1))
        truth = [xywh_to_xyxy(np.array(a["bbox"])) for a in annotations if a["image_id"] == int(path.stem) and a["num_keypoints"]]
        best = [max((_iou(t, b) for b in xyxy), default=0.0) for t in truth]
        if path.stem.endswith("785"):
            assert best[0] > 0.6  # the README's example: one standing skier
        found, total = found + sum(b > 0.5 for b in best), total + len(truth)
    assert (found, total) == (5, 12)  # measured; the untuned detector (no border, margin 0) found 2 at IoU 0.3, 0 at 0.5


def test_box_nms_drops_overlaps_and_boxes_inside_a_better_one():
    xyxy = np.float32([[0, 0, 100, 200], [5, 5, 105, 205], [20, 40, 70, 140], [300, 0, 400, 200]])
    scores = np.float32([0.9, 0.8, 0.7, 0.6])
    assert box_nms(xyxy, scores, 0.45).tolist() == [0, 2, 3]
    assert box_nms(xyxy, scores, 0.45, inside=0.7).tolist() == [0, 3]


def test_inputs_recursive_folders_and_live_sources(tmp_path):
    (tmp_path / "sub").mkdir()
    shutil.copy(COCO_IMAGES / "000000000785.jpg", tmp_path / "sub" / "a.jpg")
    assert expand_inputs([str(tmp_path)]).problems and not expand_inputs([str(tmp_path)]).images
    found = expand_inputs([str(tmp_path), "0", "/dev/video2", "rtsp://cam.local/live", "http://h/clip.mp4"], recursive=True)
    assert found.images == [tmp_path / "sub" / "a.jpg"] and not found.problems
    assert found.streams == [0, "/dev/video2", "rtsp://cam.local/live", "http://h/clip.mp4"]
    names = output_names(found, tmp_path / "out")
    assert [names[s] for s in found.streams] == ["camera0.mp4", "video2.mp4", "live.mp4", "clip.mp4"]


def test_a_camera_that_is_not_there_is_a_clear_error(tmp_path):
    result = predict("0", "--out", tmp_path)
    assert result.exit_code == 1
    assert "camera 0: OpenCV cannot open this camera" in said(result) and "Traceback" not in said(result)
    assert not (tmp_path / "predictions.json").exists()


class _RangeHandler(__import__("http.server").server.SimpleHTTPRequestHandler):
    """A static file server that honours Range requests, as web servers do (FFmpeg seeks to an mp4's index)."""

    def log_message(self, *args):
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if "Range" not in self.headers or not path.is_file():
            return super().send_head()
        data = path.read_bytes()
        start, _, end = self.headers["Range"].removeprefix("bytes=").partition("-")
        start, end = int(start or 0), int(end) if end else len(data) - 1
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        import io

        return io.BytesIO(data[start : end + 1])


@pytest.fixture(scope="module")
def clip_url():
    import functools
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_RangeHandler, directory=str(VIDEO.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{VIDEO.name}"
    server.shutdown()


def test_http_stream_gives_a_drawn_video_and_a_line_per_frame(tmp_path, clip_url):
    result = predict(clip_url, "--track", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    drawn, frames = cv2.VideoCapture(str(tmp_path / "demo.mp4")), 0
    while drawn.read()[0]:
        frames += 1
    assert frames == 5  # the source's frame count
    lines = [json.loads(s) for s in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == [0, 1, 2, 3, 4] and all(len(line["people"]) for line in lines)
    video = json.loads((tmp_path / "predictions.json").read_text())["videos"][0]
    assert video["live"] and video["file"] == clip_url and video["frames"] == 5
    _same_person_same_id(lines)


def _same_person_same_id(lines):
    """A person whose box overlaps one box of the previous frame by IoU > 0.6, and no other box either way by
    more than 0.3 (no duplicate detection makes it ambiguous), carries that box's track id."""
    from posecli.engine.track import box_iou

    pairs = 0
    for before, after in zip(lines, lines[1:]):
        a = xywh_to_xyxy(np.array([p["box"] for p in before["people"]]))
        b = xywh_to_xyxy(np.array([p["box"] for p in after["people"]]))
        overlap = box_iou(a, b)
        for i, j in zip(*np.nonzero(overlap > 0.6)):
            if (overlap[:, j] > 0.3).sum() == 1 and (overlap[i] > 0.3).sum() == 1:
                assert after["people"][j]["track_id"] == before["people"][i]["track_id"]
                pairs += 1
    assert pairs >= 10


def test_det_every_runs_the_detector_on_every_nth_frame_and_keeps_ids(tmp_path):
    result = predict(VIDEO, "--track", "--det-every", "3", "--no-draw", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    lines = [json.loads(s) for s in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert ["HOG" in line["box_source"] for line in lines] == [True, False, False, True, False]
    assert [p["track_id"] for p in lines[1]["people"]] == [p["track_id"] for p in lines[0]["people"]][: len(lines[1]["people"])]
    assert "3 frames from the previous frame's keypoints" in said(result)
    _same_person_same_id(lines)


def test_every_and_max_frames_pick_the_frames(tmp_path):
    result = predict(VIDEO, "--every", "2", "--max-frames", "2", "--detector", "none", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    lines = [json.loads(s) for s in (tmp_path / "demo.jsonl").read_text().splitlines()]
    assert [(line["frame"], line["time"]) for line in lines] == [(0, 0.0), (2, 0.4)]  # 5 frames/s
    drawn = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    assert drawn.get(cv2.CAP_PROP_FPS) == 2.5 and drawn.get(cv2.CAP_PROP_FRAME_COUNT) == 2


def test_ctrl_c_stops_cleanly_and_keeps_what_was_done(tmp_path, clip_url):
    def progress(done, total):
        if done == 3:
            raise KeyboardInterrupt

    cfg = PredictConfig([str(VIDEO), clip_url], CKPT17, tmp_path, detector="none")
    summary = run_predict(cfg, progress)
    assert summary.interrupted and summary.frames == 3
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert preds["interrupted"] and [v["frames"] for v in preds["videos"]] == [3]  # the stream was never opened
    assert len((tmp_path / "demo.jsonl").read_text().splitlines()) == 3
    assert cv2.VideoCapture(str(tmp_path / "demo.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_mmpose_format_has_the_inferencer_keys_and_our_numbers(tmp_path):
    result = predict(COCO_IMAGES / "000000000785.jpg", VIDEO, "--detector", "none", "--format", "mmpose", "--out", tmp_path)
    assert result.exit_code == 0, result.output
    person = json.loads((tmp_path / "predictions.json").read_text())["images"][0]["people"][0]
    (inst,) = json.loads((tmp_path / "000000000785.json").read_text())
    assert set(inst) == {"keypoints", "keypoint_scores", "bbox", "bbox_score"}
    np.testing.assert_allclose(np.c_[inst["keypoints"], inst["keypoint_scores"]], _keypoints(person), rtol=1e-6)
    assert inst["bbox"] == [[0, 0, 640, 425]] and inst["bbox_score"] == 1.0  # MMPose's own whole-image box and score
    frames = json.loads((tmp_path / "demo.json").read_text())
    assert [f["frame_id"] for f in frames] == list(range(5)) and len(frames[0]["instances"]) == 1
    assert [json.loads(s) for s in (tmp_path / "demo.jsonl").read_text().splitlines()] == frames


def test_rtmlib_end_to_end_detector_output_without_labels(tmp_path):
    # rtmlib's published YOLOX / RTMDet person detectors (mmdeploy end2end): dets (1, N, 5), with or without labels
    path = tmp_path / "end2end.onnx"
    _constant_onnx(path, (1, 3, 32, 32), [np.array([[[4, 4, 20, 30, 0.9], [5, 5, 20, 30, 0.85], [8, 2, 12, 6, 0.1]]], np.float32)])
    boxes, scores = OnnxYoloxDetector(path, min_score=0.3)(np.zeros((64, 64, 3), np.uint8))
    np.testing.assert_allclose(boxes, [[8, 8, 40, 60]])  # the 0.85 duplicate goes by box NMS, 0.1 by the score
    np.testing.assert_allclose(scores, [0.9])
