"""``posecli predict``: keypoints for images, folders, globs and videos, as JSON and drawn copies.

inputs -> images and videos [expand_inputs]
each image / frame -> person boxes (det file, detector, or the whole image) [BoxFinder]
  -> keypoints through the shared inference path [Predictor.predict_image]
  -> records (box xywh, box score, [x, y, score] * K, instance score) [person_records]
out/: predictions.json, a drawn copy of each image, and per video a drawn .mp4 plus <name>.jsonl.
"""

from __future__ import annotations

import glob
import json
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from posecli.data.coco import read_detection_file
from posecli.data.images import decode_image
from posecli.data.records import OUTSIDE, Problem, Skips, show
from posecli.draw import draw_people
from posecli.engine.cocometric import rescore
from posecli.engine.detect import make_detector
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.errors import UserError
from posecli.fileio import atomic_path, one_unit, read_json, write_bytes, write_json
from posecli.geometry import xywh_to_xyxy, xyxy_to_xywh

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".pbm", ".pgm", ".ppm", ".pnm"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ts"}


@dataclass
class Inputs:
    images: list[Path]
    videos: list[Path]
    problems: list[str]  # inputs that gave nothing: missing files, empty folders, globs that match nothing


def expand_inputs(specs: list[str]) -> Inputs:
    """Files, folders (not recursive) and glob patterns -> images and videos, in order, without repeats."""
    images, videos, problems, seen = [], [], [], set()
    for spec in specs:
        path = Path(spec)
        if path.is_file():
            found = [path]  # named explicitly: tried whatever its extension
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            if not found:
                problems.append(f"{spec}: no images or videos in this folder")
        elif glob.has_magic(spec):
            found = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
            found = [p for p in found if p.is_file() and p.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS]
            if not found:
                problems.append(f"{spec}: the pattern matches no images or videos")
        else:
            found = []
            problems.append(f"{spec}: no such file or folder")
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                (videos if p.suffix.lower() in VIDEO_EXTS else images).append(p)
    return Inputs(images, videos, problems)


@dataclass
class Boxes:
    xyxy: np.ndarray  # (N, 4) float32, image px
    scores: np.ndarray  # (N,) float32
    source: str  # where they came from, as the output reports it
    entries: np.ndarray | None = None  # (N,) the det file's entry number of each box, if from one


def no_boxes(source: str) -> Boxes:
    return Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), source, np.zeros(0, np.int64))


def whole_image(image: np.ndarray, why: str) -> Boxes:
    h, w = image.shape[:2]
    return Boxes(np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32), f"whole image ({why})")


def read_det_file(det_path: Path, images: list[Path], ann_path: Path | None = None,
                  skips: Skips | None = None) -> dict[Path, Boxes]:  # fmt: skip
    """COCO detection results (image_id, bbox xywh, score, category_id) -> boxes per given image.

    Image ids come from ``ann_path`` (COCO annotations: file_name -> id) when given, else from the
    file name's numeric stem (000000000785.jpg -> 785). Person boxes only (category_id 1), cast as
    MMPose casts detector boxes; no box for any given image means the file is for other images.
    Bad entries (eval's reader, ``coco.read_detection_file``) are skipped and counted into ``skips``.
    """
    dets = read_detection_file(det_path)
    if skips is not None:
        skips.extend(dets.skips)
        skips.total = dets.entries
    if not dets.scores:
        raise UserError(f"{det_path}: no usable person detections (category_id 1)"
                        + (f"; {dets.skips.summary(dets.entries)}" if len(dets.skips) else ""))  # fmt: skip
    ids = _image_ids(images, ann_path)
    by_id: dict = {}
    for image_id, bbox, score, entry in zip(dets.image_ids, dets.xywh, dets.scores, dets.indices):
        by_id.setdefault(image_id, []).append((bbox, score, entry))
    out = {}
    for path, image_id in ids.items():
        found = by_id.get(image_id, [])
        xyxy = xywh_to_xyxy(np.array([b for b, _, _ in found], np.float64).reshape(-1, 4))
        out[path] = Boxes(xyxy, np.array([s for _, s, _ in found], np.float32), f"det file {det_path.name}",
                          np.array([e for _, _, e in found], np.int64))  # fmt: skip
    if not any(len(b.scores) for b in out.values()):
        known = sorted(by_id)[:5]
        raise UserError(f"{det_path}: no person box for any of the {len(images)} given images (its image ids start "
                        f"{known}); it is a det file for other images. Match images by numeric file name "
                        "(000000000785.jpg -> 785) or pass --ann with the annotations that name them")  # fmt: skip
    return out


