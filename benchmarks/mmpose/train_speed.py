"""MMPose's training data pipeline (samples/s, one core) and one HRNet-w32 training step at batch 8.

    python benchmarks/mmpose/train_speed.py [--passes 20] [--steps 5] [--threads 2]

The pipeline is MMPose's own (LoadImage through GenerateTarget and PackPoseInputs, from the
installed w32 config) on the bundled COCO sample's 12 persons, item by item in one process with
one OpenCV and one torch thread, as ``posecli benchmark --train`` times its own pipeline's stages.
The step is ``model.train_step`` with Adam (lr 5e-4) on 8 of those items, as
``posecli benchmark --train --batch-sizes 8`` times posecli's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import torch
from common import config, train_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for the training step")
    args = parser.parse_args()
    cfg = config()
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    ds = train_dataset(cfg)
    n = len(ds)
    for i in range(n):  # warm-up: file cache, imports
        ds[i]
    rates = []
    for _ in range(args.passes):
        start = time.perf_counter()
        for i in range(n):
            ds[i]
        rates.append(n / (time.perf_counter() - start))
    print(f"MMPose train pipeline, one core: {statistics.median(rates):.1f} samples/s "
          f"(median of {args.passes} passes over {n} persons; {min(rates):.0f}..{max(rates):.0f})")

    if args.steps:
        from mmengine.dataset import pseudo_collate
        from mmengine.optim import OptimWrapper
        from mmpose.models import build_pose_estimator

        torch.set_num_threads(args.threads)
        model = build_pose_estimator(cfg.model)
        model.init_weights()  # HRNet's N(0, 0.001) init, as a run from scratch
        model.train()
        optim = OptimWrapper(torch.optim.Adam(model.parameters(), lr=5e-4))
        batch = pseudo_collate([ds[i % n] for i in range(8)])
        model.train_step(batch, optim)  # warm-up
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            model.train_step(batch, optim)
            times.append(time.perf_counter() - start)
        print(f"MMPose training step, w32, batch 8, {args.threads} threads: {statistics.median(times):.2f} s "
              f"(median of {args.steps}: {', '.join(f'{t:.2f}' for t in times)})")


if __name__ == "__main__":
    main()
