"""Paths to the small real data the suite runs on (copied from ../shared so a clone passes alone)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

# rich folds a word longer than the console (80 columns off a terminal): the long temporary paths of
# pytest's workers would be cut in two inside the messages the tests read. Set before posecli.cli imports.
os.environ["COLUMNS"] = "250"

DATA = Path(__file__).parent / "data"
REF = DATA / "reference"
SAMPLE = Path(__file__).parent.parent / "posecli" / "sample"
COCO_IMAGES = SAMPLE / "coco"
COCO_ANN = SAMPLE / "coco" / "test_coco.json"
COCO_DET = SAMPLE / "coco" / "test_coco_det_AP_H_56.json"
CKPT17 = REF / "hrnet_small_coco17.pth"
CKPT19 = REF / "hrnet_small_cocoaic19.pth"


@pytest.fixture(scope="session")
def first5():
    return json.loads((REF / "first5" / "first5_index.json").read_text()), np.load(REF / "first5" / "first5_arrays.npz")


@pytest.fixture(scope="session")
def first2_19():
    d = REF / "first2_cocoaic19"
    return json.loads((d / "first2_cocoaic19_index.json").read_text()), np.load(d / "first2_cocoaic19_arrays.npz")


# hrnet-small at 64x96 on the bundled sample, no augmentation that costs time: 3 steps an epoch, seconds a run.
TINY_RUN = ["--sample", "--batch-size", "4"] + [a for kv in [
    "model.input_size=[64,96]", "model.heatmap_size=[16,24]", "data.val.interval=1000", "test.batch_size=64",
    "train.warmup_iters=5", "augment.rotate_prob=0", "augment.half_body_prob=0", "augment.scale_prob=0", "augment.shift_prob=0",
] for a in ("--set", kv)]  # fmt: skip


def cli(*args):
    """``posecli ARGS`` through typer's runner, as a user types it."""
    from posecli.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def said(result) -> str:
    """What a command printed, with rich's line wrapping undone."""
    return " ".join(result.output.split())


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread in every test module, as torchrun gives each process (OMP_NUM_THREADS=1): the same
    sums, and on a shared 2-core machine no OpenMP threads waiting for a busy core."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