def _image_ids(images: list[Path], ann_path: Path | None) -> dict[Path, int]:
    if ann_path is None:
        return {p: int(p.stem) for p in images if p.stem.isdigit()}
    ann = read_json(ann_path, "COCO annotation file")
    if not isinstance(ann, dict) or not isinstance(ann.get("images"), list):
        raise UserError(f"{ann_path}: a COCO annotation file has an 'images' list of {{id, file_name}}")
    by_name = {}
    for i, im in enumerate(ann["images"]):
        if not (isinstance(im, dict) and isinstance(im.get("file_name"), str) and "id" in im):
            raise UserError(f"{ann_path}: images[{i}] needs an id and a file_name string: {show(im)}")
        by_name[Path(im["file_name"]).name] = im["id"]
    return {p: by_name[p.name] for p in images if p.name in by_name}


@dataclass
class BoxFinder:
    """Boxes for one image: from the det file if given, else the detector, else the whole image.

    Det-file boxes that lie outside their image (known only once it is read) are skipped into
    ``skips``; images left without a box are listed in ``empty``.
    """

    det_boxes: dict[Path, Boxes] | None
    detector: Callable | None
    min_box_score: float
    skips: Skips | None = None
    empty: list[Path] = field(default_factory=list)

    def __call__(self, image: np.ndarray, path: Path | None) -> Boxes:
        if self.det_boxes is not None:
            boxes = self.det_boxes.get(path) or no_boxes("det file: no entry")
            boxes = self._inside(boxes, image.shape[1], image.shape[0])
        elif self.detector is None:
            return whole_image(image, "no person detector")
        else:
            xyxy, scores = self.detector(image)
            boxes = Boxes(xyxy.astype(np.float32), scores.astype(np.float32), self.detector.name)
        keep = boxes.scores >= self.min_box_score
        if self.det_boxes is None and not keep.any():
            return whole_image(image, f"{self.detector.name} found nobody")
        if not keep.any():
            self.empty.append(path)
        entries = boxes.entries[keep] if boxes.entries is not None else None
        return Boxes(boxes.xyxy[keep], boxes.scores[keep], boxes.source, entries)

    def _inside(self, boxes: Boxes, width: int, height: int) -> Boxes:
        x1, y1, x2, y2 = boxes.xyxy.T
        outside = (x1 >= width) | (y1 >= height) | (x2 <= 0) | (y2 <= 0)
        if not outside.any():
            return boxes
        for k in np.flatnonzero(outside):
            if self.skips is not None:
                box = [round(float(v), 2) for v in boxes.xyxy[k]]
                self.skips.add(f"entry {boxes.entries[k]}", Problem(f"box [x1, y1, x2, y2] = {box} lies outside its {width}x{height} image", OUTSIDE))
        inside = ~outside
        return Boxes(boxes.xyxy[inside], boxes.scores[inside], boxes.source, boxes.entries[inside])

    def describe(self) -> str:
        if self.det_boxes is not None:
            return next(iter(self.det_boxes.values())).source
        if self.detector is None:
            return "whole image as one box (no person detector)"
        return f"{self.detector.name}; the whole image where it finds nobody"


def person_records(boxes: Boxes, keypoints: np.ndarray, scores: np.ndarray) -> list[dict]:
    """Boxes and their keypoints (N, K, 2), scores (N, K) -> JSON-ready records."""
    if len(keypoints) == 0:  # an image with no person box: no people
        return []
    xywh = xyxy_to_xywh(boxes.xyxy)
    flat = np.concatenate([keypoints, scores[..., None]], -1).reshape(len(keypoints), -1)
    inst = rescore(boxes.scores, scores)  # eval's bbox_keypoint score (MMPose's threshold 0.2)
    return [{"box": [float(v) for v in xywh[i]], "box_score": float(boxes.scores[i]),
             "keypoints": [float(v) for v in flat[i]], "score": float(inst[i])}
            for i in range(len(keypoints))]  # fmt: skip


@dataclass
class PredictConfig:
    inputs: list[str]
    weights: Path
    out: Path
    boxes: Path | None = None  # COCO detection results
    ann: Path | None = None  # COCO annotations naming the det file's image ids
    detector: str = "hog"  # hog | none | FILE.onnx
    inference: InferenceSettings = InferenceSettings()
    min_box_score: float = 0.3
    min_keypoint_score: float = 0.3  # drawing only; the JSON keeps every keypoint
    draw: bool = True


