"""Training data: person instances from COCO-format sources, mapped onto the model's layout, concatenated.

    load_instances       every source's annotation file -> one ``Instances`` table (numpy arrays)
    TrainDataset         item i -> decode, augment, crop, targets (randomness from (seed, epoch, i) only)
    build_train_dataset  a preset's training set (or the bundled sample with ``sample=True``)

Instances are kept as MMPose's top-down COCO dataset keeps them (reference README
§7 item 1): images in file order, each image's annotations in file order; annotations
left out are those ``data.coco.parse_instance`` leaves out (MMPose's rule, the same for
ground-truth boxes in eval). Records with bad values
(``records``' policy: non-finite, wrong counts or types, negative sizes) are refused, naming them.
The table is plain numpy arrays so that DataLoader workers share it without copy-on-write growth.

Images are checked before training (``check_images``: header and end marker, no decoding); bad
ones stop the run, or are left out with ``skip_bad_images``. One that turns bad during the run
is replaced by a deterministic other sample, flagged in the item's ``bad_image``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from posecli import sample
from posecli.augment import Draws, Sample, affine_crop, augment, from_box
from posecli.codec import HeatmapCodec
from posecli.data import records
from posecli.data.images import check_images, decode_image, describe_bad, image_problem
from posecli.data.coco import keypoint_category, parse_instance, read_annotation_file
from posecli.errors import UserError, option
from posecli.layouts import Layout, get_layout, make_mapping
from posecli.presets import AugmentCfg, DataCfg, Preset, Source, ValCfg

SAMPLE_ROOT = sample.ROOT
SUBSTITUTE_TRIES = 20  # other samples tried in place of one whose image cannot be read


def _in_sample(path: Path) -> str:
    return path.relative_to(SAMPLE_ROOT).as_posix()


# The bundled sample: one COCO-format file and image folder per source layout, relative to SAMPLE_ROOT.
SAMPLE_SOURCES = {"coco": (_in_sample(sample.COCO_ANN), _in_sample(sample.COCO_IMAGES)),
                  "aic": (_in_sample(sample.AIC_ANN), _in_sample(sample.AIC_IMAGES))}  # fmt: skip
SAMPLE_DETECTIONS = _in_sample(sample.COCO_DET)


@dataclass
class SourceSummary:
    name: str
    annotations: int  # in the file
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass
class Instances:
    """Training persons of all sources, in the model's layout."""

    layout: str
    image_paths: np.ndarray  # (M,) bytes: file-system paths of the images that hold a kept instance
    image_index: np.ndarray  # (N,) int32 -> image_paths
    xyxy: np.ndarray  # (N, 4) float32 ground-truth boxes, clipped to the image, image px
    keypoints: np.ndarray  # (N, K, 2) float32 xy, image px (0, 0 where unlabelled)
    visible: np.ndarray  # (N, K) float32: min(1, v); 0 where the source lacks the keypoint
    ann_ids: np.ndarray  # (N,) int64 annotation ids, unique within a source
    source: np.ndarray  # (N,) int16 -> summaries
    summaries: list[SourceSummary]
    # (N,) bool: mapped from another layout (MMPose's KeypointConverter; its keypoints are then float64,
    # which augment follows). The float32 table holds their values exactly.
    remapped: np.ndarray

    def __len__(self) -> int:
        return len(self.ann_ids)

    def image_path(self, i: int) -> str:
        return os.fsdecode(self.image_paths[self.image_index[i]])


