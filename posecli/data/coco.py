"""COCO keypoint annotation files and COCO detection-result box files, read and checked.

Boxes come out as MMPose's test dataset makes them (reference README §7 item 1):
ground truth drops crowd and keypoint-less annotations and clips to the image;
detections keep only the person category, cast xywh to float32, then x2 = x + w.
Bad records follow ``records``' policy: ground truth is refused before COCOeval sees it
(a wrong value crashes it or silently moves AP); detector boxes are skipped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posecli.data import records
from posecli.data.records import AREA_PER_BOX_AREA, EMPTY, GROUND_TRUTH_FIX, Problem, Skips
from posecli.errors import UserError
from posecli.fileio import read_json
from posecli.geometry import clip_xyxy, xywh_to_xyxy
from posecli.layouts import Layout, layout_from_names

PERSON = 1


@dataclass
class CocoFile:
    """A COCO keypoint annotation file: the raw dict (for COCOeval) and what evaluation needs of it."""

    path: Path
    data: dict  # the file as read; person annotations checked, iscrowd, num_keypoints and area filled in where absent
    layout: Layout  # recognised from the person category's keypoint names
    images: dict[int, dict]  # image id -> image record (file_name, width, height), in file order


@dataclass
class Boxes:
    """Person boxes to run the model on, in dataset order."""

    image_ids: np.ndarray  # (N,) int64
    ids: np.ndarray  # (N,) int64: annotation id (GT) or running index (detections); sorts instances
    xyxy: np.ndarray  # (N, 4) float32, image px
    scores: np.ndarray  # (N,) float32
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


def read_annotation_file(path: str | Path, what: str = "COCO keypoint annotation file", hint: str = "",
                         needs: tuple[str, ...] = ("images", "annotations", "categories")) -> dict:  # fmt: skip
    """The one reader of COCO-format annotation files: JSON with the lists ``needs`` names, or a UserError."""
    data = read_json(path, what, hint)
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in needs):
        raw = " It looks like AIC's raw release: convert it to COCO format first." if isinstance(data, list) else ""
        raise UserError(f"{path}: not a {what} (it needs the lists {', '.join(repr(k) for k in needs)}).{raw}")
    return data


def keypoint_category(data: dict, path: str | Path) -> tuple[dict, Layout]:
    """The file's one category with keypoint names, and the layout those names are (the one layout detection)."""
    categories = [c for c in data.get("categories") or [] if isinstance(c, dict) and c.get("keypoints")]
    if len(categories) != 1:
        raise UserError(f"{path}: {len(categories)} categories with keypoint names, expected one person category")
    try:
        return categories[0], layout_from_names(categories[0]["keypoints"])
    except ValueError:
        names = categories[0]["keypoints"]
        raise UserError(f"{path}: the keypoints {names[:4]}... are not a known layout (coco, aic or coco-aic); "
                        "remap the file to one") from None  # fmt: skip


def read_coco(path: str | Path) -> CocoFile:
    """Read and check a COCO keypoint annotation file; its layout comes from the person category."""
    path = Path(path)
    data = read_annotation_file(path)
    person, layout = keypoint_category(data, path)
    if person.get("id") != PERSON:
        raise UserError(f"{path}: the keypoint category has id {person.get('id')!r}; COCO's person category is id 1")
    images = {}
    for i, img in enumerate(data["images"]):
        problem = records.image_record(img)
        if problem:
            raise UserError(f"{path}: images[{i}] {problem.detail}")
        if img["id"] in images:
            raise UserError(f"{path}: images[{i}]: image id {img['id']} is used twice; image ids must be unique")
        images[img["id"]] = img
    ids = set()
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not all(k in ann for k in ("id", "image_id", "category_id")):
            raise UserError(f"{path}: annotations[{i}] needs 'id', 'image_id' and 'category_id'")
        problem = records.identifier(ann["id"], "id") or records.identifier(ann["image_id"], "image_id")
        if problem:
            raise UserError(f"{path}: annotations[{i}] {problem.detail}")
        if ann["image_id"] not in images:
            raise UserError(f"{path}: annotations[{i}] (id {ann['id']}) names image {ann['image_id']}, which is not in 'images'")
        if ann["id"] in ids:  # COCOeval indexes annotations by id, and evaluation sorts instances by it
            raise UserError(f"{path}: annotations[{i}]: annotation id {ann['id']} is used twice; annotation ids must be unique")
        ids.add(ann["id"])
        if ann["category_id"] == PERSON:
            problem = ground_truth_problem(ann, layout)
            if problem:
                raise UserError(f"{path}: annotation {ann['id']} (image {ann['image_id']}): {problem.detail}; {GROUND_TRUTH_FIX}")
            ann.setdefault("iscrowd", 0)  # COCO's default, as MMPose reads it
            ann.setdefault("num_keypoints", sum(v > 0 for v in ann["keypoints"][2::3]))  # COCOeval needs it
            # xtcocotools (MMPose's COCOeval) scales OKS by 0.53 x the box area where 'area' is absent (AIC's files)
            ann.setdefault("area", ann["bbox"][2] * ann["bbox"][3] * AREA_PER_BOX_AREA)
    return CocoFile(path, data, layout, images)


