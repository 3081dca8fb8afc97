"""Keypoint layouts and the mappings between them."""

from __future__ import annotations

import numpy as np
import pytest

from posecli.layouts import LAYOUTS, Layout, get_layout, layout_from_names, make_mapping

MMPOSE_COCO_FLIP = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]


def test_flip_indices_derived_from_names_equal_mmpose():
    assert list(LAYOUTS["coco"].flip_indices) == MMPOSE_COCO_FLIP
    assert list(LAYOUTS["coco-aic"].flip_indices) == MMPOSE_COCO_FLIP + [17, 18]
    assert list(LAYOUTS["aic"].flip_indices) == [3, 4, 5, 0, 1, 2, 9, 10, 11, 6, 7, 8, 12, 13]


def test_sigmas():
    coco, aic, union = LAYOUTS["coco"], LAYOUTS["aic"], LAYOUTS["coco-aic"]
    assert coco.sigmas[0] == 0.026 and coco.sigmas[-1] == 0.089
    assert aic.sigmas[12] == pytest.approx(0.01291456)  # head top, from AIC's official evaluation
    assert union.sigmas[:17] == coco.sigmas and union.sigmas[17:] == (0.026, 0.026)


def test_body_halves_partition_keypoints():
    for layout in LAYOUTS.values():
        ids = sorted(layout.upper_body_ids + layout.lower_body_ids)
        assert ids == list(range(layout.num_keypoints))
    assert LAYOUTS["coco"].lower_body_ids == (11, 12, 13, 14, 15, 16)


def test_layout_from_names_and_errors():
    assert layout_from_names(list(LAYOUTS["aic"].keypoints)).name == "aic"
    with pytest.raises(ValueError, match="no known layout"):
        layout_from_names(["nose", "tail"])
    with pytest.raises(ValueError, match="unknown keypoint layout"):
        get_layout("mpii")
    with pytest.raises(ValueError, match="sigmas"):
        Layout("bad", ("a", "b"), (0.1,), (), ())


def test_merge_puts_aic_limbs_at_coco_indices():
    m = make_mapping("aic", "coco")
    kpts = np.arange(14 * 2, dtype=np.float32).reshape(1, 14, 2) + 1
    vis = np.full((1, 14), 2.0, np.float32)
    out, out_vis = m.apply(kpts, vis)
    expected = {0: 6, 1: 8, 2: 10, 3: 5, 4: 7, 5: 9, 6: 12, 7: 14, 8: 16, 9: 11, 10: 13, 11: 15}
    for a, c in expected.items():
        np.testing.assert_array_equal(out[0, c], kpts[0, a])
        assert out_vis[0, c] == 2
    assert (out_vis[0, :5] == 0).all() and (out[0, :5] == 0).all()  # the face stays unlabelled


def test_combine_keeps_coco_and_adds_head_top_and_neck():
    coco = make_mapping("coco", "coco-aic")
    kpts = np.random.default_rng(0).random((2, 17, 2)).astype(np.float32)
    out, vis = coco.apply(kpts, np.ones((2, 17), np.float32))
    np.testing.assert_array_equal(out[:, :17], kpts)
    assert (vis[:, 17:] == 0).all()
    aic = make_mapping("aic", "coco-aic")
    a = np.random.default_rng(1).random((1, 14, 2)).astype(np.float32)
    out, vis = aic.apply(a, np.ones((1, 14), np.float32))
    np.testing.assert_array_equal(out[0, 17], a[0, 12])  # head top
    np.testing.assert_array_equal(out[0, 18], a[0, 13])  # neck


def test_averaged_target_needs_both_sources():
    m = make_mapping("coco", "aic", averages={"neck": ("left_shoulder", "right_shoulder")})
    kpts = np.zeros((2, 17, 2), np.float32)
    kpts[:, 5] = [10, 20]
    kpts[:, 6] = [30, 40]
    vis = np.ones((2, 17), np.float32)
    vis[1, 6] = 0
    out, out_vis = m.apply(kpts, vis)
    np.testing.assert_array_equal(out[0, 13], [20, 30])
    assert out_vis[0, 13] == 1 and out_vis[1, 13] == 0 and (out[1, 13] == 0).all()