def _load_source(src: Source, data_root: Path, target: Layout):
    """One source -> its kept instances as arrays in the target layout, plus a summary."""
    ann_path, image_dir = data_root / src.ann, data_root / src.images
    if not image_dir.is_dir():
        raise UserError(f"training source {src.name!r}: image folder {image_dir} does not exist; check the data root ({option('data_root')}) and the preset's data.train images")
    layout = get_layout(src.layout)
    data = read_annotation_file(ann_path, f"annotation file of training source {src.name!r}",
                                hint="check the data root and the preset's data.train ann")  # fmt: skip
    _, found = keypoint_category(data, ann_path)
    if found.name != layout.name:  # MMPose's AIC file spells them "Right Shoulder": names are compared as layouts
        raise UserError(f"training source {src.name!r}: the keypoints of {ann_path} are layout {found.name!r} "
                        f"({found.num_keypoints}), the preset says {layout.name!r} ({layout.num_keypoints}); fix the "
                        "source's layout in the preset or remap the file")  # fmt: skip
    images = {}
    for i, img in enumerate(data["images"]):
        problem = records.image_record(img)
        if problem:
            raise UserError(f"{ann_path}: images[{i}] {problem.detail}")
        images[img["id"]] = img
    by_image: dict = {image_id: [] for image_id in images}
    dropped: dict[str, int] = {}
    for i, ann in enumerate(data["annotations"]):
        problem = records.identifier(ann.get("image_id"), "image_id") if isinstance(ann, dict) else None
        problem = problem or (records.identifier(ann["id"], "id") if isinstance(ann, dict) and "id" in ann else None)
        if problem:
            raise UserError(f"{ann_path}: annotations[{i}] {problem.detail}")
        if isinstance(ann, dict) and ann.get("image_id") in by_image:
            by_image[ann["image_id"]].append(ann)
        else:
            dropped["no image record"] = dropped.get("no image record", 0) + 1
    paths, image_index, boxes, kpts, ann_ids = [], [], [], [], []
    for image_id, anns in by_image.items():  # MMPose's order: images in file order, then their annotations
        img, first = images[image_id], True
        for ann in anns:
            reason, xyxy, k = parse_instance(ann, img, layout, ann_path)
            if reason:
                dropped[reason] = dropped.get(reason, 0) + 1
                continue
            if first:
                paths.append(img["file_name"])
                first = False
            image_index.append(len(paths) - 1)
            boxes.append(xyxy)
            kpts.append(k)
            ann_ids.append(ann.get("id", -1))
    kpts = np.stack(kpts) if kpts else np.zeros((0, layout.num_keypoints, 3), np.float32)
    keypoints, visible = make_mapping(layout, target).apply(kpts[..., :2], np.minimum(1, kpts[..., 2]))
    summary = SourceSummary(src.name, len(data["annotations"]), len(ann_ids), dropped)
    return [os.fsencode(image_dir / p) for p in paths], image_index, boxes, keypoints, visible, ann_ids, summary


def load_instances(sources: tuple[Source, ...] | list[Source], data_root: str | Path, layout: Layout) -> Instances:
    """Read every source (paths relative to ``data_root``), map it onto ``layout`` and concatenate."""
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise UserError(f"data root {data_root} is not a folder; give as data root ({option('data_root')}) the folder that holds the preset's data.train paths")
    parts = [_load_source(src, data_root, layout) for src in sources]
    paths, offset, image_index = [], 0, []
    for part_paths, part_index, *_ in parts:
        image_index.append(np.asarray(part_index, np.int64) + offset)
        paths += part_paths
        offset += len(part_paths)
    instances = Instances(
        layout=layout.name,
        image_paths=np.array(paths, dtype=bytes),
        image_index=np.concatenate(image_index).astype(np.int32),
        xyxy=np.array([b for p in parts for b in p[2]], np.float32).reshape(-1, 4),
        keypoints=np.concatenate([p[3] for p in parts]).astype(np.float32),
        visible=np.concatenate([p[4] for p in parts]).astype(np.float32),
        ann_ids=np.array([a for p in parts for a in p[5]], np.int64),
        source=np.concatenate([np.full(len(p[5]), s, np.int16) for s, p in enumerate(parts)]),
        summaries=[p[6] for p in parts],
        remapped=np.concatenate([np.full(len(p[5]), src.layout != layout.name) for src, p in zip(sources, parts)]),
    )
    if len(instances) == 0:
        raise UserError("no training instances: every annotation of " + ", ".join(s.name for s in sources) + " was dropped (crowd, no keypoints or empty box)")
    return instances


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR, decoded as MMPose's LoadImage (OpenCV, colour); a bad file is a UserError."""
    image, problem = decode_image(path)
    if image is None:
        raise UserError(f"training image {path}: {problem}; check the source's image folder (or remove its annotations)")
    return image