def parse_instance(ann: dict, img: dict, layout: Layout, path: str | Path) -> tuple[str | None, np.ndarray, np.ndarray]:
    """A person annotation as MMPose's top-down datasets keep it, for training and for ground-truth boxes alike.

    -> (reason it is left out, or None; (4,) float32 xyxy clipped to the image; (K, 3) float32 x, y, v).
    Left out, as MMPose's ``_is_valid_instance``: no bbox or keypoints, crowd, ``num_keypoints`` 0
    (counted from the coordinates when the field is absent), no box left after clipping, and
    every keypoint x and y <= 0. A malformed record is a UserError naming it.
    """
    if "bbox" not in ann or "keypoints" not in ann:
        return "no bbox or keypoints", None, None
    problem = records.keypoints(ann["keypoints"], layout.keypoints) or records.box_xywh(ann["bbox"])
    if problem is not None and problem.reason == EMPTY:
        problem = None  # an empty box is left out below, as MMPose does
    if problem is None and "num_keypoints" in ann:
        problem = records.number(ann["num_keypoints"], "num_keypoints", minimum=0)
    if problem:
        raise UserError(f"{path}: annotation {ann.get('id')} (image {ann.get('image_id')}): {problem.detail}; {GROUND_TRUTH_FIX}")
    if ann.get("iscrowd", 0):
        return "crowd", None, None
    x, y, w, h = (float(v) for v in ann["bbox"])
    kpts = np.asarray(ann["keypoints"], dtype=np.float32).reshape(layout.num_keypoints, 3)
    labelled = ann["num_keypoints"] if "num_keypoints" in ann else np.count_nonzero(kpts[:, :2].max(axis=1))
    if labelled == 0:
        return "no keypoints", None, None
    # Clipped in float64, then cast: x2 is x + w clipped, not x1 + w.
    xyxy = clip_xyxy(np.array([[x, y, x + w, y + h]]), img["width"], img["height"])[0].astype(np.float32)
    if xyxy[2] - xyxy[0] <= 0 or xyxy[3] - xyxy[1] <= 0:
        return "empty box", None, None
    if kpts[:, :2].max() <= 0:  # MMPose: np.max(keypoints) <= 0 over x and y only, v does not count
        return "no keypoints", None, None
    return None, xyxy, kpts


def ground_truth_problem(ann: dict, layout: Layout) -> Problem | None:
    """What COCOeval could not use in a person annotation: keypoints, bbox, area, num_keypoints, iscrowd."""
    missing = [k for k in ("keypoints", "bbox") if k not in ann]
    if missing:
        return Problem(f"has no {' or '.join(repr(k) for k in missing)}; COCO keypoint evaluation needs keypoints and bbox", "missing field")
    problem = records.keypoints(ann["keypoints"], layout.keypoints) or records.numbers(ann["bbox"], 4, "bbox")
    if problem:
        return problem
    if ann["bbox"][2] < 0 or ann["bbox"][3] < 0:
        return records.box_xywh(ann["bbox"])
    problem = records.number(ann["area"], "area", minimum=0) if "area" in ann else None
    if not problem and "num_keypoints" in ann:
        problem = records.number(ann["num_keypoints"], "num_keypoints", minimum=0)
    if not problem and ann.get("iscrowd", 0) not in (0, 1):
        problem = Problem(f"iscrowd is {records.show(ann['iscrowd'])}, expected 0 or 1", "iscrowd not 0 or 1")
    return problem


def _finish(image_ids, ids, xyxy, scores, skips: Skips, total: int) -> Boxes:
    image_ids = np.asarray(image_ids, np.int64)
    ids = np.asarray(ids, np.int64)
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    with np.errstate(invalid="ignore"):  # float32 can round a tiny width to 0
        empty = ~((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]))
    for i in np.flatnonzero(empty):
        skips.add(f"box {ids[i]} (image {image_ids[i]})", Problem(f"no width or height left after clipping to the image and casting to float32 ({xyxy[i].tolist()})", EMPTY))
    keep = ~empty
    if not keep.any():
        raise UserError(f"{skips.source}: no usable person boxes" + (f"; {skips.summary(total)}" if len(skips) else ""))
    summary = skips.summary(total)
    return Boxes(image_ids[keep], ids[keep], xyxy[keep], scores[keep], [summary] if summary else [])


