"""Seconds per training step (forward + MSE loss + backward + Adam) on this CPU, per setting.

    python benchmarks/train_step.py [--arch hrnet-w32] [--batch 8] [--repeats 3]

One real batch of the bundled sample (MMPose's augmentations, 256x192 crops) and a freshly
initialised model, as a run starts. Settings are measured round-robin (repeat r of every
setting before repeat r+1 of any), so load from other work on the machine spreads over all
of them; the table gives the median of the repeats after one warm-up step each, and ratios
to plain float32 NCHW measured in the same run. MMPose 1.3.2's w32 step at batch 8 on this
machine: see MMPOSE_W32_B8 (the issue's target is <= 0.7 x MMPose's).

The losses of every setting are printed: a setting is only a candidate for the training
loop's default if they equal plain NCHW's.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from posecli.data.dataset import build_train_dataset
from posecli.engine.train import keypoint_mse, make_adam
from posecli.layouts import get_layout
from posecli.models.hrnet import build_model
from posecli.models.topdown import normalise
from posecli.presets import load_preset

SETTINGS = {"eager NCHW": False, "channels-last": True}  # name -> channels_last
# s/step of MMPose 1.3.2's model.train_step, w32, batch 8, 2 threads, measured by benchmarks/mmpose/train_speed.py
# on this 2-core AVX-512 machine (2026-12-01; the 5.2 s came from an older machine).
MMPOSE_W32_B8 = 1.83


def batch(batch_size: int) -> dict:
    preset = load_preset("coco-aic-merge")
    data = build_train_dataset(preset, None, seed=0, sample=True)
    items = [data[i % len(data)] for i in range(batch_size)]
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


class Runner:
    """One setting: its own model and Adam state, so every setting trains from the same start."""

    def __init__(self, model: torch.nn.Module, channels_last: bool):
        self.model = copy.deepcopy(model).train()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.channels_last = channels_last
        self.optimizer = make_adam(self.model.parameters(), lr=5e-4)

    def step(self, b: dict) -> tuple[float, float]:
        """-> (seconds, loss) of one step."""
        t0 = time.perf_counter()
        x = normalise(b["image"])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = keypoint_mse(self.model(x), b["heatmaps"], b["weights"])
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - t0
        return seconds, loss.item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="hrnet-w32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    b = batch(args.batch)
    torch.manual_seed(0)
    model = build_model(args.arch, get_layout("coco").num_keypoints)
    runners = {name: Runner(model, flag) for name, flag in SETTINGS.items()}
    times = {name: [] for name in SETTINGS}
    losses = {name: [] for name in SETTINGS}
    print(f"{args.arch}, batch {args.batch}, {torch.get_num_threads()} threads; warm-up + {args.repeats} steps per setting")
    for r in range(args.repeats + 1):
        for name, runner in runners.items():
            seconds, loss = runner.step(b)
            if r:  # repeat 0 is the warm-up
                times[name].append(seconds)
            losses[name].append(loss)
    base = statistics.median(times["eager NCHW"])
    print(f"{'setting':34s} {'median s/step':>14s} {'all':>24s} {'vs NCHW':>8s} {f'vs MMPose {MMPOSE_W32_B8} s':>16s}  losses of the steps")
    for name in SETTINGS:
        med = statistics.median(times[name])
        spread = " ".join(f"{t:.2f}" for t in times[name])
        print(f"{name:34s} {med:14.2f} {spread:>24s} {med / base:8.2f} {med / MMPOSE_W32_B8:16.2f}  "
              + " ".join(f"{v:.7f}" for v in losses[name]))  # fmt: skip


if __name__ == "__main__":
    main()
