"""``posecli predict``: keypoints for images, folders, globs, videos, cameras and streams, as JSON and drawn copies.

inputs -> images, videos and live streams [sources.expand_inputs]
each image / frame -> person boxes (det file, detector, the previous frame's keypoints, or the whole image) [BoxFinder]
  -> keypoints through the shared inference path [Predictor.predict_image]
  -> instance scores and OKS NMS as eval [rescore, select_instances] -> track ids across frames [track.assign_ids]
  -> records (box xywh, box score, [x, y, score] * K, instance score, track id) [person_records]
out/: predictions.json, a drawn copy of each image, and per video or stream a drawn .mp4 plus <name>.jsonl.

Files (images, video files) are written as one unit (``fileio.one_unit``): a run that fails leaves
the previous outputs. A live source has no end, so its .jsonl is written in place line by line
(flushed every frame) and its drawn video is closed on any exit. Ctrl-C is a stop, not a failure:
the run ends after the current frame and writes everything done so far, predictions.json included.
"""

from __future__ import annotations

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
from posecli.engine.cocometric import rescore, select_instances
from posecli.engine.detect import make_detector
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.engine.sources import IMAGE_EXTS, Inputs, describe, expand_inputs, frame_count, open_video
from posecli.engine.track import People, assign_ids, boxes_from_keypoints
from posecli.errors import UserError, option
from posecli.fileio import atomic_path, one_unit, read_json, write_bytes, write_json
from posecli.geometry import box_center_scale, fix_aspect_ratio, xywh_to_xyxy, xyxy_to_xywh

FORMATS = ("posecli", "mmpose")


@dataclass
class Boxes:
    xyxy: np.ndarray  # (N, 4) float32, image px
    scores: np.ndarray  # (N,) float32
    source: str  # where they came from, as the output reports it
    entries: np.ndarray | None = None  # (N,) the det file's entry number of each box, if from one
    whole: bool = False  # the whole image as one box because nobody was found: its score is no detector's


def no_boxes(source: str) -> Boxes:
    return Boxes(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), source, np.zeros(0, np.int64))


def whole_image(image: np.ndarray, why: str) -> Boxes:
    """The image as one box; score 1 so that the person's score is the mean of its confident keypoints' scores."""
    h, w = image.shape[:2]
    return Boxes(np.array([[0, 0, w, h]], np.float32), np.ones(1, np.float32), f"whole image ({why})", whole=True)


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
                        "(000000000785.jpg -> 785) or give the annotations that name them ({option('ann')})")  # fmt: skip
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


def person_records(boxes: Boxes, keypoints: np.ndarray, scores: np.ndarray, instance: np.ndarray | None = None,
                   track_ids: np.ndarray | None = None) -> list[dict]:  # fmt: skip
    """Boxes and their keypoints (N, K, 2), scores (N, K) -> posecli's JSON-ready records.

    A whole-image box has no detector score: its ``box_score`` is null and the person's score is
    the mean of its confident keypoint scores.
    """
    if len(keypoints) == 0:  # an image with no person box: no people
        return []
    xywh = xyxy_to_xywh(boxes.xyxy)
    flat = np.concatenate([keypoints, scores[..., None]], -1).reshape(len(keypoints), -1)
    inst = rescore(boxes.scores, scores) if instance is None else instance  # eval's bbox_keypoint score
    records = []
    for i in range(len(keypoints)):
        record = {"box": [float(v) for v in xywh[i]], "box_score": None if boxes.whole else float(boxes.scores[i]),
                  "keypoints": [float(v) for v in flat[i]], "score": float(inst[i])}  # fmt: skip
        if track_ids is not None:
            record["track_id"] = int(track_ids[i])
        records.append(record)
    return records


def mmpose_instances(boxes: Boxes, keypoints: np.ndarray, scores: np.ndarray, track_ids: np.ndarray | None = None) -> list[dict]:
    """The same people as MMPose's inferencer writes them: keypoints [[x, y]] * K, keypoint_scores, bbox, bbox_score."""
    out = []
    for i in range(len(keypoints)):
        # bbox is a list holding one [x1, y1, x2, y2]: MMPose's split_instances builds a 1-tuple there;
        # a whole-image box scores 1.0, as MMPose's inferencer scores its own whole-image box
        inst = {"keypoints": keypoints[i].tolist(), "keypoint_scores": scores[i].tolist(),
                "bbox": [boxes.xyxy[i].tolist()], "bbox_score": float(boxes.scores[i])}  # fmt: skip
        if track_ids is not None:
            inst["track_id"] = int(track_ids[i])
        out.append(inst)
    return out