def gt_boxes(coco: CocoFile) -> Boxes:
    """Ground-truth person boxes (score 1), image by image in file order, as MMPose's test set
    (the persons ``parse_instance`` keeps, as for training).

    A box with no area inside its image is skipped with a warning; its person stays in the
    ground truth (and counts as missed), as in MMPose.
    """
    by_image: dict[int, list[dict]] = {i: [] for i in coco.images}
    for ann in coco.data["annotations"]:
        if ann["category_id"] == PERSON:
            by_image[ann["image_id"]].append(ann)
    skips = Skips(str(coco.path), "ground-truth boxes", "Their persons stay in the ground truth and count as missed")
    image_ids, ids, xyxy, total = [], [], [], 0
    for image_id, anns in by_image.items():
        img = coco.images[image_id]
        for ann in anns:
            reason, box, _ = parse_instance(ann, img, coco.layout, coco.path)
            if reason in ("crowd", "no keypoints", "no bbox or keypoints"):
                continue
            total += 1
            if reason:  # negative sizes were refused by read_coco: these are empty or off the image
                skips.add(f"annotation {ann['id']} (image {image_id})",
                          records.box_xywh(ann["bbox"], image_size=(img["width"], img["height"])))  # fmt: skip
                continue
            image_ids.append(image_id)
            ids.append(ann["id"])
            xyxy.append(box)
    return _finish(image_ids, ids, xyxy, np.ones(len(ids), np.float32), skips, total)


@dataclass
class Detections:
    """The usable person boxes of a COCO detection-results file, in file order."""

    image_ids: list  # image id of each box, as written in the file
    xywh: list[list]  # (N, 4) as written
    scores: list[float]
    indices: list[int]  # each box's entry number in the file
    skips: Skips  # bad entries, skipped
    entries: int  # person entries in the file


def read_detection_file(path: str | Path, image_sizes: dict | None = None, min_score: float | None = None) -> Detections:
    """``[{image_id, category_id, bbox: xywh, score}, ...]`` -> the person boxes; bad entries skipped and counted.

    ``image_sizes`` (image id -> (width, height)) makes entries for other images bad, and boxes
    outside their image too. Boxes of other categories and below ``min_score`` are left out.
    """
    path = Path(path)
    dets = read_json(path, "COCO-format detection file")
    if not isinstance(dets, list):
        raise UserError(f"{path}: a detection file is a JSON list of {{image_id, category_id, bbox, score}}, "
                        f"this one is {records.json_type(dets)}")  # fmt: skip
    out = Detections([], [], [], [], Skips(str(path), "detector boxes"), 0)
    for i, det in enumerate(dets):
        if not isinstance(det, dict) or not all(k in det for k in ("image_id", "category_id", "bbox", "score")):
            out.skips.add(f"entry {i}", Problem(f"not a detection (needs image_id, category_id, bbox, score): {records.show(det)}",
                                                "not a detection"))  # fmt: skip
            out.entries += 1
            continue
        if det["category_id"] != PERSON:
            continue
        out.entries += 1
        where, bbox = f"entry {i} (image {records.show(det['image_id'], 20)})", det["bbox"]
        problem = records.identifier(det["image_id"], "image_id")
        if problem:
            out.skips.add(f"entry {i}", problem)
            continue
        if image_sizes is not None and det["image_id"] not in image_sizes:
            out.skips.add(where, Problem(f"image {records.show(det['image_id'], 20)} is not in the annotation file", "image not in the annotations"))
            continue
        bbox = bbox[:4] if type(bbox) is list and len(bbox) > 4 else bbox  # MMPose reads bbox[:4]
        size = image_sizes[det["image_id"]] if image_sizes is not None else None
        problem = records.box_xywh(bbox, image_size=size) or records.number(det["score"], "score")
        if problem:
            out.skips.add(where, problem)
            continue
        if min_score is not None and not det["score"] >= min_score:
            continue
        out.image_ids.append(det["image_id"])
        out.xywh.append(bbox)
        out.scores.append(det["score"])
        out.indices.append(i)
    return out


def read_detections(path: str | Path, coco: CocoFile, min_score: float | None = None) -> Boxes:
    """Person boxes from a COCO detection-results file for the images of ``coco``."""
    sizes = {image_id: (img["width"], img["height"]) for image_id, img in coco.images.items()}
    dets = read_detection_file(path, sizes, min_score)
    if not dets.scores and not len(dets.skips):
        raise UserError(f"{path}: no person detections (category_id 1)"
                        + (f" with score >= {min_score}" if min_score is not None else ""))  # fmt: skip
    xyxy = xywh_to_xyxy(np.array(dets.xywh, dtype=np.float64))
    ids = np.arange(len(dets.scores))  # file order: MMPose numbers detections as it reads them
    return _finish(dets.image_ids, ids, xyxy, dets.scores, dets.skips, dets.entries)