@dataclass
class Summary:
    predictions: Path
    box_source: str
    images: int = 0
    frames: int = 0
    people: int = 0
    whole_image: int = 0  # images / frames where the whole image served as the box
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def predict(cfg: PredictConfig, progress: Callable[[int, int], None] = lambda done, total: None,
            warn: Callable[[str], None] = lambda message: None) -> Summary:  # fmt: skip
    """Run the whole job; ``progress(done, total)`` counts images plus video frames, ``warn`` gets skipped inputs.

    The drawn files, .jsonl files and predictions.json are one unit (``fileio.one_unit``): if the job
    fails anywhere, none of them is renamed into place and the previous outputs stay as they were.
    """
    with one_unit():
        return _predict(cfg, progress, warn)


def _predict(cfg: PredictConfig, progress: Callable[[int, int], None], warn: Callable[[str], None]) -> Summary:
    inputs = expand_inputs(cfg.inputs)
    summary = Summary(cfg.out / "predictions.json", "")

    def note(message: str) -> None:
        summary.warnings.append(message)
        warn(message)

    for message in inputs.problems:
        note(message)
    if not inputs.images and not inputs.videos:
        raise UserError("nothing to predict: " + "; ".join(inputs.problems))
    if cfg.boxes is not None and inputs.videos:
        raise UserError(f"--boxes gives boxes for images, not for videos ({inputs.videos[0]}); use --detector for videos")
    names = output_names(inputs, cfg.out)
    skips = Skips(str(cfg.boxes), "detector boxes") if cfg.boxes is not None else None
    det_boxes = read_det_file(cfg.boxes, inputs.images, cfg.ann, skips) if cfg.boxes is not None else None
    detector = make_detector(cfg.detector, cfg.min_box_score) if det_boxes is None else None
    find_boxes = BoxFinder(det_boxes, detector, cfg.min_box_score, skips)
    summary.box_source = find_boxes.describe()
    predictor = Predictor.from_weights(cfg.weights, cfg.inference)

    total = len(inputs.images) + sum(_frame_count(v) for v in inputs.videos)
    done, start = 0, time.perf_counter()

    def advance() -> None:
        nonlocal done
        done += 1
        progress(done, max(total, done))  # a video's frame count in its header is only an estimate

    image_records = []
    for path in inputs.images:
        image, problem = decode_image(path)  # the check training and eval make, then OpenCV's decode
        if image is None:
            note(f"{path}: not a readable image; skipped ({problem})")
        else:
            record, drawn = _predict_one(predictor, find_boxes, image, path, cfg, summary)
            image_records.append({"file": str(path), "drawn": names[path] if cfg.draw else None, **record})
            if drawn is not None:
                summary.written.append(write_image(cfg.out / names[path], drawn))
            summary.images += 1
        advance()

    video_records = []
    for path in inputs.videos:
        video = _predict_video(predictor, find_boxes, path, cfg, names[path], summary, advance, note)
        if video is None:
            note(f"{path}: not a readable video (cannot be opened or has no frames); skipped")
        else:
            video_records.append(video)
    summary.seconds = time.perf_counter() - start
    if skips is not None and len(skips):
        note(skips.summary())
    if find_boxes.empty:  # usual with a score threshold: said once, not per image
        shown = ", ".join(p.name for p in find_boxes.empty[:3]) + (", ..." if len(find_boxes.empty) > 3 else "")
        note(f"{len(find_boxes.empty)} of {summary.images} images have no person box in {cfg.boxes.name} scoring "
             f">= {cfg.min_box_score} ({shown}); their records list no people")  # fmt: skip
    if getattr(detector, "dropped", 0):
        note(f"{detector.name} gave {detector.dropped} boxes with non-finite or no width or height; they were left out")
    if summary.images + summary.frames == 0:
        raise UserError("nothing could be processed: " + "; ".join(summary.warnings))

    layout = predictor.layout
    write_json(summary.predictions, {
        "weights": str(cfg.weights), "arch": predictor.info.arch, "layout": layout.name,
        "keypoint_names": list(layout.keypoints[: predictor.num_keypoints]), "flip": cfg.inference.flip,
        "boxes": summary.box_source, "min_box_score": cfg.min_box_score,
        "images": image_records, "videos": video_records, "warnings": summary.warnings,
    })  # fmt: skip
    summary.written.append(summary.predictions)
    return summary


