"""`posecli convert aic` and `convert remap`: golden output against MMPose's file, counts, errors, CLI."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from posecli.cli import app
from posecli.cli import common
from posecli.data.aic import convert_aic, convert_aic_file, load_raw, read_image_size
from posecli.data.remap import remap_files
from posecli.errors import UserError
from posecli.layouts import get_layout

from conftest import COCO_ANN, DATA, SAMPLE

AIC_RAW_3 = DATA / "aic_raw" / "aic_raw_3.json"
AIC_EXAMPLE = DATA / "aic_raw" / "keypoint_annotations_example.json"
AIC_IMAGES = SAMPLE / "aic"
AIC_MMPOSE = SAMPLE / "aic" / "test_aic.json"
IMAGE = "054d9ce9201beffc76e5ff2169d2af2f027002ca"  # first image of aic_raw_3.json


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def raw_entry(image_id: str = "img0", **humans) -> dict:
    """One raw AIC image entry; humans given as name=(keypoints, box)."""
    return {
        "url": "http://example.com/" + image_id,
        "image_id": image_id,
        "keypoint_annotations": {h: kb[0] for h, kb in humans.items()},
        "human_annotations": {h: kb[1] for h, kb in humans.items()},
    }


GOOD_KEYPOINTS = [10, 20, 1, 11, 21, 2] + [0, 0, 3] * 12
GOOD_BOX = [5, 6, 50, 80]


# --- convert aic --------------------------------------------------------------------------------


def test_golden_matches_mmpose_aic_file(tmp_path):
    """aic_raw_3.json + the sample images -> MMPose's own test_aic.json, plus area and iscrowd."""
    summary = convert_aic_file(AIC_RAW_3, tmp_path / "aic.json", images_dir=AIC_IMAGES)
    ours, mmpose = read(tmp_path / "aic.json"), read(AIC_MMPOSE)

    assert ours["categories"] == mmpose["categories"]
    assert ours["images"] == mmpose["images"]  # ids 1.., url, file name, width and height from headers
    assert [list(i) for i in ours["images"]] == [list(i) for i in mmpose["images"]]  # same key order
    assert len(ours["annotations"]) == len(mmpose["annotations"]) == 9
    for got, want in zip(ours["annotations"], mmpose["annotations"]):
        x, y, w, h = want["bbox"]
        assert got["area"] == pytest.approx(w * h * 0.53) and got["iscrowd"] == 0
        strip = lambda a: {k: v for k, v in a.items() if k not in ("id", "area", "iscrowd")}  # noqa: E731
        assert strip(got) == strip(want)
        assert all(type(v) is int for v in got["keypoints"] + got["bbox"])  # ints, as MMPose's file
    assert len({a["id"] for a in ours["annotations"]}) == 9
    assert (summary.images, summary.persons, summary.sizes, summary.missing_images) == (3, 9, True, [])


