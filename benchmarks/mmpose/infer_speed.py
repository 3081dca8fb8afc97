"""Persons/s of MMPose's ``inference_topdown`` (HRNet-w32, flip test on and off) on the 118 sample boxes.

    python benchmarks/mmpose/infer_speed.py --checkpoint /tmp/w32_random_mmpose.pth [--repeats 3]

One call per image with all of its boxes, as MMPose's demo does. The checkpoint is the same
random w32 that ``benchmarks/eval_speed.py`` times (written by ``random_w32.py``): random
weights can hold denormals that slow any CPU, so both sides must run the same ones.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import config, sample_boxes
from mmpose.apis import inference_topdown, init_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    boxes = sample_boxes()
    persons = sum(len(b) for b in boxes.values())
    model = init_model(config(), checkpoint=args.checkpoint, device="cpu")
    print(f"MMPose inference_topdown, HRNet-w32, {persons} persons on {len(boxes)} images, {torch.get_num_threads()} threads")

    def one_pass() -> float:
        start = time.perf_counter()
        for path, xyxy in boxes.items():
            inference_topdown(model, path, xyxy, bbox_format="xyxy")
        return time.perf_counter() - start

    for flip in (True, False):
        model.test_cfg["flip_test"] = flip
        one_pass()  # warm-up
        times = [one_pass() for _ in range(args.repeats)]
        print(f"  flip {'on ' if flip else 'off'}: {persons / statistics.median(times):.2f} persons/s "
              f"(median of {args.repeats}: {', '.join(f'{t:.1f}' for t in times)} s)")


if __name__ == "__main__":
    main()
