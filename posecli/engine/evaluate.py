"""COCO keypoint evaluation: person boxes -> keypoints -> rescoring, OKS NMS -> COCO AP.

Used by ``posecli eval`` and by training for validation. Each image is decoded once
for all of its boxes, in DataLoader workers (by default on GPU only: ``default_workers``);
crops are batched by count, the model runs under ``torch.inference_mode()``, and only
keypoints and scores are kept per box.
With ``torch.distributed`` initialised, images are sharded across ranks and rank 0
gathers the keypoints and computes the metrics.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from posecli import sample as bundled
from posecli.choices import ScoreMode
from posecli.data.coco import Boxes, CocoFile, gt_boxes, read_coco, read_detections
from posecli.data.dataset import fork_safe_opencv, sample_preset_paths
from posecli.data.images import check_images, decode_image, describe_bad
from posecli.engine import distributed
from posecli.engine.cocometric import KeypointStat, coco_keypoint_eval, coco_results, rescore, select_instances
from posecli.engine.inference import Crops, Predictor, crop_boxes
from posecli.errors import UserError, option
from posecli.fileio import atomic_paths, write_text
from posecli.geometry import box_center_scale, fix_aspect_ratio
from posecli.layouts import Layout
from posecli.presets import Preset, TestCfg

Progress = Callable[[int, int], None]  # (crops done, crops in total)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # AP, AP50, ..., ARl; empty on ranks other than 0
    per_keypoint: list[KeypointStat]
    results_path: Path | None  # results.keypoints.json, when out_dir was given
    num_boxes: int
    num_results: int
    warnings: list[str] = field(default_factory=list)


class ImageCrops(Dataset):
    """Item i = all crops of image i, from one decode: (box indices, crops uint8 (n, h, w, 3), centers, scales)."""

    def __init__(self, paths: list[Path], box_ids: list[np.ndarray], xyxy: np.ndarray, input_size: tuple[int, int]):
        self.paths, self.box_ids, self.xyxy, self.input_size = paths, box_ids, xyxy, input_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        ids = self.box_ids[i]
        image, problem = decode_image(self.paths[i])  # the check of images.image_problem, on the bytes read
        if image is None:  # reported by the main process: an exception here would carry a worker traceback
            return ids, None, (str(self.paths[i]), problem)
        return ids, crop_boxes(image, self.xyxy[ids], self.input_size), None


def concat_crops(items):
    """Collate: one batch of all crops of several images -> (box indices (n,), Crops, unreadable paths)."""
    bad = [path for _, crops, path in items if crops is None]
    items = [(ids, c) for ids, c, _ in items if c is not None]
    ids = np.concatenate([i for i, _ in items]) if items else np.zeros(0, np.int64)
    crops = Crops(
        torch.from_numpy(np.concatenate([c.images for _, c in items])) if items else None,  # shared memory from workers
        np.concatenate([c.centers for _, c in items]) if items else None,
        np.concatenate([c.scales for _, c in items]) if items else None,
    )
    return ids, crops, bad


def crop_batches(counts: list[int], batch_size: int) -> list[list[int]]:
    """Group images, in order, into batches of at most ``batch_size`` crops (an image with more forms its own)."""
    batches, current, filled = [], [], 0
    for i, n in enumerate(counts):
        if current and filled + n > batch_size:
            batches.append(current)
            current, filled = [], 0
        current.append(i)
        filled += n
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class EvalData:
    """What an evaluation runs on: ground truth, its images, person boxes (None: ground-truth boxes)."""

    ann: Path
    images: Path
    boxes: Path | None
    test: TestCfg  # the preset's test settings, or the defaults
    published: dict = field(default_factory=dict)  # the preset's published numbers, to print beside ours


def eval_data(preset: Preset | None = None, data_root: str | Path | None = None, ann: str | Path | None = None,
              images: str | Path | None = None, boxes: str | Path | None = None, use_gt_boxes: bool = False,
              sample: bool = False) -> EvalData:  # fmt: skip
    """The one resolution of evaluation data, for eval and for training's validation.

    Explicit files win; else the preset's ``data.val`` under ``data_root`` (or, with ``sample``, the
    bundled sample in its place); else, with ``sample`` alone, the bundled COCO sample. A detection
    file that does not exist is an error, never a quiet switch to ground-truth boxes (that changes
    the AP): ``use_gt_boxes`` asks for those, as does a preset whose ``data.val.boxes`` is null.
    """
    test, published, val_boxes = (preset.test, preset.published, None) if preset else (TestCfg(), {}, None)
    if preset is not None and (ann is None or images is None):
        if sample:
            root, data = sample_preset_paths(preset)
            val = data.val
        elif data_root is None:
            raise UserError("a preset's data paths are relative to a data root: give the folder that holds "
                            "coco/annotations, coco/val2017, ... (or evaluate on the bundled sample)")  # fmt: skip
        else:
            root, val = Path(data_root), preset.data.val
        ann, images = ann or root / val.ann, images or root / val.images
        val_boxes = root / val.boxes if val.boxes else None
    elif sample and (ann is None or images is None):
        ann, images, val_boxes = ann or bundled.COCO_ANN, images or bundled.COCO_IMAGES, bundled.COCO_DET
    if ann is None or images is None:
        raise UserError("nothing to evaluate on: give an annotation file and its image folder, a preset and its "
                        "data root, or the bundled sample")  # fmt: skip
    boxes = None if use_gt_boxes else Path(boxes) if boxes else val_boxes
    if boxes is not None and not boxes.is_file():
        raise UserError(f"{boxes}: no such detection file; give the person boxes the evaluation names, "
                        "or evaluate with ground-truth boxes")  # fmt: skip
    return EvalData(Path(ann), Path(images), boxes, test, published)


def fit_layout(predictor: Predictor, layout: Layout) -> Predictor:
    """The predictor, keeping as many outputs as the annotations have keypoints if its layout starts with theirs."""
    names = predictor.layout.keypoints[: predictor.keep]
    if names == layout.keypoints:
        return predictor
    if predictor.keep is None and predictor.layout.keypoints[: layout.num_keypoints] == layout.keypoints:
        return dataclasses.replace(predictor, keep=layout.num_keypoints)  # combine (19) scored on COCO's 17
    raise UserError(f"the model predicts the '{predictor.layout.name}' layout ({len(names)} keypoints), but the "
                    f"annotations use '{layout.name}' ({layout.num_keypoints}); evaluate it on {predictor.layout.name} "
                    "annotations, or convert these with `posecli convert remap`")  # fmt: skip


def _rank_world(device: torch.device) -> tuple[int, int]:
    """Under torchrun, this process's shard: the group is joined with the backend of the predictor's device."""
    return distributed.join(device)


def predict_boxes(predictor: Predictor, coco: CocoFile, images_dir: Path, boxes: Boxes, batch_size: int,
                  workers: int, shard: tuple[int, int] = (0, 1), progress: Progress | None = None,
                  on_bad_image: Callable[[str, str], None] | None = None):  # fmt: skip
    """Keypoints for every box of this rank's images -> (box indices (n,), keypoints (n, K, 2), scores (n, K)).

    An image that cannot be decoded is a UserError, or with ``on_bad_image`` reported to it as
    (path, problem), its boxes left at zero.
    """
    rank, world = shard
    order, first = np.unique(boxes.image_ids, return_index=True)
    image_ids = order[np.argsort(first)][rank::world]  # first-appearance order, sharded by image
    box_ids = [np.flatnonzero(boxes.image_ids == i) for i in image_ids]
    paths = [images_dir / coco.images[int(i)]["file_name"] for i in image_ids]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) with boxes not found under {images_dir}, e.g. {missing[0]}; "
                        f"check the image folder ({option('images_dir')}) or the data root ({option('data_root')})")  # fmt: skip
    dataset = ImageCrops(paths, box_ids, boxes.xyxy, predictor.codec.input_size)
    batches = crop_batches([len(b) for b in box_ids], batch_size)
    if workers:
        fork_safe_opencv()  # workers run side by side; OpenCV's own threads would oversubscribe the cores
    loader = DataLoader(dataset, batch_sampler=batches, collate_fn=concat_crops, num_workers=workers,
                        pin_memory=predictor.device.type == "cuda")  # fmt: skip
    n = sum(len(b) for b in box_ids)
    K = predictor.num_keypoints
    index = np.concatenate(box_ids) if box_ids else np.zeros(0, np.int64)
    slot = {int(b): i for i, b in enumerate(index)}
    keypoints, scores = np.zeros((n, K, 2), np.float32), np.zeros((n, K), np.float32)
    done = 0
    carry_ids, carry = np.zeros(0, np.int64), None  # crops read but not yet run: fewer than batch_size

    def run(ids: np.ndarray, crops: Crops) -> None:
        k, sc = predictor(crops)
        rows = [slot[int(b)] for b in ids]
        keypoints[rows], scores[rows] = k, sc

    for ids, crops, unreadable in loader:
        for path, problem in unreadable:
            if on_bad_image is None:
                raise UserError(f"{path}: {problem}; replace the file or remove its boxes")
            on_bad_image(path, problem)
        # Crops of consecutive images are regrouped into full batches: every network call but the
        # last has batch_size crops (a compiled network runs only full chunks).
        if carry is not None:
            ids, crops = np.concatenate([carry_ids, ids]), _concat(carry, crops)
        full = len(ids) // batch_size * batch_size
        for s in range(0, full, batch_size):
            run(ids[s : s + batch_size], crops.slice(s, s + batch_size))
        carry_ids, carry = ids[full:], crops.slice(full, len(ids)) if full < len(ids) else None
        done += full
        if progress:
            progress(done, n)
    if carry is not None:
        run(carry_ids, carry)
        if progress:
            progress(n, n)
    return index, keypoints, scores


def _concat(a: Crops, b: Crops) -> Crops:
    images = torch.cat([torch.as_tensor(a.images), torch.as_tensor(b.images)])
    return Crops(images, np.concatenate([a.centers, b.centers]), np.concatenate([a.scales, b.scales]))


def default_workers(device: torch.device) -> int:
    """DataLoader workers for evaluation: 2 on GPU, none on CPU.

    On CPU the network's threads already keep every core busy, so a worker that decodes
    images only takes turns with them (measured: docs/benchmarks.md).
    """
    return 0 if device.type == "cpu" else 2


def evaluate(predictor: Predictor | str | Path, ann_file: str | Path, images_dir: str | Path,
             boxes_file: str | Path | None = None, *, workers: int | None = None,
             out_dir: str | Path | None = None, nms: str = "oks", nms_thr: float = 0.9,
             keypoint_score_thr: float = 0.2, score_mode: ScoreMode = ScoreMode.BBOX_KEYPOINT,
             min_box_score: float | None = None, skip_bad_images: bool = False,
             progress: Progress | None = None, log: Callable[[str], None] = lambda _: None) -> EvalResult:  # fmt: skip
    """COCO keypoint AP of a model with detector boxes (``boxes_file``) or ground-truth boxes.

    ``predictor`` is a built ``Predictor`` (its ``settings`` decide flip, decode, batch size and how
    the network runs) or a weights path (the default settings). ``workers``: DataLoader workers,
    None = ``default_workers``. Writes ``results.keypoints.json`` and ``metrics.json`` to ``out_dir``.
    The images are checked before the model runs (``images.check_images``): a bad one is a UserError,
    or with ``skip_bad_images`` it is left out with its ground truth, and a warning says so.
    """
    if not isinstance(predictor, Predictor):
        predictor = Predictor.from_weights(predictor)
    coco = read_coco(ann_file)
    predictor = fit_layout(predictor, coco.layout)
    boxes = read_detections(boxes_file, coco, min_box_score) if boxes_file else gt_boxes(coco)
    warnings = list(boxes.warnings)
    paths = _image_paths(coco, images_dir, boxes)
    bad = check_images(list(paths.values()))
    if bad:
        message = describe_bad(bad, len(paths), f"images with boxes under {images_dir}")
        if not skip_bad_images:
            raise UserError(f"{message}. Replace them, or skip them ({option('skip_bad_images')}) to evaluate without them "
                            "(and without their ground truth)")  # fmt: skip
        boxes, coco, _ = _without_images(boxes, coco, paths, bad, message)
        warnings.append(_left_out(message, coco))
    rank, world = _rank_world(predictor.device)
    workers = default_workers(predictor.device) if workers is None else workers
    failed: dict[str, str] = {}  # images that turned bad after the check: (path, problem)
    index, keypoints, kpt_scores = predict_boxes(predictor, coco, Path(images_dir), boxes, predictor.settings.batch_size,
                                                 workers, (rank, world), progress,
                                                 failed.__setitem__ if skip_bad_images else None)  # fmt: skip
    if world > 1:
        parts = [None] * world if rank == 0 else None
        dist.gather_object((index, keypoints, kpt_scores, failed), parts, dst=0)
        if rank != 0:
            return EvalResult(_broadcast({}), [], None, len(boxes), 0, warnings)
        index, keypoints, kpt_scores = (np.concatenate(a) for a in list(zip(*parts))[:3])
        failed = {path: problem for part in parts for path, problem in part[3].items()}
    if failed:
        message = describe_bad(failed, len(paths), f"images with boxes under {images_dir} (they changed during the evaluation)")
        boxes, coco, keep = _without_images(boxes, coco, paths, failed, message)
        warnings.append(_left_out(message, coco))
        rows = np.flatnonzero(keep[index])
        index, keypoints, kpt_scores = (np.cumsum(keep) - 1)[index[rows]], keypoints[rows], kpt_scores[rows]
    order = np.argsort(index)  # back to box order
    keypoints, kpt_scores = keypoints[order], kpt_scores[order]

    scores = rescore(boxes.scores, kpt_scores, keypoint_score_thr, score_mode)
    (w, h), (_, padded) = predictor.codec.input_size, box_center_scale(boxes.xyxy)
    crop_wh = fix_aspect_ratio(padded, w / h)
    areas = crop_wh[:, 0] * crop_wh[:, 1]  # MMPose's instance area for NMS: the aspect-fixed crop size
    sigmas = np.asarray(coco.layout.sigmas, np.float32)
    pick = select_instances(boxes.image_ids, boxes.ids, keypoints, scores, areas, sigmas, nms, nms_thr)
    results = coco_results(boxes.image_ids[pick], keypoints[pick], kpt_scores[pick], scores[pick], boxes.xyxy[pick])

    text = json.dumps(results)
    with tempfile.TemporaryDirectory() as tmp:
        write_text(Path(tmp) / "results.keypoints.json", text)
        metrics, per_keypoint = coco_keypoint_eval(coco.data, Path(tmp) / "results.keypoints.json", coco.layout.sigmas,
                                                   coco.layout.keypoints)  # fmt: skip
    saved = Path(out_dir) / "results.keypoints.json" if out_dir else None
    result = EvalResult(_broadcast(metrics) if world > 1 else metrics, per_keypoint, saved, len(boxes), len(results),
                        warnings)  # fmt: skip
    if out_dir:  # the two outputs as a pair: written in full, then renamed (a failure leaves the previous two)
        summary = json.dumps(_summary(result, predictor, ann_file, boxes_file, nms), indent=2)
        with atomic_paths([saved, Path(out_dir) / "metrics.json"]) as (results_tmp, metrics_tmp):
            Path(results_tmp).write_text(text)
            Path(metrics_tmp).write_text(summary)
        _keypoint_chart(Path(out_dir) / "keypoints.png", per_keypoint)
    return result


def _keypoint_chart(path: Path, per_keypoint: list[KeypointStat]) -> None:
    """keypoints.png beside metrics.json: each keypoint's share within tolerance and mean OKS term (needs matplotlib)."""
    from posecli import plots  # matplotlib is the optional extra posecli[plot]; without it there is no chart

    plots.keypoint_chart(path, [s.name for s in per_keypoint], [s.within for s in per_keypoint],
                         [s.mean_oks for s in per_keypoint])  # fmt: skip