@dataclass
class PredictConfig:
    inputs: list[str]
    weights: Path
    out: Path
    boxes: Path | None = None  # COCO detection results
    ann: Path | None = None  # COCO annotations naming the det file's image ids
    detector: str = "hog"  # hog | none | FILE.onnx
    inference: InferenceSettings = InferenceSettings()
    min_box_score: float = 0.0  # eval's default
    nms: str = "oks"  # oks | soft_oks | none, per image, as eval
    nms_thr: float = 0.9
    min_keypoint_score: float = 0.3  # drawing only; the JSON keeps every keypoint
    draw: bool = True
    recursive: bool = False  # folders: their subfolders too
    max_frames: int | None = None  # per video or stream: stop after this many processed frames
    every: int = 1  # videos and streams: process every Nth frame
    track: bool = False  # videos and streams: a track_id per person across frames
    track_by: str = "oks"  # oks | iou
    det_every: int = 1  # videos and streams: the detector on every Nth processed frame, else boxes from the last keypoints
    format: str = "posecli"  # posecli | mmpose (MMPose's inferencer JSON beside the drawn files)

    def __post_init__(self):
        for name in ("every", "det_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise UserError(f"{name.replace('_', ' ')} ({option(name)}) {getattr(self, name)!r}: must be a positive whole number")
        if self.max_frames is not None and self.max_frames < 1:
            raise UserError(f"max frames ({option('max_frames')}) {self.max_frames}: must be a positive whole number")
        if self.format not in FORMATS:
            raise UserError(f"format ({option('format')}) {self.format!r}: use one of {', '.join(FORMATS)}")


@dataclass
class Summary:
    predictions: Path
    box_source: str
    images: int = 0
    frames: int = 0
    people: int = 0
    whole_image: int = 0  # images / frames where the whole image served as the box
    detector_runs: int = 0  # frames whose boxes came from the detector (or det file), not the last keypoints
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C; what was done is written
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Frame:
    """One image or frame's result; ``people`` carries what the next frame needs (tracking, boxes)."""

    record: dict
    drawn: np.ndarray | None
    people: People
    box_scores: np.ndarray  # (N,)
    whole: bool
    instances: list[dict]  # MMPose's form


def predict(cfg: PredictConfig, progress: Callable[[int, int], None] = lambda done, total: None,
            warn: Callable[[str], None] = lambda message: None) -> Summary:  # fmt: skip
    """Run the whole job; ``progress(done, total)`` counts images plus video frames (total 0: unknown, a live
    source), ``warn`` gets skipped inputs.

    The drawn files, .jsonl files and predictions.json of files are one unit (``fileio.one_unit``): if
    the job fails anywhere, none of them is renamed into place and the previous outputs stay as they
    were. Live sources write in place as they go (module docstring). Ctrl-C ends the job cleanly.
    """
    with one_unit():
        return _predict(cfg, progress, warn)


class _Job:
    """What every image and frame of one run shares."""

    def __init__(self, cfg: PredictConfig, predictor: Predictor, find_boxes: "BoxFinder", summary: Summary):
        self.cfg, self.predictor, self.find_boxes, self.summary = cfg, predictor, find_boxes, summary
        self.sigmas = np.asarray(predictor.layout.sigmas[: predictor.num_keypoints], np.float32)

    def frame(self, image: np.ndarray, path: Path | None, previous: Frame | None = None,
              reuse_boxes: bool = False, next_id: int | None = None) -> tuple[Frame, int | None]:  # fmt: skip
        """One image or frame -> its result and, when tracking, the next unused track id.

        ``reuse_boxes``: boxes from ``previous``'s keypoints instead of the detector (between detector frames).
        """
        cfg, h, w = self.cfg, image.shape[0], image.shape[1]
        carried = None  # track ids that come with the boxes: a box from a person's keypoints holds that person
        if reuse_boxes and previous is not None and len(previous.people) and not previous.whole:
            boxes = Boxes(boxes_from_keypoints(previous.people, w, h), previous.box_scores, "the previous frame's keypoints")
            carried = previous.people.ids
        else:
            boxes = self.find_boxes(image, path)
            self.summary.detector_runs += 1
        keypoints, scores = self.predictor.predict_image(image, boxes.xyxy)
        instance = rescore(boxes.scores, scores)  # eval's bbox_keypoint score (MMPose's threshold 0.2)
        keep = self._nms(boxes, keypoints, instance)
        boxes = Boxes(boxes.xyxy[keep], boxes.scores[keep], boxes.source, None, boxes.whole)
        keypoints, scores, instance = keypoints[keep], scores[keep], instance[keep]
        people = People(keypoints, scores, boxes.xyxy)
        if next_id is not None and carried is not None:
            people.ids = carried[keep]
        elif next_id is not None:  # tracking
            people.ids, next_id = assign_ids(previous.people if previous else None, people, next_id, cfg.track_by, self.sigmas)
        self.summary.people += len(keypoints)
        self.summary.whole_image += boxes.whole
        record = {"width": w, "height": h, "box_source": boxes.source,
                  "people": person_records(boxes, keypoints, scores, instance, people.ids)}  # fmt: skip
        drawn = None
        if cfg.draw:
            labels = ["whole image" if boxes.whole else f"{s:.2f}" for s in boxes.scores]
            if people.ids is not None:
                labels = [f"#{i} {label}" for i, label in zip(people.ids, labels)]
            drawn = draw_people(image, self.predictor.layout, keypoints, scores, boxes.xyxy, boxes.scores,
                                cfg.min_keypoint_score, labels=labels, track_ids=people.ids)  # fmt: skip
        instances = mmpose_instances(boxes, keypoints, scores, people.ids) if cfg.format == "mmpose" else []
        return Frame(record, drawn, people, boxes.scores, boxes.whole, instances), next_id

    def _nms(self, boxes: Boxes, keypoints: np.ndarray, instance: np.ndarray) -> np.ndarray:
        """Indices of the people eval's per-image NMS keeps, in box order."""
        if self.cfg.nms == "none" or len(keypoints) < 2:
            return np.arange(len(keypoints))
        (w, h), (_, padded) = self.predictor.codec.input_size, box_center_scale(boxes.xyxy)
        crop_wh = fix_aspect_ratio(padded, w / h)  # eval's instance area: the aspect-fixed crop
        n = len(keypoints)
        keep = select_instances(np.zeros(n, np.int64), np.arange(n), keypoints, instance, crop_wh[:, 0] * crop_wh[:, 1],
                                self.sigmas, str(self.cfg.nms), self.cfg.nms_thr)  # fmt: skip
        return np.sort(keep)


def _predict(cfg: PredictConfig, progress: Callable[[int, int], None], warn: Callable[[str], None]) -> Summary:
    inputs = expand_inputs(cfg.inputs, cfg.recursive)
    summary = Summary(cfg.out / "predictions.json", "")

    def note(message: str) -> None:
        summary.warnings.append(message)
        warn(message)

    for message in inputs.problems:
        note(message)
    if not inputs.images and not inputs.videos and not inputs.streams:
        raise UserError("nothing to predict: " + "; ".join(inputs.problems))
    if cfg.boxes is not None and (inputs.videos or inputs.streams):
        first = (inputs.videos + inputs.streams)[0]
        raise UserError(f"a detection file ({option('boxes')}) gives boxes for images, not for videos or streams "
                        f"({describe(first)}); use a detector ({option('detector')}) for those")
    names = output_names(inputs, cfg.out)
    skips = Skips(str(cfg.boxes), "detector boxes") if cfg.boxes is not None else None
    det_boxes = read_det_file(cfg.boxes, inputs.images, cfg.ann, skips) if cfg.boxes is not None else None
    detector = make_detector(cfg.detector) if det_boxes is None else None
    find_boxes = BoxFinder(det_boxes, detector, cfg.min_box_score, skips)
    summary.box_source = find_boxes.describe()
    job = _Job(cfg, Predictor.from_weights(cfg.weights, cfg.inference), find_boxes, summary)

    known = [frame_count(v) for v in inputs.videos]
    total = 0 if inputs.streams else len(inputs.images) + sum(min(n // cfg.every + (n % cfg.every > 0), cfg.max_frames or n) for n in known)
    done, start = 0, time.perf_counter()

    def advance() -> None:
        nonlocal done
        done += 1
        progress(done, max(total, done) if total else 0)  # a video's frame count in its header is only an estimate

    image_records = []
    try:
        for path in inputs.images:
            image, problem = decode_image(path)  # the check training and eval make, then OpenCV's decode
            if image is None:
                note(f"{path}: not a readable image; skipped ({problem})")
            else:
                result, _ = job.frame(image, path)
                image_records.append({"file": str(path), "drawn": names[path] if cfg.draw else None, **result.record})
                if result.drawn is not None:
                    summary.written.append(write_image(cfg.out / names[path], result.drawn))
                if cfg.format == "mmpose":  # MMPose's inferencer writes <image stem>.json, a list of instances
                    write_json(cfg.out / (Path(names[path]).stem + ".json"), result.instances)
                    summary.written.append(cfg.out / (Path(names[path]).stem + ".json"))
                summary.images += 1
            advance()
    except KeyboardInterrupt:
        summary.interrupted = True

    video_records = []
    for source in inputs.videos + inputs.streams:
        if summary.interrupted:
            break
        video = _predict_video(job, source, names[source], advance, note)
        if video is not None:
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
    if summary.images + summary.frames == 0 and not summary.interrupted:
        raise UserError("nothing could be processed: " + "; ".join(summary.warnings))

    layout = job.predictor.layout
    write_json(summary.predictions, {
        "weights": str(cfg.weights), "arch": job.predictor.info.arch, "layout": layout.name,
        "keypoint_names": list(layout.keypoints[: job.predictor.num_keypoints]), "flip": cfg.inference.flip,
        "decode": str(cfg.inference.decode), "nms": str(cfg.nms), "nms_thr": cfg.nms_thr,
        "boxes": summary.box_source, "min_box_score": cfg.min_box_score, "format": cfg.format,
        "whole_image": summary.whole_image, "interrupted": summary.interrupted,
        "images": image_records, "videos": video_records, "warnings": summary.warnings,
    })  # fmt: skip
    summary.written.append(summary.predictions)
    return summary


def _predict_video(job: _Job, source: Path | str | int, name: str, advance: Callable[[], None],
                   note: Callable[[str], None]) -> dict | None:  # fmt: skip
    """The frames of a video file or live source -> <stem>.jsonl (one line per processed frame) and the drawn
    ``name`` (mp4v); None (with a note) if it cannot be opened."""
    cfg, summary = job.cfg, job.summary
    video, why = open_video(source)
    if video is None:
        note(why + "; skipped")
        return None
    live = not isinstance(source, Path)
    if not video.fps_known:
        note(f"{describe(source)}: no frame rate given; times and the drawn video use {video.fps:g} frames/s")
    size = (video.first.shape[1], video.first.shape[0])
    jsonl = cfg.out / (Path(name).stem + ".jsonl")
    fps_out = video.fps / cfg.every
    if live:  # no end to wait for: written in place, a line per frame
        lines_file, drawn_video = _live_lines(jsonl), (_live_video(cfg.out / name, fps_out, size) if cfg.draw else nullcontext())
    else:
        lines_file, drawn_video = _atomic_lines(jsonl), (atomic_video(cfg.out / name, fps_out, size) if cfg.draw else nullcontext())
    index, processed, previous, next_id = 0, 0, None, (0 if cfg.track else None)
    frame = video.first
    try:
        with lines_file as lines, drawn_video as writer:
            try:
                while frame is not None:
                    if index % cfg.every == 0:
                        reuse = processed % cfg.det_every != 0
                        previous, next_id = job.frame(frame, None, previous, reuse, next_id)
                        if cfg.format == "mmpose":
                            line = {"frame_id": index, "instances": previous.instances}
                        else:
                            line = {"frame": index, "time": index / video.fps, **previous.record}
                        lines.write(json.dumps(line) + "\n")
                        if live:
                            lines.flush()  # what a live source gave is on disk as it comes
                        if writer is not None:
                            writer.write(previous.drawn)
                        processed += 1
                        summary.frames += 1
                        advance()
                        if cfg.max_frames is not None and processed >= cfg.max_frames:
                            break
                    index += 1
                    ok, frame = video.capture.read()
                    frame = frame if ok else None
            except KeyboardInterrupt:  # a stop, not a failure: this video's frames so far are kept
                summary.interrupted = True
    finally:
        video.capture.release()
    summary.written += [cfg.out / name] * cfg.draw + [jsonl]
    if cfg.format == "mmpose" and not live:  # as MMPose's inferencer writes a video: one JSON list of {frame_id, instances}
        written = Path(lines.name) if Path(lines.name).exists() else jsonl  # the temp, until the unit renames it
        summary.written.append(_json_list(written, cfg.out / (Path(name).stem + ".json")))
    return {"file": describe(source), "live": live, "drawn": name if cfg.draw else None, "jsonl": jsonl.name,
            "frames": processed, "fps": video.fps, "every": cfg.every, "width": size[0], "height": size[1]}  # fmt: skip


def _json_list(lines: Path, path: Path) -> Path:
    """JSON lines -> one JSON list in ``path``, line by line (a long video's frames never all in memory)."""
    with atomic_path(path) as tmp, open(tmp, "w") as out, open(lines) as source:
        out.write("[")
        for i, line in enumerate(source):
            out.write(("," if i else "") + line.strip())
        out.write("]")
    return path


@contextmanager
def _atomic_lines(path: Path):
    with atomic_path(path) as tmp, open(tmp, "w") as lines:
        yield lines


@contextmanager
def _live_lines(path: Path):
    with open(path, "w") as lines:
        yield lines


@contextmanager
def atomic_video(path: Path, fps: float, size: tuple[int, int]):
    """An mp4v ``cv2.VideoWriter`` on a temp file beside ``path``, renamed onto it only if the block succeeds."""
    with atomic_path(path) as tmp:  # the temp name keeps .mp4: OpenCV picks the container from it
        with _live_video(path, fps, size, tmp) as writer:
            yield writer


@contextmanager
def _live_video(path: Path, fps: float, size: tuple[int, int], tmp: Path | None = None):
    """An mp4v ``cv2.VideoWriter`` on ``tmp`` (default ``path``), released (the file finished) on any exit."""
    writer = cv2.VideoWriter(str(tmp or path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    try:
        if not writer.isOpened():
            raise UserError(f"{path}: OpenCV cannot write an mp4v video here; without drawing ({option('draw')}) the JSON is written")
        yield writer
    finally:
        writer.release()


def output_names(inputs: Inputs, out: Path) -> dict:
    """A distinct file name in ``out`` for each input's drawn copy (videos and streams become .mp4), never an input itself."""
    names, used = {}, {"predictions"}
    for source in inputs.images + inputs.videos + inputs.streams:
        if isinstance(source, Path):
            stem, suffix = source.stem, (".mp4" if source in inputs.videos else source.suffix)
        else:  # camera 0 -> camera0.mp4; rtsp://host/live/cam1 -> cam1.mp4
            stem = f"camera{source}" if isinstance(source, int) else (Path(str(source).split("?")[0].rstrip("/")).stem or "stream")
            stem, suffix = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem), ".mp4"
        name, n = stem + suffix, 1
        # a video's .jsonl (and MMPose's .json) share its stem, so stems must be distinct too
        while name.lower() in used or Path(name).stem.lower() in used:
            n += 1
            name = f"{stem}_{n}{suffix}"
        used |= {name.lower(), Path(name).stem.lower()}
        names[source] = name
        if isinstance(source, Path) and (out / name).resolve() == source.resolve():
            raise UserError(f"output ({option('out')}) {out} would overwrite the input {source}; choose another output folder")
    return names


def write_image(path: Path, image: np.ndarray) -> Path:
    """Encode by the file's extension and write atomically."""
    ok, data = cv2.imencode(path.suffix if path.suffix.lower() in IMAGE_EXTS else ".png", image)
    if not ok:
        raise UserError(f"{path}: OpenCV cannot encode a {path.suffix} image")
    write_bytes(path, data.tobytes())  # not ndarray.tofile: a full disk would lose its errno there
    return path