def test_example_file_counts_and_self_eval_ap_is_one(tmp_path):
    """1,000 images / 2,761 persons: visibility carries over exactly; COCOeval of GT vs itself is 1.0."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    raw = load_raw(AIC_EXAMPLE)
    summary = convert_aic_file(AIC_EXAMPLE, tmp_path / "aic.json")
    coco = read(tmp_path / "aic.json")
    assert (len(coco["images"]), len(coco["annotations"])) == (1000, 2761) == (summary.images, summary.persons)
    assert not summary.sizes and all("width" not in i for i in coco["images"])

    # Per keypoint, raw AIC 1/2/3 counts equal COCO 2/1/0 counts.
    raw_vis = np.array([kp[2::3] for e in raw for kp in e["keypoint_annotations"].values()])
    out_vis = np.array([a["keypoints"][2::3] for a in coco["annotations"]])
    for aic_v, coco_v in ((1, 2), (2, 1), (3, 0)):
        np.testing.assert_array_equal((raw_vis == aic_v).sum(0), (out_vis == coco_v).sum(0))
    out_xy = np.array([a["keypoints"] for a in coco["annotations"]]).reshape(-1, 14, 3)[..., :2]
    assert not out_xy[out_vis == 0].any()  # unlabelled at (0, 0)
    assert [a["num_keypoints"] for a in coco["annotations"]] == (out_vis > 0).sum(1).tolist()
    assert summary.labelled == dict(zip(get_layout("aic").keypoints, (raw_vis != 3).sum(0).tolist()))
    assert len({a["id"] for a in coco["annotations"]}) == 2761

    # human2 before human10: annotations follow the raw boxes in numeric human order.
    many = next(i for i, e in enumerate(raw) if len(e["human_annotations"]) >= 10)
    boxes = raw[many]["human_annotations"]
    want = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in (boxes[f"human{n}"] for n in range(1, len(boxes) + 1))]
    assert [a["bbox"] for a in coco["annotations"] if a["image_id"] == many + 1] == want

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(tmp_path / "aic.json"))
        results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0} for a in coco["annotations"]]
        evaluation = COCOeval(gt, gt.loadRes(results), iouType="keypoints")
        evaluation.params.kpt_oks_sigmas = np.array(get_layout("aic").sigmas)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_read_image_size_from_headers(tmp_path):
    """JPEG (progressive, from the SOF marker) and PNG from their headers; other formats via OpenCV."""
    for jpg in sorted(SAMPLE.glob("*/*.jpg")):
        h, w = cv2.imread(str(jpg)).shape[:2]
        assert read_image_size(jpg) == (w, h)
    image = np.zeros((37, 53, 3), np.uint8)
    for suffix in (".png", ".bmp", ".jpg"):
        cv2.imwrite(str(tmp_path / f"x{suffix}"), image)
        assert read_image_size(tmp_path / f"x{suffix}") == (53, 37)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    assert read_image_size(tmp_path / "broken.jpg") is None
    assert read_image_size(tmp_path / "absent.jpg") is None


def test_missing_images_are_reported(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / f"{IMAGE}.jpg").write_bytes((AIC_IMAGES / f"{IMAGE}.jpg").read_bytes())
    coco, summary = convert_aic(load_raw(AIC_RAW_3), images_dir=images)
    assert len(summary.missing_images) == 2 and f"{IMAGE}.jpg" not in summary.missing_images
    assert [("width" in i) for i in coco["images"]] == [True, False, False]


BAD_RECORDS = {
    "keypoints not 42 numbers": raw_entry(IMAGE, human2=(GOOD_KEYPOINTS[:-1], GOOD_BOX)),
    "keypoints not numbers": raw_entry(IMAGE, human2=(GOOD_KEYPOINTS[:-1] + ["1"], GOOD_BOX)),
    "visibility 0": raw_entry(IMAGE, human2=(GOOD_KEYPOINTS[:-1] + [0], GOOD_BOX)),
    "visibility 4": raw_entry(IMAGE, human2=([10, 20, 4] + GOOD_KEYPOINTS[3:], GOOD_BOX)),
    "box without keypoints": {**raw_entry(IMAGE, human2=(GOOD_KEYPOINTS, GOOD_BOX)), "keypoint_annotations": {}},
    "keypoints without box": {**raw_entry(IMAGE, human1=(GOOD_KEYPOINTS, GOOD_BOX), human2=(GOOD_KEYPOINTS, GOOD_BOX)), "human_annotations": {"human1": GOOD_BOX}},
    "x2 < x1": raw_entry(IMAGE, human2=(GOOD_KEYPOINTS, [50, 6, 5, 80])),
    "box not 4 numbers": raw_entry(IMAGE, human2=(GOOD_KEYPOINTS, [5, 6, 50])),
}


@pytest.mark.parametrize("case", BAD_RECORDS)
def test_bad_record_names_image_and_human(case):
    raw = [raw_entry("fine", human1=(GOOD_KEYPOINTS, GOOD_BOX)), BAD_RECORDS[case]]
    with pytest.raises(UserError) as error:
        convert_aic(raw, source="raw.json")
    message = str(error.value)
    assert "raw.json" in message and IMAGE in message and "human2" in message and "skip invalid records (skip_invalid)" in message
    # With skip_invalid the bad person is dropped and counted; the good ones stay.
    coco, summary = convert_aic(raw, skip_invalid=True)
    assert sum(summary.skipped.values()) == 1
    assert summary.persons == len(coco["annotations"]) == 1 + ("keypoints without box" in case)  # human1 has both there
    assert len(coco["images"]) == 2


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        ('{"images": [], "annotations": []}', "top level is a JSON dict"),
        ('"text"', "top level is a JSON str"),
    ],
)
def test_bad_file_names_the_file(tmp_path, content, expected):
    path = tmp_path / "raw.json"
    path.write_text(content)
    with pytest.raises(UserError, match=expected) as error:
        convert_aic_file(path, tmp_path / "out.json")
    assert str(path) in str(error.value)
    assert not (tmp_path / "out.json").exists()


def test_malformed_image_entry_is_named():
    with pytest.raises(UserError, match=r"entry #1 \(image img1\).*human_annotations"):
        convert_aic([raw_entry("img0"), {"image_id": "img1", "keypoint_annotations": {}}])
    coco, summary = convert_aic([raw_entry("img0"), 7], skip_invalid=True)
    assert summary.skipped == {"malformed image entry": 1} and len(coco["images"]) == 1


# --- convert remap ------------------------------------------------------------------------------

# AIC index -> COCO index of the same joint (merge: aic -> coco).
AIC_TO_COCO = {0: 6, 1: 8, 2: 10, 3: 5, 4: 7, 5: 9, 6: 12, 7: 14, 8: 16, 9: 11, 10: 13, 11: 15}


def keypoints_array(coco: dict, k: int) -> np.ndarray:
    return np.array([a["keypoints"] for a in coco["annotations"]]).reshape(-1, k, 3)


def test_merge_aic_to_coco(tmp_path):
    summary = remap_files([AIC_MMPOSE], tmp_path / "merged.json", "coco")
    src, out = read(AIC_MMPOSE), read(tmp_path / "merged.json")
    aic, coco = keypoints_array(src, 14), keypoints_array(out, 17)
    for a, c in AIC_TO_COCO.items():
        np.testing.assert_array_equal(coco[:, c], aic[:, a])
    assert not coco[:, :5].any()  # nose, eyes, ears: AIC has none
    assert [a["num_keypoints"] for a in out["annotations"]] == (coco[..., 2] > 0).sum(1).tolist()
    assert out["categories"] == [get_layout("coco").coco_category_dict()]
    assert out["images"] == src["images"]  # one input keeps its ids
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in src["annotations"]]
    assert all(type(v) is int for a in out["annotations"] for v in a["keypoints"])
    assert summary.inputs == [(str(AIC_MMPOSE), "aic")] and summary.unmapped[str(AIC_MMPOSE)] == ["head_top", "neck"]


def test_combine_coco_and_aic_to_coco_aic(tmp_path):
    remap_files([COCO_ANN], tmp_path / "coco19.json", "coco-aic")
    remap_files([AIC_MMPOSE], tmp_path / "aic19.json", "coco-aic")
    coco17, coco19 = keypoints_array(read(COCO_ANN), 17), keypoints_array(read(tmp_path / "coco19.json"), 19)
    np.testing.assert_array_equal(coco19[:, :17], coco17)
    assert not coco19[:, 17:].any()
    aic14, aic19 = keypoints_array(read(AIC_MMPOSE), 14), keypoints_array(read(tmp_path / "aic19.json"), 19)
    np.testing.assert_array_equal(aic19[:, 17], aic14[:, 12])  # head top
    np.testing.assert_array_equal(aic19[:, 18], aic14[:, 13])  # neck
    for a, c in AIC_TO_COCO.items():
        np.testing.assert_array_equal(aic19[:, c], aic14[:, a])


def test_concatenation_renumbers_ids(tmp_path):
    summary = remap_files([COCO_ANN, AIC_MMPOSE], tmp_path / "both.json", "coco-aic")
    coco, aic, out = read(COCO_ANN), read(AIC_MMPOSE), read(tmp_path / "both.json")
    images, annotations = out["images"], out["annotations"]
    assert len(images) == len(coco["images"]) + len(aic["images"]) == summary.images
    assert len(annotations) == len(coco["annotations"]) + len(aic["annotations"]) == summary.persons
    assert len({i["id"] for i in images}) == len(images) and len({a["id"] for a in annotations}) == len(annotations)
    # Every annotation still points at its own image, by file name.
    expected = []
    for src in (coco, aic):
        files = {i["id"]: i["file_name"] for i in src["images"]}
        expected += [(files[a["image_id"]], a["bbox"]) for a in src["annotations"]]
    file_of = {i["id"]: i["file_name"] for i in images}
    assert [(file_of[a["image_id"]], a["bbox"]) for a in annotations] == expected
    assert out["categories"][0]["keypoints"] == list(get_layout("coco-aic").keypoints)


def test_drop_empty_and_from_override(tmp_path):
    """A person with only head top and neck has nothing left in COCO's layout: kept, or dropped by flag."""
    src = read(AIC_MMPOSE)
    src["annotations"][0]["keypoints"] = [0, 0, 0] * 12 + [395, 74, 2, 372, 170, 2]
    src["categories"][0]["keypoints"] = [f"kp{i}" for i in range(14)]  # unrecognisable: needs --from
    path = tmp_path / "aic.json"
    path.write_text(json.dumps(src))
    with pytest.raises(UserError, match=r"say the source layout \(source\)"):  # the library names its parameter
        remap_files([path], tmp_path / "out.json", "coco")
    result = CliRunner().invoke(app, ["convert", "remap", str(path), "--to", "coco", "-o", str(tmp_path / "o.json")])
    assert result.exit_code == 1 and "(--from)" in result.output  # the CLI, its flag
    kept = remap_files([path], tmp_path / "out.json", "coco", source="aic")
    assert kept.persons == 9 and read(tmp_path / "out.json")["annotations"][0]["num_keypoints"] == 0
    dropped = remap_files([path], tmp_path / "out.json", "coco", source="aic", drop_empty=True)
    assert dropped.persons == 8 and sum(dropped.skipped.values()) == 1


