"""AI Challenger's raw keypoint release -> COCO keypoint format, as MMPose's ``aic_train.json``.

The raw file is a list with one entry per image::

    {"image_id": "054d...", "url": "http://...",
     "keypoint_annotations": {"human1": [x, y, v] * 14, ...},   # v: 1 visible, 2 occluded, 3 unlabelled
     "human_annotations": {"human1": [x1, y1, x2, y2], ...}}

The hot loop is plain lists and dicts: 378,000 persons convert in seconds.
"""

from __future__ import annotations

import gc
import math
import os
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from posecli.data import records
from posecli.data.records import AREA_PER_BOX_AREA
from posecli.data.images import image_size as read_image_size
from posecli.errors import UserError, option
from posecli.fileio import read_json, write_json
from posecli.layouts import get_layout

AIC = get_layout("aic")
# MMPose's aic_train.json spells the names for display; remap reads them back by normalising.
MMPOSE_AIC_NAMES = (
    "Right Shoulder", "Right Elbow", "Right Wrist", "Left Shoulder", "Left Elbow", "Left Wrist",
    "Right Hip", "Right Knee", "Right Ankle", "Left Hip", "Left Knee", "Left Ankle", "Head top", "Neck",
)  # fmt: skip
NUM_VALUES = 3 * AIC.num_keypoints
AIC_TO_COCO_VISIBILITY = {1: 2, 2: 1, 3: 0}
AIC_VISIBILITY = {1: "visible", 2: "occluded", 3: "unlabelled"}
AIC_UNLABELLED = 3


@dataclass
class ConversionSummary:
    images: int
    persons: int
    labelled: dict[str, int]  # keypoint name -> persons with it labelled (COCO visibility 1 or 2)
    visible: dict[str, int]  # keypoint name -> persons with it visible (COCO visibility 2)
    skipped: dict[str, int] = field(default_factory=dict)  # why -> records dropped by skip_invalid
    missing_images: list[str] = field(default_factory=list)  # not found or unreadable under images_dir
    sizes: bool = False  # whether images carry width and height


def load_raw(path: str | os.PathLike) -> list:
    """Read AIC's raw annotation file: a JSON list of image entries."""
    raw = read_json(path, "AIC raw annotation file (keypoint_annotations_*.json)")
    if not isinstance(raw, list):
        hint = " It looks like a COCO file already: use `posecli convert remap`." if isinstance(raw, dict) and "annotations" in raw else ""
        raise UserError(f"{path}: the top level is a JSON {type(raw).__name__}, expected a list with one entry per image, as in AIC's raw release.{hint}")
    return raw


def convert_aic(raw: list, source: str = "<raw>", images_dir: str | os.PathLike | None = None, skip_invalid: bool = False) -> tuple[dict, ConversionSummary]:
    """Raw AIC entries -> (COCO keypoint dict, summary); ``source`` names the file in errors.

    Images get ids 1, 2, ... in file order; persons are taken human1, human2, ..., human10.
    With ``images_dir`` width and height are read from the image headers.
    """
    images, annotations = [], []
    skipped: Counter[str] = Counter()
    missing: list[str] = []
    patterns: Counter[tuple] = Counter()  # raw visibility tuples -> persons; per-keypoint counts at the end
    converted: dict[tuple, tuple] = {}  # raw visibility tuple -> _coco_visibility of it

    def reject(where: str, problem: str, reason: str) -> None:
        if not skip_invalid:
            raise UserError(f"{source}: {where}: {problem}. Fix the record, or skip invalid records ({option('skip_invalid')}).")
        skipped[reason] += 1

    if images_dir is not None and not Path(images_dir).is_dir():
        raise UserError(f"image folder ({option('images_dir')}) {images_dir}: not a directory; give the folder holding the AIC .jpg files")

    for index, entry in enumerate(raw):
        problem = _entry_problem(entry)
        if problem:
            name = entry.get("image_id") if isinstance(entry, dict) else None
            reject(f"entry #{index}" + (f" (image {name})" if isinstance(name, str) else ""), problem, "malformed image entry")
            continue
        image_name = entry["image_id"]
        # Keys in MMPose's order: url, file_name, height, width, id.
        image = {"url": entry["url"]} if "url" in entry else {}
        image["file_name"] = image_name + ".jpg"
        if images_dir is not None:
            size = read_image_size(Path(images_dir) / image["file_name"])
            if size is None:
                missing.append(image["file_name"])
            else:
                image["height"], image["width"] = size[1], size[0]
        image["id"] = len(images) + 1
        images.append(image)
        size = (image["width"], image["height"]) if "width" in image else None

        all_keypoints, boxes = entry["keypoint_annotations"], entry["human_annotations"]
        for human in sorted(all_keypoints.keys() | boxes.keys(), key=_human_order):
            keypoints, box = all_keypoints.get(human), boxes.get(human)
            problem, reason = _human_problem(keypoints, box, size)
            if problem:
                reject(f"image {image_name}, {human}", problem, reason)
                continue
            visibility = tuple(keypoints[2::3])
            patterns[visibility] += 1
            # Few visibility patterns recur among many persons: convert each once.
            if visibility not in converted:
                converted[visibility] = _coco_visibility(visibility)
            coco_visibility, unlabelled = converted[visibility]
            coco_keypoints = keypoints[:]
            coco_keypoints[2::3] = coco_visibility
            for k in unlabelled:
                coco_keypoints[3 * k] = coco_keypoints[3 * k + 1] = 0
            x1, y1, x2, y2 = box
            w, h = x2 - x1, y2 - y1
            annotations.append({
                "bbox": [x1, y1, w, h],
                "keypoints": coco_keypoints,
                "num_keypoints": AIC.num_keypoints - len(unlabelled),
                "image_id": image["id"],
                "category_id": 1,
                "id": len(annotations) + 1,
                "area": w * h * AREA_PER_BOX_AREA,
                "iscrowd": 0,
            })  # fmt: skip

    category = {**AIC.coco_category_dict(), "keypoints": list(MMPOSE_AIC_NAMES)}
    coco = {
        "info": {"description": "AI Challenger keypoints, converted by posecli convert aic", "version": "1.0"},
        "licenses": [],
        "categories": [category],
        "images": images,
        "annotations": annotations,
    }
    labelled, visible = _count_by_keypoint(patterns)
    summary = ConversionSummary(len(images), len(annotations), labelled, visible, dict(skipped), missing, images_dir is not None)
    return coco, summary


