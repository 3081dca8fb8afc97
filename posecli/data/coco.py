"""COCO keypoint annotation files and COCO detection-result box files, read and checked.

Boxes come out as MMPose's test dataset makes them (reference README §7 item 1):
ground truth drops crowd and keypoint-less annotations and clips to the image;
detections keep only the person category, cast xywh to float32, then x2 = x + w.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posecli.errors import UserError
from posecli.fileio import read_json
from posecli.geometry import clip_xyxy, xywh_to_xyxy
from posecli.layouts import Layout, layout_from_names

PERSON = 1


@dataclass
class CocoFile:
    """A COCO keypoint annotation file: the raw dict (for COCOeval) and what evaluation needs of it."""

    path: Path
    data: dict  # the file as read
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



def read_coco(path: str | Path) -> CocoFile:
    """Read and check a COCO keypoint annotation file; its layout comes from the person category."""
    path = Path(path)
    data = read_json(path, "COCO-format annotation file")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"{path}: not a COCO annotation file (needs lists 'images', 'annotations' and 'categories')")
    person = next((c for c in data["categories"] if isinstance(c, dict) and c.get("id") == PERSON), None)
    if person is None or not person.get("keypoints"):
        raise UserError(f"{path}: no category with id 1 and 'keypoints'; a COCO keypoint file has one person category")
    try:
        layout = layout_from_names(person["keypoints"])
    except ValueError:
        raise UserError(f"{path}: the person category's keypoints {person['keypoints'][:4]}... are not a known layout "
                        "(coco, aic or coco-aic); convert the file with `posecli convert remap`") from None  # fmt: skip
    images = {}
    for i, img in enumerate(data["images"]):
        if not isinstance(img, dict) or not all(k in img for k in ("id", "file_name", "width", "height")):
            raise UserError(f"{path}: images[{i}] needs 'id', 'file_name', 'width' and 'height'")
        images[img["id"]] = img
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not all(k in ann for k in ("id", "image_id", "category_id")):
            raise UserError(f"{path}: annotations[{i}] needs 'id', 'image_id' and 'category_id'")
        if ann["image_id"] not in images:
            raise UserError(f"{path}: annotations[{i}] (id {ann['id']}) names image {ann['image_id']}, which is not in 'images'")
    return CocoFile(path, data, layout, images)


def _bad_box(xyxy: np.ndarray) -> np.ndarray:
    """(N, 4) -> (N,) True where a box is not finite or has no positive width and height."""
    finite = np.isfinite(xyxy).all(axis=1)
    with np.errstate(invalid="ignore"):
        return ~finite | ~((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]))


def _finish(image_ids, ids, xyxy, scores, source: str, kind: str) -> Boxes:
    image_ids = np.asarray(image_ids, np.int64)
    ids = np.asarray(ids, np.int64)
    xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32)
    bad = _bad_box(xyxy) | ~np.isfinite(scores)
    warnings = []
    if bad.any():
        warnings.append(f"{source}: skipped {int(bad.sum())} {kind} with a non-finite value or no positive width/height")
    keep = ~bad
    if not keep.any():
        raise UserError(f"{source}: no usable person boxes; check that the file holds person ({kind}) boxes")
    return Boxes(image_ids[keep], ids[keep], xyxy[keep], scores[keep], warnings)


def gt_boxes(coco: CocoFile) -> Boxes:
    """Ground-truth person boxes (score 1), image by image in file order, as MMPose's test set."""
    by_image: dict[int, list[dict]] = {i: [] for i in coco.images}
    for ann in coco.data["annotations"]:
        if ann["category_id"] == PERSON:
            by_image[ann["image_id"]].append(ann)
    image_ids, ids, xyxy = [], [], []
    for image_id, anns in by_image.items():
        img = coco.images[image_id]
        for ann in anns:
            if ann.get("iscrowd", 0) or ann.get("num_keypoints", 1) == 0 or "bbox" not in ann:
                continue
            if not (isinstance(ann["bbox"], list) and len(ann["bbox"]) == 4):
                raise UserError(f"{coco.path}: annotation {ann['id']} has bbox {str(ann['bbox'])[:60]}; expected [x, y, w, h]")
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = clip_xyxy(np.array([[x, y, x + w, y + h]]), img["width"], img["height"])  # in float64, then cast
            image_ids.append(image_id)
            ids.append(ann["id"])
            xyxy.append(box[0].astype(np.float32))
    return _finish(image_ids, ids, xyxy, np.ones(len(ids), np.float32), str(coco.path), "ground-truth boxes")


def read_detections(path: str | Path, coco: CocoFile, min_score: float | None = None) -> Boxes:
    """Person boxes from a COCO detection-results file: ``[{image_id, category_id, bbox: xywh, score}, ...]``."""
    path = Path(path)
    dets = read_json(path, "COCO-format detection file")
    if not isinstance(dets, list):
        raise UserError(f"{path}: a detection file is a JSON list of {{image_id, category_id, bbox, score}}, "
                        f"this one is a {type(dets).__name__}")  # fmt: skip
    image_ids, ids, xywh, scores = [], [], [], []
    for i, det in enumerate(dets):
        if not isinstance(det, dict) or not all(k in det for k in ("image_id", "category_id", "bbox", "score")):
            raise UserError(f"{path}: entry {i} is not a detection (needs image_id, category_id, bbox, score): {str(det)[:80]}")
        bbox = det["bbox"]
        if not (isinstance(bbox, list) and len(bbox) >= 4 and all(isinstance(v, (int, float)) for v in bbox[:4])):
            raise UserError(f"{path}: entry {i} has bbox {str(bbox)[:60]}; expected [x, y, w, h]")
        if not isinstance(det["score"], (int, float)) or isinstance(det["score"], bool):
            raise UserError(f"{path}: entry {i} has score {det['score']!r}; expected a number")
        if det["category_id"] != PERSON:
            continue
        if det["image_id"] not in coco.images:
            raise UserError(f"{path}: entry {i} names image {det['image_id']}, which is not in {coco.path}; "
                            "are the detections for this annotation file?")  # fmt: skip
        if min_score is not None and not det["score"] >= min_score:  # NaN scores go too
            continue
        image_ids.append(det["image_id"])
        ids.append(len(ids))  # file order: MMPose numbers detections as it reads them
        xywh.append(bbox[:4])
        scores.append(det["score"])
    if not scores:
        raise UserError(f"{path}: no person detections (category_id 1)"
                        + (f" with score >= {min_score}" if min_score is not None else ""))  # fmt: skip
    xyxy = xywh_to_xyxy(np.array(xywh, dtype=np.float64))
    return _finish(image_ids, ids, xyxy, scores, str(path), "detector boxes")
