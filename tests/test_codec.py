"""Heatmap decoding against MMPose's MSRAHeatmap on crafted cases (reference README §4)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import REF
from posecli.codec import HeatmapCodec

DECODE = np.load(REF / "codec" / "codec_decode.npz")


@pytest.mark.parametrize("case", ["d0", "d1", "d2", "d3", "d4"])
@pytest.mark.parametrize("dark", [False, True])
def test_decode_matches_mmpose(case, dark):
    kind = "dark" if dark else "std"
    keypoints, scores = HeatmapCodec(dark=dark).decode(DECODE[f"{case}_heatmaps"])
    np.testing.assert_allclose(scores, DECODE[f"{case}_scores_{kind}"][0], atol=1e-5)
    np.testing.assert_allclose(keypoints, DECODE[f"{case}_keypoints_{kind}"][0], atol=1e-4 if not dark else 1e-3)


def test_decode_of_encode_round_trips_to_the_grid():
    """Keypoints on the 4-px grid encode to peaks that decode back to themselves."""
    codec = HeatmapCodec()
    kpts = np.array([[8.0, 8.0], [96.0, 128.0], [180.0, 40.0]], dtype=np.float32)
    heatmaps, weights = codec.encode(kpts, np.ones(3, np.float32))
    decoded, scores = codec.decode(heatmaps)
    np.testing.assert_array_equal(weights, 1)
    np.testing.assert_allclose(decoded, kpts)
    np.testing.assert_allclose(scores, 1.0)


def test_empty_heatmap_decodes_to_minus_one_grid_cell():
    """MMPose: max <= 0 -> (-1, -1) on the heatmap, i.e. (-4, -4) input pixels, score 0."""
    keypoints, scores = HeatmapCodec().decode(np.zeros((1, 64, 48), np.float32))
    np.testing.assert_array_equal(keypoints, [[-4.0, -4.0]])
    assert scores[0] == 0
