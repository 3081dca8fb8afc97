"""Training data on the bundled sample: MMPose's instance filtering, layout mapping, concatenation, items.

Expected values are derived from the annotation files here, independently of the loader,
or taken from MMPose (reference README §5, §7 item 1; its merge/combine configs' mappings).
"""

from __future__ import annotations

import copy
import json
import re

import cv2
import numpy as np
import pytest
import torch
from conftest import COCO_ANN, COCO_IMAGES, SAMPLE
from test_augment import ARRAYS, GEOMETRY, ScriptedDraws

from posecli.codec import HeatmapCodec
from posecli.data.dataset import SAMPLE_ROOT, TrainDataset, build_train_dataset, fork_safe_opencv, load_instances
from posecli.errors import UserError
from posecli.layouts import get_layout
from posecli.presets import AugmentCfg, Source, load_preset

AIC_ANN = SAMPLE / "aic" / "test_aic.json"
COCO_JSON = json.loads(COCO_ANN.read_text())
AIC_JSON = json.loads(AIC_ANN.read_text())
# MMPose's KeypointConverter mappings (coco-aic merge and combine configs): AIC index -> target index.
AIC_TO_COCO = {0: 6, 1: 8, 2: 10, 3: 5, 4: 7, 5: 9, 6: 12, 7: 14, 8: 16, 9: 11, 10: 13, 11: 15}
AIC_TO_COCO_AIC = {**AIC_TO_COCO, 12: 17, 13: 18}
COCO_SOURCE = Source("coco", "coco", "coco/test_coco.json", "coco")


def kept_by_mmpose(data: dict) -> list[dict]:
    """The annotations MMPose's top-down CocoDataset trains on, in its order (images in file order)."""
    kept = []
    for img in data["images"]:
        W, H = img["width"] - 1, img["height"] - 1
        for ann in (a for a in data["annotations"] if a["image_id"] == img["id"]):
            x, y, w, h = ann["bbox"]
            box_w = min(max(x + w, 0), W) - min(max(x, 0), W)
            box_h = min(max(y + h, 0), H) - min(max(y, 0), H)
            if not ann.get("iscrowd", 0) and ann["num_keypoints"] > 0 and box_w > 0 and box_h > 0:
                kept.append(ann)
    return kept


def keypoints_of(ann: dict) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(ann["keypoints"], np.float32).reshape(-1, 3)
    return k[:, :2], np.minimum(k[:, 2], 1)


@pytest.fixture(scope="module")
def merged():
    return build_train_dataset(load_preset("coco-aic-merge"), None, seed=0, sample=True).instances


@pytest.fixture(scope="module")
def combined():
    return build_train_dataset(load_preset("coco-aic-combine"), None, seed=0, sample=True).instances


def test_coco_sample_keeps_what_mmpose_keeps_in_its_order():
    inst = load_instances([COCO_SOURCE], SAMPLE, get_layout("coco"))
    expected = kept_by_mmpose(COCO_JSON)
    assert len(expected) == 12 and len(COCO_JSON["annotations"]) == 14  # README §1: 14 annotations, 12 with keypoints
    assert inst.ann_ids.tolist() == [a["id"] for a in expected]
    for case in GEOMETRY["train_pipeline"]["cases"]:  # MMPose's own dataset indices
        assert inst.ann_ids[case["dataset_index"]] == case["ann_id"]
    assert inst.summaries[0].annotations == 14 and inst.summaries[0].kept == 12
    assert inst.summaries[0].dropped == {"no keypoints": 2}