def test_remap_bad_input(tmp_path):
    src = read(COCO_ANN)
    bad = src["annotations"][3]
    bad["keypoints"] = bad["keypoints"][:-3]
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(src))
    with pytest.raises(UserError) as error:
        remap_files([path], tmp_path / "out.json", "coco-aic")
    image = next(i["file_name"] for i in src["images"] if i["id"] == bad["image_id"])
    assert image in str(error.value) and str(bad["id"]) in str(error.value) and "48" in str(error.value)
    assert not (tmp_path / "out.json").exists()
    summary = remap_files([path], tmp_path / "out.json", "coco-aic", skip_invalid=True)
    assert summary.skipped == {"keypoints not 51 numbers": 1} and summary.persons == len(src["annotations"]) - 1

    with pytest.raises(UserError, match="unknown keypoint layout"):
        remap_files([COCO_ANN], tmp_path / "out.json", "mpii")
    with pytest.raises(UserError, match="AIC's raw release: convert it to COCO format first"):
        remap_files([AIC_RAW_3], tmp_path / "out.json", "coco")


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch):
    """Run ``posecli`` in-process; wide consoles, so messages are not wrapped mid-name."""
    monkeypatch.setattr(common.console, "width", 500)
    monkeypatch.setattr(common.out, "width", 500)
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_cli_aic_summary(cli, tmp_path):
    result = cli("convert", "aic", AIC_RAW_3, "-o", tmp_path / "aic.json", "--images", AIC_IMAGES)
    assert result.exit_code == 0, result.output
    assert "3 images, 9 persons" in result.output and "head_top" in result.output
    assert read(tmp_path / "aic.json")["images"] == read(AIC_MMPOSE)["images"]
    result = cli("convert", "aic", AIC_RAW_3, "-o", tmp_path / "aic.json")
    assert result.exit_code == 0 and "no --images" in result.output