def drop_images(instances: Instances, bad: set[str]) -> Instances:
    """The instances whose image is not among the paths ``bad``."""
    bad_index = [j for j, p in enumerate(instances.image_paths) if os.fsdecode(p) in bad]
    keep = ~np.isin(instances.image_index, bad_index)
    kept_images = np.unique(instances.image_index[keep])  # sorted: image order is kept
    renumber = np.full(len(instances.image_paths), -1, np.int64)
    renumber[kept_images] = np.arange(len(kept_images))
    summaries = []
    for s, summary in enumerate(instances.summaries):
        lost = int((~keep & (instances.source == s)).sum())
        dropped = dict(summary.dropped, **({"bad image": lost} if lost else {}))
        summaries.append(SourceSummary(summary.name, summary.annotations, summary.kept - lost, dropped))
    return Instances(instances.layout, instances.image_paths[kept_images], renumber[instances.image_index[keep]].astype(np.int32),
                     instances.xyxy[keep], instances.keypoints[keep], instances.visible[keep], instances.ann_ids[keep],
                     instances.source[keep], summaries, instances.remapped[keep])  # fmt: skip


def check_training_images(instances: Instances, skip_bad_images: bool, note: Callable[[str], None]) -> Instances:
    """Every training image checked before epoch 1 (header and end marker): bad ones stop the run, or are left out."""
    bad = check_images(instances.image_paths)
    if not bad:
        return instances
    message = describe_bad(bad, len(instances.image_paths), "training images")
    if not skip_bad_images:
        raise UserError(f"{message}. Replace or remove them (or their annotations), or skip them ({option('skip_bad_images')}) to train without them")
    kept = drop_images(instances, set(bad))
    if len(kept) == 0:
        raise UserError(f"{message}; no training instance is left without them")
    note(f"{message}; training without them: {len(instances) - len(kept)} of {len(instances)} instances left out")
    return kept


class TrainDataset(torch.utils.data.Dataset):
    """Item i: the augmented crop of instance i and its targets.

    The random draws of item i in epoch e come only from (seed, e, i), so DataLoader
    workers and resumed runs give identical samples. ``set_epoch`` must be called before
    the DataLoader's iterator is made (non-persistent workers copy the dataset then).
    """

    def __init__(self, instances: Instances, layout: Layout, codec: HeatmapCodec, augment: AugmentCfg, seed: int):
        if instances.layout != layout.name or instances.keypoints.shape[1] != layout.num_keypoints:
            raise ValueError(f"instances are in layout {instances.layout!r}, the model's is {layout.name!r}")
        if seed < 0:
            raise UserError(f"seed {seed}: use a seed >= 0")
        self.instances, self.layout, self.codec, self.augment, self.seed = instances, layout, codec, augment, seed
        self.epoch = 0
        self.reported: set[str] = set()  # images whose replacement was noted

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.instances)

    def draws(self, i: int) -> Draws:
        """The random numbers of item i in the current epoch."""
        return Draws(self.seed, self.epoch, i)

    def augmented(self, i: int, image: np.ndarray, draws) -> Sample:
        """Instance i on its decoded image, flipped, half-body and box-transformed (still image pixels)."""
        inst = self.instances
        s = from_box(image, inst.keypoints[i], inst.visible[i], inst.xyxy[i], remapped=bool(inst.remapped[i]))
        return augment(s, draws, self.augment, self.layout)

    def sample(self, i: int, draws) -> Sample:
        """Instance i read, augmented with ``draws`` and cropped: a Sample in input pixels."""
        image = read_image(self.instances.image_path(i))
        return affine_crop(self.augmented(i, image, draws), self.codec.input_size)

    def readable(self, i: int) -> tuple[int, np.ndarray]:
        """(i, its image), or if that image cannot be read now, a deterministic other instance and its image.

        The other one is drawn from (seed, epoch, i), so workers and resumed runs pick the same.
        """
        image, _ = decode_image(self.instances.image_path(i))
        if image is not None:
            return i, image
        bad = {self.instances.image_index[i]}
        rng = np.random.default_rng((self.seed, self.epoch, i))
        for _ in range(SUBSTITUTE_TRIES):
            j = int(rng.integers(len(self)))
            if self.instances.image_index[j] in bad:
                continue
            image, _ = decode_image(self.instances.image_path(j))
            if image is not None:
                return j, image
            bad.add(self.instances.image_index[j])
        raise UserError(f"training image {self.instances.image_path(i)} and the images of {SUBSTITUTE_TRIES} other samples "
                        "tried in its place cannot be read; is the image folder still there?")  # fmt: skip

    def bad_image_notes(self, batch: dict) -> list[str]:
        """Notes for the items of a collated batch whose image could not be read, once per image (main process)."""
        notes = []
        for i in batch["bad_image"][batch["bad_image"] >= 0].tolist():
            path = self.instances.image_path(i)
            if path not in self.reported:
                self.reported.add(path)
                notes.append(f"training image {path}: {image_problem(path) or 'cannot be decoded as an image'}; "
                             "its samples are replaced by other samples from now on")  # fmt: skip
        return notes

    def targets(self, s: Sample) -> dict:
        """A cropped sample -> the item: {"image": (h, w, 3) uint8 BGR, "heatmaps": (K, H, W) float32, "weights": (K,) float32}."""
        heatmaps, weights = self.codec.encode(s.keypoints, s.visible)
        return {"image": torch.from_numpy(s.image), "heatmaps": torch.from_numpy(heatmaps), "weights": torch.from_numpy(weights)}

    def __getitem__(self, i: int) -> dict:
        """Decode, augment, crop, targets (see ``targets``), plus "bad_image": i if another sample replaced it, else -1."""
        j, image = self.readable(i)
        item = self.targets(affine_crop(self.augmented(j, image, self.draws(i)), self.codec.input_size))
        item["bad_image"] = torch.tensor(i if j != i else -1)
        return item