def _predict_one(predictor: Predictor, find_boxes: BoxFinder, image: np.ndarray, path: Path | None,
                 cfg: PredictConfig, summary: Summary) -> tuple[dict, np.ndarray | None]:  # fmt: skip
    """One image or frame -> its JSON record and, if drawing, the drawn copy."""
    boxes = find_boxes(image, path)
    keypoints, scores = predictor.predict_image(image, boxes.xyxy)
    summary.people += len(keypoints)
    summary.whole_image += boxes.source.startswith("whole image")
    record = {"width": image.shape[1], "height": image.shape[0], "box_source": boxes.source,
              "people": person_records(boxes, keypoints, scores)}  # fmt: skip
    drawn = None
    if cfg.draw:
        drawn = draw_people(image, predictor.layout, keypoints, scores, boxes.xyxy, boxes.scores, cfg.min_keypoint_score)
    return record, drawn


def _predict_video(predictor: Predictor, find_boxes: BoxFinder, path: Path, cfg: PredictConfig, name: str,
                   summary: Summary, advance: Callable[[], None], note: Callable[[str], None]) -> dict | None:  # fmt: skip
    """Every frame of a video -> <stem>.jsonl (one line per frame) and the drawn ``name`` (mp4v); None if unreadable."""
    capture = cv2.VideoCapture(str(path))
    try:
        ok, frame = capture.read() if capture.isOpened() else (False, None)
        if not ok:
            return None
        fps = capture.get(cv2.CAP_PROP_FPS)
        if not np.isfinite(fps) or fps <= 0:
            note(f"{path}: no frame rate in the file; the drawn video uses 25 frames/s")
            fps = 25.0
        size = (frame.shape[1], frame.shape[0])
        jsonl = cfg.out / (Path(name).stem + ".jsonl")
        drawn_video = atomic_video(cfg.out / name, fps, size) if cfg.draw else nullcontext()
        frames = 0
        with atomic_path(jsonl) as jsonl_tmp, open(jsonl_tmp, "w") as lines, drawn_video as writer:
            while ok:
                record, drawn = _predict_one(predictor, find_boxes, frame, None, cfg, summary)
                lines.write(json.dumps({"frame": frames, "time": frames / fps, **record}) + "\n")
                if writer is not None:
                    writer.write(drawn)
                frames += 1
                summary.frames += 1
                advance()
                ok, frame = capture.read()
    finally:
        capture.release()
    summary.written += [cfg.out / name] * cfg.draw + [jsonl]
    return {"file": str(path), "drawn": name if cfg.draw else None, "jsonl": jsonl.name,
            "frames": frames, "fps": fps, "width": size[0], "height": size[1]}  # fmt: skip


@contextmanager
def atomic_video(path: Path, fps: float, size: tuple[int, int]):
    """An mp4v ``cv2.VideoWriter`` on a temp file beside ``path``, renamed onto it only if the block succeeds."""
    with atomic_path(path) as tmp:  # the temp name keeps .mp4: OpenCV picks the container from it
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        try:
            if not writer.isOpened():
                raise UserError(f"{path}: OpenCV cannot write an mp4v video here; --no-draw writes the JSON only")
            yield writer
        finally:
            writer.release()


def _frame_count(path: Path) -> int:
    capture = cv2.VideoCapture(str(path))
    n = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    return max(n, 0)


def output_names(inputs: Inputs, out: Path) -> dict[Path, str]:
    """A distinct file name in ``out`` for each input's drawn copy (videos become .mp4), never an input itself."""
    names, used = {}, {"predictions.json"}
    for path in inputs.images + inputs.videos:
        stem, suffix = path.stem, (".mp4" if path in inputs.videos else path.suffix)
        name, n = stem + suffix, 1
        # a video's .jsonl shares its stem, so stems must be distinct too
        while name.lower() in used or Path(name).stem.lower() in used:
            n += 1
            name = f"{stem}_{n}{suffix}"
        used |= {name.lower(), Path(name).stem.lower()}
        names[path] = name
        if (out / name).resolve() == path.resolve():
            raise UserError(f"--out {out} would overwrite the input {path}; choose another output folder")
    return names


def write_image(path: Path, image: np.ndarray) -> Path:
    """Encode by the file's extension and write atomically."""
    ok, data = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_EXTS else ".png", image)
    if not ok:
        raise UserError(f"{path}: OpenCV cannot encode a {path.suffix} image")
    write_bytes(path, data.tobytes())  # not ndarray.tofile: a full disk would lose its errno there
    return path
