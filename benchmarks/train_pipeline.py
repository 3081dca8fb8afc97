"""Training-pipeline speed: samples/s of one worker (JPEG decode through targets), per stage, and through a DataLoader.

The bundled sample's persons (real JPEGs, real annotations) are repeated ``--copies`` times
so that an epoch is long enough to time; every copy is its own item, hence its own
augmentation draws. Items are visited in a shuffled order, as in training.
Run from the repo root: python -m benchmarks.train_pipeline [--preset coco] [--repeats 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import cv2
import numpy as np
import torch

from posecli.augment import affine_crop
from posecli.data.dataset import Instances, TrainDataset, build_train_dataset, read_image, fork_safe_opencv
from posecli.presets import load_preset

# MMPose 1.3.2's train pipeline on the same sample, one core, measured by benchmarks/mmpose/train_speed.py
# on this 2-core AVX-512 machine (2026-12-01; the 118 came from an older machine).
MMPOSE_SAMPLES_PER_S = 285.0
TARGET_RATIO = 2.5
STAGES = ("decode", "augment", "warp", "targets")


def repeated(instances: Instances, copies: int) -> Instances:
    """The same persons ``copies`` times over (the images are shared, not copied)."""
    per_person = ("image_index", "xyxy", "keypoints", "visible", "ann_ids", "source")
    return dataclasses.replace(instances, **{k: np.concatenate([getattr(instances, k)] * copies) for k in per_person})


def one_worker_rate(ds: TrainDataset, epoch: int) -> tuple[float, float]:
    """One shuffled epoch item by item in this process -> (samples per wall second, per CPU second)."""
    ds.set_epoch(epoch)
    order = np.random.default_rng(epoch).permutation(len(ds))
    wall, cpu = time.perf_counter(), time.process_time()
    for i in order:
        ds[int(i)]
    return len(order) / (time.perf_counter() - wall), len(order) / (time.process_time() - cpu)


def stage_times(ds: TrainDataset, epoch: int) -> dict[str, tuple[float, float]]:
    """Per stage: (wall, CPU) seconds per sample, by the dataset's own steps in ``__getitem__``'s order."""
    ds.set_epoch(epoch)
    total = {stage: np.zeros(2) for stage in STAGES}
    order = np.random.default_rng(epoch).permutation(len(ds))

    def now() -> np.ndarray:
        return np.array([time.perf_counter(), time.process_time()])

    for n, i in enumerate(int(i) for i in order):
        t0 = now()
        image = read_image(ds.instances.image_path(i))
        t1 = now()
        s = ds.augmented(i, image, ds.draws(i))
        t2 = now()
        s = affine_crop(s, ds.codec.input_size)
        t3 = now()
        item = ds.targets(s)
        t4 = now()
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            total[stage] += dt
        if n < 8:  # the staged path is the dataset's path
            assert all(torch.equal(v, ds[i][k]) for k, v in item.items()), "staged item differs from ds[i]"
    return {stage: tuple(t / len(order)) for stage, t in total.items()}


def loader_rate(ds: TrainDataset, epoch: int, workers: int, batch_size: int) -> tuple[float, float]:
    """One epoch through a fresh DataLoader iterator -> (samples/s including worker start, after the first batch)."""
    ds.set_epoch(epoch)
    fork_safe_opencv()
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(epoch))  # fmt: skip
    start = time.perf_counter()
    n = first = 0
    for n_batches, batch in enumerate(loader):
        if n_batches == 0:
            first, after_first = len(batch["image"]), time.perf_counter()
        n += len(batch["image"])
    end = time.perf_counter()
    return n / (end - start), (n - first) / (end - after_first)


def load() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cores"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="coco", help="coco: 4 COCO images; coco-aic-merge / coco-aic-combine add 3 AIC images")
    parser.add_argument("--copies", type=int, default=20, help="times the sample's persons are repeated per epoch")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--loader-copies", type=int, default=80)
    parser.add_argument("--loader-repeats", type=int, default=3)
    args = parser.parse_args()

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    ds = build_train_dataset(load_preset(args.preset), None, seed=0, sample=True)
    persons, images = len(ds), len(ds.instances.image_paths)
    ds.instances = repeated(ds.instances, args.copies)
    print(f"preset {args.preset}: {persons} persons on {images} sample images, x{args.copies} = {len(ds)} items per epoch")
    print(f"before: {load()}")

    one_worker_rate(ds, epoch=1000)  # warm-up: file cache, allocator, imports
    rates = [one_worker_rate(ds, epoch) for epoch in range(args.repeats)]
    rate_wall = statistics.median(r[0] for r in rates)
    rate_cpu = statistics.median(r[1] for r in rates)
    print(f"\none worker (1 OpenCV + 1 torch thread), median of {args.repeats} epochs:")
    print(f"  {rate_wall:6.1f} samples/s wall  ({min(r[0] for r in rates):.1f}..{max(r[0] for r in rates):.1f}), "
          f"{rate_cpu:6.1f} samples per CPU second")  # fmt: skip
    print(f"  MMPose {MMPOSE_SAMPLES_PER_S:.0f} samples/s (benchmarks/mmpose/train_speed.py) -> x{rate_wall / MMPOSE_SAMPLES_PER_S:.2f} wall, "
          f"x{rate_cpu / MMPOSE_SAMPLES_PER_S:.2f} by CPU time (goal x{TARGET_RATIO}: {TARGET_RATIO * MMPOSE_SAMPLES_PER_S:.0f} samples/s)")  # fmt: skip

    per_stage = [stage_times(ds, epoch) for epoch in range(args.repeats)]
    wall = {stage: statistics.median(t[stage][0] for t in per_stage) for stage in STAGES}
    cpu = {stage: statistics.median(t[stage][1] for t in per_stage) for stage in STAGES}
    total_wall, total_cpu = sum(wall.values()), sum(cpu.values())
    print(f"\nstages, median of {args.repeats} epochs:   wall ms/sample  share    CPU ms/sample  share")
    for stage in STAGES:
        print(f"  {stage:8s} {wall[stage] * 1e3:26.3f}  {wall[stage] / total_wall:6.1%} {cpu[stage] * 1e3:14.3f}  {cpu[stage] / total_cpu:6.1%}")
    print(f"  {'total':8s} {total_wall * 1e3:26.3f}  {'':6s} {total_cpu * 1e3:14.3f}")
    print(f"  decode alone caps one worker at {1 / cpu['decode']:.0f} samples per CPU second "
          f"(x{1 / cpu['decode'] / MMPOSE_SAMPLES_PER_S:.2f} MMPose); everything after it takes {(total_cpu - cpu['decode']) * 1e3:.3f} ms")  # fmt: skip

    ds.instances = repeated(ds.instances, max(1, args.loader_copies // args.copies))
    runs = [loader_rate(ds, epoch, args.workers, args.batch_size) for epoch in range(args.loader_repeats)]
    print(f"\nDataLoader(num_workers={args.workers}, batch_size={args.batch_size}), {len(ds)} items, median of {args.loader_repeats} epochs:")
    print(f"  {statistics.median(r[0] for r in runs):.1f} samples/s per epoch including worker start, "
          f"{statistics.median(r[1] for r in runs):.1f} after the first batch")  # fmt: skip
    print(f"\nafter: {load()}")


if __name__ == "__main__":
    main()
