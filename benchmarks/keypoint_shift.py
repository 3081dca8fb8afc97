"""How far keypoints move between two `posecli eval --out` runs of the same boxes (e.g. fp32 vs bf16).

    python benchmarks/keypoint_shift.py FP32_DIR BF16_DIR [--min-score 0.2]

Pairs the results of the two runs by (image, box), keeps the keypoints the first run scores
above ``--min-score``, and prints how many move by more than 1% of their crop's height (the
padded, aspect-fixed box the network saw), and the median / p99 / largest move in image pixels.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from posecli.geometry import box_center_scale, fix_aspect_ratio


def read(folder: Path) -> dict[tuple, np.ndarray]:
    rows = json.loads((folder / "results.keypoints.json").read_text())
    return {(r["image_id"], *np.float32(r["bbox"]).tolist()): np.reshape(r["keypoints"], (-1, 3)) for r in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", type=Path)
    parser.add_argument("other", type=Path)
    parser.add_argument("--min-score", type=float, default=0.2)
    args = parser.parse_args()
    ref, other = read(args.reference), read(args.other)
    keys = [k for k in ref if k in other]
    a, b = np.stack([ref[k] for k in keys]), np.stack([other[k] for k in keys])
    xywh = np.array([k[1:] for k in keys], np.float32)
    _, scale = box_center_scale(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1))
    crop_h = fix_aspect_ratio(scale, 192 / 256)[:, 1:2]  # (N, 1) image px
    moved = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)  # (N, K) px
    sure = a[..., 2] > args.min_score
    far = (moved > 0.01 * crop_h) & sure
    print(f"{len(keys)} boxes in both runs ({len(ref)} and {len(other)}), {sure.sum()} keypoints scored > {args.min_score}: "
          f"{far.sum()} ({far.sum() / max(sure.sum(), 1):.1%}) move by more than 1% of the crop height; "
          f"median {np.median(moved[sure]):.2f} px, p99 {np.percentile(moved[sure], 99):.2f} px, "
          f"max {moved[sure].max():.2f} px; scores differ by up to {np.abs(a[..., 2] - b[..., 2]).max():.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
