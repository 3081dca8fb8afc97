"""Remap COCO keypoint files between layouts (aic -> coco, coco/aic -> coco-aic) and concatenate them.

Keypoints move by name through ``layouts.make_mapping``; target keypoints the
source lacks become (0, 0, 0). Visibility stays COCO's 0/1/2.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from posecli.data import records
from posecli.data.aic import gc_paused
from posecli.errors import UserError, option
from posecli.data.coco import keypoint_category, read_annotation_file
from posecli.fileio import write_json
from posecli.layouts import LAYOUTS, Layout, get_layout, make_mapping


@dataclass
class RemapSummary:
    target: str
    inputs: list[tuple[str, str]]  # (path, source layout name)
    images: int = 0
    persons: int = 0
    labelled: dict[str, int] = field(default_factory=dict)  # target keypoint -> persons with it labelled (v > 0)
    visible: dict[str, int] = field(default_factory=dict)  # target keypoint -> persons with it visible (v == 2)
    skipped: dict[str, int] = field(default_factory=dict)  # why -> annotations dropped
    unmapped: dict[str, list[str]] = field(default_factory=dict)  # path -> source keypoints the target lacks


def layout_by_name(name: str, what: str) -> Layout:
    try:
        return get_layout(name)
    except ValueError:
        raise UserError(f"{what} {name!r}: unknown keypoint layout; use one of {', '.join(LAYOUTS)}") from None


def remap_dataset(coco: dict, source: Layout, target: Layout, path: str = "<coco>", drop_empty: bool = False, skip_invalid: bool = False) -> tuple[list[dict], list[dict], Counter]:
    """Remap every annotation of ``coco`` from ``source`` to ``target`` -> (images, annotations, skipped).

    Ids are left as they are; keypoints become (N, 3 * Kt) lists, ``num_keypoints`` is recounted.
    """
    skipped: Counter[str] = Counter()
    images = coco["images"]
    files = {}
    for image in images:
        if not isinstance(image, dict) or "id" not in image:
            raise UserError(f"{path}: image entry {str(image)[:80]} has no id; every COCO image needs one")
        problem = records.identifier(image["id"], "id")
        if problem:
            raise UserError(f"{path}: image entry {records.show(image, 80)}: {problem.detail}")
        if image["id"] in files:
            raise UserError(f"{path}: image id {image['id']} is used by {files[image['id']]} and {image.get('file_name')}; image ids must be unique")
        where = records.non_finite(image)
        if where is not None:  # never written out: NaN is not JSON for most readers
            raise UserError(f"{path}: image {image['id']} holds NaN or Infinity at {where[1:]}; fix the record")
        files[image["id"]] = image.get("file_name", "?")

    kept = []
    for index, ann in enumerate(coco["annotations"]):
        problem, reason = _annotation_problem(ann, source, files)
        if problem:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            image = files.get(image_id, image_id) if type(image_id) is int else records.show(image_id, 30)
            where = f"annotation #{index}" if not isinstance(ann, dict) else f"image {image}, annotation id {records.show(ann.get('id'), 30)}"
            if not skip_invalid:
                raise UserError(f"{path}: {where}: {problem}. Fix the record, say the source layout ({option('source')}) if it is wrong, or skip invalid records ({option('skip_invalid')}).")
            skipped[reason] += 1
            continue
        kept.append(ann)

    keypoints, num_keypoints = remap_keypoints([a["keypoints"] for a in kept], source, target)
    annotations = []
    for ann, kpts, n in zip(kept, keypoints, num_keypoints):
        if drop_empty and n == 0:
            skipped["no keypoint left in the target layout (dropped as asked)"] += 1
            continue
        annotations.append({**ann, "keypoints": kpts, "num_keypoints": n, "category_id": 1})
    return images, annotations, skipped


def remap_keypoints(keypoints: list[list], source: Layout, target: Layout) -> tuple[list[list], list[int]]:
    """N flat COCO keypoint lists (3 * Ks) -> N lists (3 * Kt) and their labelled counts; number types kept."""
    if not keypoints:
        return [], []
    flat = np.asarray(keypoints)
    flat = flat.reshape(len(keypoints), source.num_keypoints, 3)
    coords, visible = make_mapping(source, target).apply(flat[..., :2], flat[..., 2].astype(np.int64))
    # An object array turns numbers back into Python ints/floats, so JSON shows 313, not 313.0, for int input.
    out = np.empty((len(keypoints), target.num_keypoints, 3), dtype=object)
    out[..., :2] = coords
    out[..., 2] = visible
    return out.reshape(len(keypoints), -1).tolist(), (visible > 0).sum(axis=1).tolist()


def concat_datasets(parts: list[tuple[list[dict], list[dict]]], target: Layout) -> dict:
    """(images, annotations) of several files -> one COCO dict, ids renumbered 1.. so they never clash.

    A single part keeps its ids (detection files and results refer to them).
    """
    if len(parts) == 1:
        images, annotations = parts[0]
    else:
        images, annotations = [], []
        for part_images, part_annotations in parts:
            new_id = {}
            for image in part_images:
                new_id[image["id"]] = len(images) + 1
                images.append({**image, "id": len(images) + 1})
            for ann in part_annotations:
                annotations.append({**ann, "image_id": new_id[ann["image_id"]], "id": len(annotations) + 1})
    return {
        "info": {"description": f"keypoints in the {target.name} layout, written by posecli convert remap", "version": "1.0"},
        "licenses": [],
        "categories": [target.coco_category_dict()],
        "images": images,
        "annotations": annotations,
    }


def remap_files(paths: list[str | os.PathLike], out_path: str | os.PathLike, target: str, source: str | None = None, drop_empty: bool = False, skip_invalid: bool = False) -> RemapSummary:
    """Remap and concatenate COCO keypoint files into ``out_path`` (atomically; nothing on error)."""
    target_layout = layout_by_name(target, f"target layout ({option('target')})")
    forced = layout_by_name(source, f"source layout ({option('source')})") if source else None
    summary = RemapSummary(target_layout.name, [])
    skipped: Counter[str] = Counter()
    parts = []
    with gc_paused():
        for path in paths:
            coco = read_annotation_file(path, needs=("images", "annotations"))  # the layout may be given instead
            try:
                layout = forced or keypoint_category(coco, path)[1]
            except UserError as e:
                raise UserError(f"{e}; or say the source layout ({option('source')})") from None
            images, annotations, part_skipped = remap_dataset(coco, layout, target_layout, str(path), drop_empty, skip_invalid)
            parts.append((images, annotations))
            skipped += part_skipped
            summary.inputs.append((str(path), layout.name))
            lost = [n for n in layout.keypoints if n not in target_layout.keypoints]
            if lost:
                summary.unmapped[str(path)] = lost
        merged = concat_datasets(parts, target_layout)
        write_json(out_path, merged)

    visibility = np.array([a["keypoints"][2::3] for a in merged["annotations"]], dtype=np.int64).reshape(-1, target_layout.num_keypoints)
    summary.images, summary.persons = len(merged["images"]), len(merged["annotations"])
    summary.labelled = dict(zip(target_layout.keypoints, (visibility > 0).sum(axis=0).tolist()))
    summary.visible = dict(zip(target_layout.keypoints, (visibility == 2).sum(axis=0).tolist()))
    summary.skipped = dict(skipped)
    return summary


def _annotation_problem(ann, source: Layout, files: dict) -> tuple[str | None, str]:
    """(what is wrong with one COCO annotation or None, a short reason for the skip count)."""
    if not isinstance(ann, dict):
        return f"is a JSON {type(ann).__name__}, expected an object", "malformed annotation"
    problem = records.identifier(ann.get("image_id"), "image_id")
    if problem:
        return problem.detail, problem.reason
    if ann.get("image_id") not in files:
        return f"image_id {ann.get('image_id')!r} is not among the file's images", "unknown image_id"
    problem = records.keypoints(ann.get("keypoints"), source.keypoints)
    if problem:
        return f"{problem.detail} in the {source.name} layout", problem.reason
    if "bbox" in ann:
        problem = records.box_xywh(ann["bbox"])
        if problem and problem.reason != records.EMPTY:  # an empty box is kept (training drops it, as MMPose)
            return problem.detail, problem.reason
    if "area" in ann:
        problem = records.number(ann["area"], "area", minimum=0)
        if problem:
            return problem.detail, problem.reason
    where = records.non_finite(ann)
    if where is not None:  # never written out: NaN is not JSON for most readers
        return f"{where[1:]} is NaN or Infinity, expected a finite number", "non-finite value"
    return None, ""