def test_cli_bad_file_exits_1_without_traceback_or_output(cli, tmp_path):
    raw = load_raw(AIC_RAW_3)
    raw[1]["keypoint_annotations"]["human2"][5] = 7  # visibility 7 at right elbow
    path = tmp_path / "raw.json"
    path.write_text(json.dumps(raw))
    result = cli("convert", "aic", path, "-o", tmp_path / "out" / "aic.json")
    assert result.exit_code == 1
    assert f"image {raw[1]['image_id']}, human2: visibility 7 at keypoint right_elbow" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no partial or temp file

    result = cli("convert", "aic", path, "-o", tmp_path / "out" / "aic.json", "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert "skipped 1 records:" in result.output and "visibility outside 1-3" in result.output
    assert len(read(tmp_path / "out" / "aic.json")["annotations"]) == 8


def test_cli_remap(cli, tmp_path):
    result = cli("convert", "remap", COCO_ANN, AIC_MMPOSE, "--to", "coco-aic", "-o", tmp_path / "both.json")
    assert result.exit_code == 0, result.output
    assert "aic -> coco-aic" in result.output and "7 images, 23 persons" in result.output
    result = cli("convert", "remap", tmp_path / "absent.json", "--to", "coco", "-o", tmp_path / "x.json")
    assert result.exit_code == 1 and "absent.json" in result.output and "Traceback" not in result.output
    result = cli("convert", "remap", COCO_ANN, "--to", "body25", "-o", tmp_path / "x.json")
    assert result.exit_code == 1 and "'body25': unknown keypoint layout" in result.output
    assert not (tmp_path / "x.json").exists()
