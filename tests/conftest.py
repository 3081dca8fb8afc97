"""Paths to the small real data the suite runs on (copied from ../shared so a clone passes alone)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

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