def test_coco_boxes_are_clipped_to_the_image_and_keypoints_kept_as_annotated():
    inst = load_instances([COCO_SOURCE], SAMPLE, get_layout("coco"))
    images = {img["id"]: img for img in COCO_JSON["images"]}
    for i, ann in enumerate(kept_by_mmpose(COCO_JSON)):
        img = images[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        clipped = np.clip([x, y, x + w, y + h], 0, [img["width"] - 1, img["height"] - 1] * 2).astype(np.float32)
        np.testing.assert_array_equal(inst.xyxy[i], clipped)
        keypoints, visible = keypoints_of(ann)
        np.testing.assert_array_equal(inst.visible[i], visible)
        np.testing.assert_array_equal(inst.keypoints[i], keypoints * (visible[:, None] > 0))
        assert inst.image_path(i) == str(COCO_IMAGES / img["file_name"])
    assert inst.xyxy[inst.ann_ids.tolist().index(531914), 2] == 639  # its box reaches x = 640.0 in a 640-wide image


def test_crowd_no_keypoints_and_empty_boxes_are_dropped_as_mmpose(tmp_path):
    data = copy.deepcopy(COCO_JSON)
    anns = {a["id"]: a for a in data["annotations"]}
    anns[198196]["iscrowd"] = 1
    anns[230195]["num_keypoints"] = 0  # keypoints still there: the count decides
    anns[460541]["bbox"] = [700, 74.23, 20, 300]  # right of the 640-wide image: x1 = x2 = 639 after clipping
    del anns[488308]["num_keypoints"]  # then counted from the coordinates: kept
    anns[1717641]["keypoints"] = [0] * 51  # all zero although num_keypoints says 12
    del anns[437295]["bbox"]
    anns[467657]["bbox"] = [-10, -5, 50, 100]  # clipped at the top left
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(COCO_IMAGES)
    inst = load_instances([Source("edited", "coco", "ann.json", "images")], tmp_path, get_layout("coco"))
    assert inst.ann_ids.tolist() == [442619, 488308, 1724673, 467657, 531914, 533949, 543117]
    assert inst.summaries[0].dropped == {"crowd": 1, "no keypoints": 4, "empty box": 1, "no bbox or keypoints": 1}
    np.testing.assert_array_equal(inst.xyxy[3], [0, 0, 40, 95])


def test_merge_puts_aic_limbs_at_their_coco_indices_and_leaves_the_face_unlabelled(merged):
    aic = merged.source == 1
    assert merged.keypoints.shape[1:] == (17, 2) and aic.sum() == len(AIC_JSON["annotations"]) == 9
    for row, ann in zip(np.flatnonzero(aic), AIC_JSON["annotations"]):
        keypoints, visible = keypoints_of(ann)
        expected_vis = np.zeros(17, np.float32)
        for a, c in AIC_TO_COCO.items():
            expected_vis[c] = visible[a]
            if visible[a] > 0:
                np.testing.assert_array_equal(merged.keypoints[row, c], keypoints[a])
        np.testing.assert_array_equal(merged.visible[row], expected_vis)
        assert merged.ann_ids[row] == ann["id"]
    assert not merged.visible[aic][:, :5].any()  # nose, eyes, ears: AIC has none


def test_combine_keeps_coco_and_adds_aic_head_top_and_neck(combined):
    coco, aic = combined.source == 0, combined.source == 1
    assert combined.keypoints.shape[1:] == (19, 2)
    for row, ann in zip(np.flatnonzero(coco), kept_by_mmpose(COCO_JSON)):
        keypoints, visible = keypoints_of(ann)
        np.testing.assert_array_equal(combined.visible[row], np.r_[visible, 0, 0])
        np.testing.assert_array_equal(combined.keypoints[row, :17][visible > 0], keypoints[visible > 0])
    for row, ann in zip(np.flatnonzero(aic), AIC_JSON["annotations"]):
        keypoints, visible = keypoints_of(ann)
        expected_vis = np.zeros(19, np.float32)
        for a, c in AIC_TO_COCO_AIC.items():
            expected_vis[c] = visible[a]
        np.testing.assert_array_equal(combined.visible[row], expected_vis)
        np.testing.assert_array_equal(combined.keypoints[row, 17:], keypoints[12:] * (visible[12:, None] > 0))
    assert combined.visible[aic][:, 17:].any()  # the sample does label head tops and necks


def test_sources_are_concatenated_in_order_with_their_own_images(merged):
    coco_ids = [a["id"] for a in kept_by_mmpose(COCO_JSON)]
    assert merged.ann_ids.tolist() == coco_ids + [a["id"] for a in AIC_JSON["annotations"]]
    assert merged.source.tolist() == [0] * 12 + [1] * 9
    assert [(s.name, s.annotations, s.kept) for s in merged.summaries] == [("coco", 14, 12), ("aic", 9, 9)]
    assert len(merged.image_paths) == 4 + 3
    aic_files = {img["id"]: img["file_name"] for img in AIC_JSON["images"]}
    for row, ann in zip(range(12, 21), AIC_JSON["annotations"]):
        # --sample reads the package's own copy (site-packages after a non-editable install)
        assert merged.image_path(row) == str(SAMPLE_ROOT / "aic" / aic_files[ann["image_id"]])


@pytest.mark.parametrize("index", range(len(GEOMETRY["train_pipeline"]["cases"])))
def test_dataset_path_reproduces_mmpose_train_pipeline(index):
    """MMPose's item (dataset index, scripted draws) through TrainDataset's own loading, sample and targets."""
    case = GEOMETRY["train_pipeline"]["cases"][index]
    ds = build_train_dataset(load_preset("coco"), None, seed=0, sample=True)
    i = case["dataset_index"]
    np.testing.assert_array_equal(ds.instances.xyxy[i], np.float32(case["bbox_xyxy_float32"]))
    visible = ds.instances.visible[i]
    np.testing.assert_array_equal(visible, case["keypoints_visible_in"])
    np.testing.assert_array_equal(ds.instances.keypoints[i][visible > 0], np.float32(case["keypoints_in"])[visible > 0])
    draws = ScriptedDraws(case["draws"])
    item = ds.targets(ds.sample(i, draws))
    assert draws.done()
    np.testing.assert_array_equal(item["image"].numpy(), ARRAYS[f"pipe{index}_crop_bgr_u8"])
    np.testing.assert_allclose(item["heatmaps"].numpy(), ARRAYS[f"pipe{index}_target_heatmaps"], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(item["weights"].numpy(), ARRAYS[f"pipe{index}_keypoint_weights"][0])


@pytest.mark.parametrize("preset, k", [("coco", 17), ("coco-aic-combine", 19)])
def test_items_have_the_documented_shapes_and_targets_follow_weights(preset, k):
    ds = build_train_dataset(load_preset(preset), None, seed=0, sample=True)
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (256, 192, 3) and item["image"].dtype == torch.uint8
        assert item["heatmaps"].shape == (k, 64, 48) and item["heatmaps"].dtype == torch.float32
        assert item["weights"].shape == (k,) and item["weights"].dtype == torch.float32
        drawn = item["heatmaps"].amax(dim=(1, 2)) > 0
        assert torch.all(item["weights"][drawn] > 0), "a target drawn for a keypoint with weight 0"
        assert torch.all(item["heatmaps"].amax(dim=(1, 2)) <= 1)


def test_items_depend_only_on_seed_epoch_and_index():
    a = build_train_dataset(load_preset("coco-aic-merge"), None, seed=5, sample=True)
    b = build_train_dataset(load_preset("coco-aic-merge"), None, seed=5, sample=True)
    a.set_epoch(3)
    b.set_epoch(3)
    first = [a[i] for i in range(len(a))]
    for i in reversed(range(len(b))):  # another order, another object
        assert all(torch.equal(first[i][key], b[i][key]) for key in first[i])
    b.set_epoch(4)
    other_seed = build_train_dataset(load_preset("coco-aic-merge"), None, seed=6, sample=True)
    other_seed.set_epoch(3)
    for i in range(len(a)):  # the box scale is drawn for every item: the crop always changes
        assert not torch.equal(first[i]["image"], b[i]["image"])
        assert not torch.equal(first[i]["image"], other_seed[i]["image"])


def test_dataloader_workers_give_the_same_items():
    ds = build_train_dataset(load_preset("coco"), None, seed=0, sample=True)
    ds.set_epoch(2)
    image = np.zeros((1500, 1500, 3), np.uint8)
    cv2.setNumThreads(2)
    cv2.warpAffine(image, np.float32([[1, 0.1, 0], [0.1, 1, 0]]), (1200, 1200))  # OpenCV's thread pool now runs here
    fork_safe_opencv()  # workers forked from a process whose OpenCV pool ran must not touch it (they hung)
    loader = torch.utils.data.DataLoader(ds, batch_size=6, num_workers=2, timeout=120)
    for start, batch in zip(range(0, len(ds), 6), loader):
        for key in batch:
            assert torch.equal(batch[key], torch.stack([ds[i][key] for i in range(start, start + 6)]))


def test_missing_annotation_file_names_it(tmp_path):
    (tmp_path / "coco").mkdir()
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'coco' / 'test_coco.json'}: no such annotation file of training source 'coco'")):
        load_instances([COCO_SOURCE], tmp_path, get_layout("coco"))


def test_wrong_keypoint_names_name_the_file():
    wrong = Source("aic-as-coco", "coco", "aic/test_aic.json", "aic")
    with pytest.raises(UserError, match=re.escape(str(AIC_ANN)) + ".*are layout 'aic' \\(14\\), the preset says 'coco'"):
        load_instances([wrong], SAMPLE, get_layout("coco"))


def test_missing_or_broken_image_names_it_when_read(tmp_path):
    data = copy.deepcopy(COCO_JSON)
    data["images"][0]["file_name"] = "missing.jpg"
    data["images"][1]["file_name"] = "broken.jpg"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "broken.jpg").write_bytes(b"not a JPEG")
    (tmp_path / "ann.json").write_text(json.dumps(data))
    inst = load_instances([Source("c", "coco", "ann.json", "images")], tmp_path, get_layout("coco"))
    ds = TrainDataset(inst, get_layout("coco"), HeatmapCodec(), AugmentCfg(), seed=0)
    # read explicitly, a bad image is an error (a training item replaces it instead: tests/test_faults_data.py)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'images' / 'missing.jpg'}: does not exist")):
        ds.sample(0, ds.draws(0))
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'images' / 'broken.jpg'}: cannot be decoded")):
        ds.sample(1, ds.draws(1))


def test_malformed_annotation_names_the_file_and_the_annotation(tmp_path):
    data = copy.deepcopy(COCO_JSON)
    data["annotations"][2]["bbox"] = [1, 2, 3]
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (tmp_path / "images").symlink_to(COCO_IMAGES)
    with pytest.raises(UserError, match=re.escape(f"{tmp_path / 'ann.json'}: annotation 230195 (image 40083): bbox is a list of 3 values")):
        load_instances([Source("c", "coco", "ann.json", "images")], tmp_path, get_layout("coco"))


def test_missing_data_root_and_negative_seed_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"no data root \(data_root\)"):
        build_train_dataset(load_preset("coco"), None, seed=0)
    with pytest.raises(UserError, match=re.escape(f"data root {tmp_path / 'nowhere'} is not a folder")):
        build_train_dataset(load_preset("coco"), tmp_path / "nowhere", seed=0)
    with pytest.raises(UserError, match="seed -1"):
        build_train_dataset(load_preset("coco"), None, seed=-1, sample=True)