def fork_safe_opencv() -> None:
    """Call before a DataLoader forks its workers: one OpenCV thread here, which the workers inherit.

    OpenCV's thread pool does not survive fork: a worker that sets its own thread count on a pool
    the parent has used waits forever (seen on opencv-python 4.x). So the parent drops to one
    thread before forking, and the workers, which are the parallelism, inherit that.
    """
    cv2.setNumThreads(1)


def sample_preset_paths(preset: Preset) -> tuple[Path, DataCfg]:
    """The bundled sample in place of the preset's data: (data root, DataCfg with sample paths).

    Each training source gets the sample of its layout (coco -> 4 COCO images, aic -> 3 AIC
    images); validation is the COCO sample with its detector boxes (or GT boxes if the preset has none).
    """
    train = []
    for src in preset.data.train:
        if src.layout not in SAMPLE_SOURCES:
            raise UserError(f"the bundled sample ({option('sample')}) has no sample for source {src.name!r} in layout {src.layout!r} (only {', '.join(SAMPLE_SOURCES)})")
        ann, images = SAMPLE_SOURCES[src.layout]
        train.append(Source(src.name, src.layout, ann, images))
    ann, images = SAMPLE_SOURCES["coco"]
    boxes = SAMPLE_DETECTIONS if preset.data.val.boxes else None
    val = ValCfg(ann=ann, images=images, boxes=boxes, interval=preset.data.val.interval)
    return SAMPLE_ROOT, DataCfg(train=tuple(train), val=val)


def build_train_dataset(preset: Preset, data_root: str | Path | None, seed: int, sample: bool = False,
                        skip_bad_images: bool = False, note: Callable[[str], None] = lambda text: None) -> TrainDataset:  # fmt: skip
    """The preset's training set: all sources mapped onto ``preset.model.layout``, MMPose's augmentation and targets.

    Its images are checked first: bad ones are a UserError, or with ``skip_bad_images`` left out (``note`` says so).
    """
    if sample:
        data_root, data = sample_preset_paths(preset)
        sources = data.train
    else:
        if data_root is None:
            raise UserError(f"no data root ({option('data_root')}): give the folder that holds the preset's data, or train on "
                            f"the bundled sample ({option('sample')})")  # fmt: skip
        sources = preset.data.train
    layout = get_layout(preset.model.layout)
    instances = check_training_images(load_instances(sources, data_root, layout), skip_bad_images, note)
    codec = HeatmapCodec(tuple(preset.model.input_size), tuple(preset.model.heatmap_size), preset.model.sigma)
    return TrainDataset(instances, layout, codec, preset.augment, seed)
