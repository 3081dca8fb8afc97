"""posecli against MMPose 1.3.2 on its own small checkpoints: crops, heatmaps, keypoints.

Tolerances are those of tests/data/reference/README.md §6.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from conftest import CKPT17, CKPT19, COCO_IMAGES
from posecli.codec import HeatmapCodec
from posecli.engine.inference import crop_boxes, decode_to_image
from posecli.geometry import box_center_scale, fix_aspect_ratio, warp_matrix
from posecli.layouts import LAYOUTS
from posecli.models.topdown import TopDown, flip_back, normalise
from posecli.weights import load_model


@pytest.fixture(scope="module")
def model17():
    return load_model(CKPT17)[0]


def _boxes(index):
    return np.array([b["bbox_xyxy_float32"] for b in index["boxes"]], dtype=np.float32)


def test_crop_center_scale_and_warp_match_mmpose(first5):
    index, arrays = first5
    image = cv2.imread(str(COCO_IMAGES / index["boxes"][0]["image_file"]))
    crops = crop_boxes(image, _boxes(index), (192, 256))
    for i, box in enumerate(index["boxes"]):
        center, scale = box_center_scale(np.array(box["bbox_xyxy_float32"], np.float32))
        np.testing.assert_array_equal(center[0], np.float32(box["bbox_center"]))
        np.testing.assert_array_equal(scale[0], np.float32(box["bbox_scale_padding1p25"]))
        np.testing.assert_array_equal(fix_aspect_ratio(scale, 0.75)[0], np.float32(box["input_scale_aspect_fixed"]))
        m = warp_matrix(crops.centers[i], crops.scales[i], 0.0, (192, 256))
        np.testing.assert_allclose(m, box["warp_matrix_2x3"], atol=1e-6)
    np.testing.assert_array_equal(crops.images, arrays["crops_bgr_u8"])  # OpenCV 4.x: bit-exact


def test_normalised_input_is_bit_exact(first5):
    _, arrays = first5
    x = normalise(torch.from_numpy(arrays["crops_bgr_u8"]))
    np.testing.assert_array_equal(x.numpy(), arrays["input_nchw_f32"])


def test_heatmaps_without_and_with_flip(model17, first5):
    _, arrays = first5
    x = torch.from_numpy(arrays["input_nchw_f32"])
    with torch.inference_mode():
        plain = model17(x).numpy()
        mirrored = model17(x.flip(-1))
    np.testing.assert_allclose(plain, arrays["heatmaps_noflip"], atol=1e-5)
    np.testing.assert_allclose(mirrored.numpy(), arrays["heatmaps_flipinput_raw"], atol=1e-5)
    # flip-back, shift and fuse from MMPose's own raw maps: bit-exact
    raw = torch.from_numpy(arrays["heatmaps_flipinput_raw"])
    back = flip_back(raw, LAYOUTS["coco"].flip_indices).numpy()
    np.testing.assert_array_equal(back, arrays["heatmaps_flip_back_shifted"])
    fused = (torch.from_numpy(arrays["heatmaps_noflip"]) + torch.from_numpy(back)) * 0.5
    np.testing.assert_array_equal(fused.numpy(), arrays["heatmaps_fused"])


@pytest.mark.parametrize("channels_last", [False, True])
def test_topdown_flip_test_from_crops(model17, first5, channels_last):
    _, arrays = first5
    net = model17.to(memory_format=torch.channels_last) if channels_last else model17
    model = TopDown(net, LAYOUTS["coco"].flip_indices)
    fused = model.heatmaps(torch.from_numpy(arrays["crops_bgr_u8"])).numpy()
    np.testing.assert_allclose(fused, arrays["heatmaps_fused"], atol=1e-5)


@pytest.mark.parametrize("decoder", ["std", "dark"])
@pytest.mark.parametrize("flip", ["noflip", "flip"])
def test_decoded_keypoints_in_image(first5, decoder, flip):
    index, arrays = first5
    heatmaps = arrays["heatmaps_fused" if flip == "flip" else "heatmaps_noflip"]
    crops = crop_boxes(cv2.imread(str(COCO_IMAGES / "000000000785.jpg")), _boxes(index), (192, 256))
    codec = HeatmapCodec(dark=decoder == "dark")
    kpts, scores = decode_to_image(heatmaps, codec, crops.centers, crops.scales)
    np.testing.assert_allclose(scores, arrays[f"scores_{decoder}_{flip}"], atol=1e-5)
    stable = np.array([b[f"stable_{decoder}_{flip}"] for b in index["boxes"]])
    expected = arrays[f"keypoints_image_{decoder}_{flip}"]
    tol = 1e-3 if decoder == "std" else 2e-3
    assert stable.sum() > 50  # most keypoints are compared tightly
    np.testing.assert_allclose(kpts[stable], expected[stable], atol=tol)


def test_combine_model_19_keypoints(first2_19, first5):
    index, arrays = first2_19
    _, first5_arrays = first5
    net, info = load_model(CKPT19)
    assert info.layout == "coco-aic" and net.head.final_layer.out_channels == 19
    model = TopDown(net, LAYOUTS["coco-aic"].flip_indices)
    fused = model.heatmaps(torch.from_numpy(first5_arrays["crops_bgr_u8"][:2])).numpy()
    np.testing.assert_allclose(fused, arrays["heatmaps_fused"], atol=1e-5)
    crops = crop_boxes(cv2.imread(str(COCO_IMAGES / "000000000785.jpg")), _boxes(index)[:2], (192, 256))
    kpts, scores = decode_to_image(fused, HeatmapCodec(), crops.centers, crops.scales)
    np.testing.assert_allclose(scores, arrays["scores_std_flip"], atol=1e-5)
    stable = np.array([b["stable_std_flip"] for b in index["boxes"]])
    np.testing.assert_allclose(kpts[stable], arrays["keypoints_image_std_flip"][stable], atol=1e-3)
