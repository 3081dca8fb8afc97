"""posecli export: one ONNX graph, uint8 crops in, posecli's heatmaps out (flip test inside with --flip), checked on export."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from conftest import CKPT17
from typer.testing import CliRunner

from posecli.cli import app
from posecli.engine import export
from posecli.engine.export import sample_crops
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.layouts import LAYOUTS

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def flip_graph(tmp_path_factory):
    """The 17-keypoint reference model exported with the flip test inside, fixed to 4 crops per call."""
    out = tmp_path_factory.mktemp("export") / "small_flip.onnx"
    result = runner.invoke(app, ["export", "-w", str(CKPT17), "-o", str(out), "--flip", "--batch", "4"])
    assert result.exit_code == 0, result.output
    return out, said(result)


@pytest.fixture(scope="module")
def crops():
    return sample_crops((192, 256))


def test_export_prints_the_largest_difference_and_writes_only_the_graph(flip_graph):
    out, output = flip_graph
    found = re.search(r"largest heatmap difference to torch on 12 sample crops \(onnxruntime\): (\S+) \(limit 0.0001\)", output)
    assert found and float(found[1]) <= 1e-4, output
    assert f"wrote {out}" in output and "flip test inside" in output
    assert sorted(p.name for p in out.parent.iterdir()) == ["small_flip.onnx"]  # no temporary file left


def test_flip_graph_gives_posecli_flip_test_heatmaps_in_one_call(flip_graph, crops):
    ours = Predictor.from_weights(CKPT17, InferenceSettings(device="cpu", flip=True)).heatmaps(crops)
    session = ort.InferenceSession(str(flip_graph[0]), providers=["CPUExecutionProvider"])  # plain ONNX Runtime
    graph = np.concatenate([session.run(None, {"crops": crops[i : i + 4]})[0] for i in range(0, len(crops), 4)])
    assert graph.shape == ours.shape == (12, 17, 64, 48)
    np.testing.assert_allclose(graph, ours, atol=1e-4, rtol=0)
    assert np.abs(graph - ours).max() < 1e-5  # in fact float32 summation order only
    for backend in ("onnxruntime", "openvino"):  # posecli itself, the fixed batch of 4 padded
        pytest.importorskip(backend)
        graph_predictor = Predictor.from_weights(flip_graph[0], InferenceSettings(backend=backend, flip=True))
        np.testing.assert_allclose(graph_predictor.heatmaps(crops[:7]), ours[:7], atol=1e-4, rtol=0)


def test_metadata_carries_what_posecli_weights_carry(flip_graph):
    model = onnx.load(str(flip_graph[0]))
    meta = {p.key: p.value for p in model.metadata_props}
    coco = LAYOUTS["coco"]
    assert (meta["format"], meta["format_version"], meta["arch"], meta["layout"]) == ("posecli", "1", "hrnet-small", "coco")
    assert json.loads(meta["keypoint_names"]) == list(coco.keypoints)
    assert json.loads(meta["flip_indices"]) == list(coco.flip_indices) == [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
    assert json.loads(meta["input_size"]) == [192, 256] and json.loads(meta["heatmap_size"]) == [48, 64]
    assert json.loads(meta["mean"]) == [123.675, 116.28, 103.53] and json.loads(meta["std"]) == [58.395, 57.12, 57.375]
    assert (meta["flip_test"], meta["batch"], meta["opset"]) == ("true", "4", "17")
    (inp,), (outp,) = model.graph.input, model.graph.output
    assert inp.name == "crops" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [4, 256, 192, 3]
    assert [d.dim_value for d in outp.type.tensor_type.shape.dim] == [4, 17, 64, 48]


def test_a_graph_with_the_flip_test_inside_refuses_to_run_without_it(flip_graph):
    result = runner.invoke(app, ["eval", "-w", str(flip_graph[0]), "--sample", "--no-flip"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "has the flip test inside its graph (exported with it), so it cannot run without it: keep the flip test (--flip)" in said(result)


def test_a_graph_that_differs_from_torch_is_an_error_and_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "heatmap_difference", lambda a, b: 3e-3)
    result = runner.invoke(app, ["export", "-w", str(CKPT17), "-o", str(tmp_path / "model.onnx")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "differ from torch's by 3.0e-03 (> 0.0001)" in said(result) and "not written" in said(result)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch", "8", "--dynamic-batch"], "--dynamic-batch and --batch: give one"),
        (["--opset", "9"], "opset (--opset) 9: choose 11 to 20"),
        (["-o", "model.pt"], "name the output .onnx"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, args, message):
    out = ["-o", str(tmp_path / "m.onnx")] if "-o" not in args else []
    result = runner.invoke(app, ["export", "-w", str(CKPT17), *out, *args])
    assert result.exit_code == 1 and message in said(result), result.output
    assert list(tmp_path.iterdir()) == []