def _image_paths(coco: CocoFile, images_dir: str | Path, boxes: Boxes) -> dict:
    """Image id -> path of every image with a box: the images evaluation reads."""
    return {image_id: Path(images_dir) / coco.images[int(image_id)]["file_name"] for image_id in np.unique(boxes.image_ids)}


def image_problems(ann_file: str | Path, images_dir: str | Path, boxes_file: str | Path | None = None,
                   min_box_score: float | None = None) -> tuple[dict[str, str], int]:  # fmt: skip
    """The bad images among those ``evaluate`` would read, checked as it checks them -> ({path: problem}, images)."""
    coco = read_coco(ann_file)
    boxes = read_detections(boxes_file, coco, min_box_score) if boxes_file else gt_boxes(coco)
    paths = _image_paths(coco, images_dir, boxes)
    return check_images(list(paths.values())), len(paths)


def _left_out(message: str, coco: CocoFile) -> str:
    return f"{message}; left out with their ground truth: the metrics are over the other {len(coco.images)} images"


def _without_images(boxes: Boxes, coco: CocoFile, paths: dict, bad: dict[str, str], message: str) -> tuple[Boxes, CocoFile, np.ndarray]:
    """Boxes and ground truth without the images whose paths are keys of ``bad`` -> (boxes, coco, kept box mask)."""
    gone = {i for i, p in paths.items() if str(p) in bad}
    keep = ~np.isin(boxes.image_ids, list(gone))
    if not keep.any():
        raise UserError(f"{message}: no image with boxes is left to evaluate on")
    data = dict(coco.data, images=[i for i in coco.data["images"] if i["id"] not in gone],
                annotations=[a for a in coco.data["annotations"] if a["image_id"] not in gone])  # fmt: skip
    images = {i: img for i, img in coco.images.items() if i not in gone}
    kept = Boxes(boxes.image_ids[keep], boxes.ids[keep], boxes.xyxy[keep], boxes.scores[keep], boxes.warnings)
    return kept, dataclasses.replace(coco, data=data, images=images), keep


def _broadcast(metrics: dict) -> dict:
    box = [metrics]
    dist.broadcast_object_list(box, src=0)  # every rank sees rank 0's metrics (train may act on them)
    return box[0]


def _finite_or_none(x: float) -> float | None:
    return x if np.isfinite(x) else None


def _summary(result: EvalResult, predictor: Predictor, ann_file, boxes_file, nms: str) -> dict:
    return {
        "metrics": result.metrics,
        "per_keypoint": {s.name: {"labelled": s.labelled, "within": _finite_or_none(s.within), "mean_oks": _finite_or_none(s.mean_oks)}
                         for s in result.per_keypoint},  # fmt: skip (NaN where nothing is labelled: null, as JSON has no NaN)
        "num_boxes": result.num_boxes,
        "num_results": result.num_results,
        "ann_file": str(ann_file),
        "boxes_file": str(boxes_file) if boxes_file else None,
        "inference": {k: v if isinstance(v, (int, bool, type(None))) else str(v)
                      for k, v in dataclasses.asdict(predictor.settings).items()},  # fmt: skip
        "nms": nms,
        "warnings": result.warnings,
    }