def convert_aic_file(raw_path: str | os.PathLike, out_path: str | os.PathLike, images_dir: str | os.PathLike | None = None, skip_invalid: bool = False) -> ConversionSummary:
    """Convert a raw AIC file and write the COCO file atomically; nothing is written on error."""
    with gc_paused():
        coco, summary = convert_aic(load_raw(raw_path), str(raw_path), images_dir, skip_invalid)
        write_json(out_path, coco)
    return summary


@contextmanager
def gc_paused():
    """Pause the cyclic garbage collector: it would rescan the millions of (acyclic) lists and dicts
    a large file makes, again and again, for a third of the run time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _entry_problem(entry) -> str | None:
    """What is wrong with an image entry's structure, or None."""
    if not isinstance(entry, dict):
        return f"is a JSON {type(entry).__name__}, expected an object with image_id, keypoint_annotations and human_annotations"
    if not isinstance(entry.get("image_id"), str):
        return "has no image_id string (the file name without .jpg)"
    for key in ("keypoint_annotations", "human_annotations"):
        if not isinstance(entry.get(key), dict):
            return f"{key} is missing or not an object of humanN -> list"
    return None


def _human_problem(keypoints, box, image_size: tuple[int, int] | None) -> tuple[str | None, str]:
    """(what is wrong with one person's record or None, a short reason for the skip count); ``records``' checks."""
    if keypoints is None:
        return "has a box in human_annotations but no keypoints in keypoint_annotations", "box without keypoints"
    if box is None:
        return "has keypoints in keypoint_annotations but no box in human_annotations", "keypoints without box"
    problem = records.keypoints(keypoints, AIC.keypoints, AIC_VISIBILITY) or records.numbers(box, 4, "box")
    if problem:
        return problem.detail + (" [x1, y1, x2, y2]" if problem.reason == "box not 4 numbers" else ""), problem.reason
    if box[2] <= box[0] or box[3] <= box[1]:
        return f"box [x1, y1, x2, y2] = {box} has x2 <= x1 or y2 <= y1 (no width or height)", "box with x2 <= x1 or y2 <= y1"
    if not math.isfinite((box[2] - box[0]) * (box[3] - box[1])):
        return f"box [x1, y1, x2, y2] = {box} is too large: its area is not a finite number", "non-finite box"
    problem = records.box_xywh([box[0], box[1], box[2] - box[0], box[3] - box[1]], "box", image_size)
    if problem:
        return f"box [x1, y1, x2, y2] = {box} lies outside the {image_size[0]}x{image_size[1]} image", problem.reason
    return None, ""


def _coco_visibility(aic_visibility: tuple) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """One person's AIC visibility (14,) -> COCO visibility (14,), and the unlabelled keypoints to put at (0, 0)."""
    coco = tuple(AIC_TO_COCO_VISIBILITY[v] for v in aic_visibility)
    return coco, tuple(k for k, v in enumerate(aic_visibility) if v == AIC_UNLABELLED)


def _human_order(name: str) -> tuple[int, str]:
    """Sort key for humanN: shorter numbers first, so human2 comes before human10."""
    return len(name), name


def _count_by_keypoint(patterns: Counter) -> tuple[dict[str, int], dict[str, int]]:
    """Raw visibility tuples with counts -> persons with each keypoint labelled, visible."""
    labelled = dict.fromkeys(AIC.keypoints, 0)
    visible = dict.fromkeys(AIC.keypoints, 0)
    for visibility, persons in patterns.items():
        for name, v in zip(AIC.keypoints, visibility):
            if v != AIC_UNLABELLED:
                labelled[name] += persons
            if v == 1:
                visible[name] += persons
    return labelled, visible
