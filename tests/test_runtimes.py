"""The ONNX backends: onnxruntime, openvino and an exported .onnx give the torch backend's numbers.

The backend replaces crops -> heatmaps only, so eval must give torch's ten metrics (1e-4) and
keypoints (0.01 px) on MMPose's reference checkpoints, with and without the flip test. Runs on
the bundled sample's ground-truth boxes (12 people) to stay fast; skipped where an extra is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CKPT17, CKPT19, COCO_ANN, COCO_IMAGES
from typer.testing import CliRunner

from posecli.choices import Backend, Network, Precision
from posecli.cli import app
from posecli.engine import runtimes
from posecli.engine.bench.peaks import MatmulProbe
from posecli.engine.bench.run import requested_settings, runnable
from posecli.engine.bench.timing import bench_batch
from posecli.engine.cocometric import METRIC_NAMES
from posecli.engine.evaluate import evaluate
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.engine.runtimes import RUNTIMES
from posecli.errors import UserError
from posecli.models.topdown import flip_back
from posecli.weights import load_model

CKPTS = {"coco17": CKPT17, "cocoaic19": CKPT19}
MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino", "onnx-file": "onnxruntime"}
runner = CliRunner()


def said(result) -> str:
    return " ".join(result.output.split())


@pytest.fixture(scope="module")
def models():
    return {name: load_model(path) for name, path in CKPTS.items()}


@pytest.fixture(scope="module")
def graphs(models):
    """Each reference model exported once, without the flip test (the backends run it around the graph)."""
    return {name: runtimes.to_onnx(net, info) for name, (net, info) in models.items()}


@pytest.fixture(scope="module")
def onnx_files(graphs, models, tmp_path_factory):
    """The same graphs as .onnx files with posecli's metadata, as `posecli export` writes them."""
    from posecli.engine.export import with_metadata

    pytest.importorskip("onnx")
    folder = tmp_path_factory.mktemp("onnx")
    files = {}
    for name, graph in graphs.items():
        files[name] = folder / f"{name}.onnx"
        info = models[name][1]
        files[name].write_bytes(with_metadata(graph, runtimes.graph_metadata(info, False, None, runtimes.DEFAULT_OPSET)))
    return files


_TORCH: dict = {}


def _eval(predictor: Predictor, out: Path) -> tuple[dict, dict]:
    """Ground-truth-box eval of the bundled sample -> (metrics, {(image_id, box): (K, 3) keypoints})."""
    result = evaluate(predictor, COCO_ANN, COCO_IMAGES, None, workers=0, out_dir=out)
    rows = json.loads(result.results_path.read_text())
    return result.metrics, {(r["image_id"], *np.float32(r["bbox"]).tolist()): np.reshape(r["keypoints"], (-1, 3)) for r in rows}


@pytest.mark.parametrize("flip", [False, True], ids=["noflip", "flip"])
@pytest.mark.parametrize("model", CKPTS)
@pytest.mark.parametrize("route", MODULES)
def test_eval_on_each_backend_gives_torchs_metrics_and_keypoints(tmp_path, models, graphs, onnx_files, route, model, flip):
    pytest.importorskip(MODULES[route])
    net, info = models[model]
    settings = InferenceSettings(device="cpu", flip=flip)
    if (model, flip) not in _TORCH:
        _TORCH[model, flip] = _eval(Predictor.from_model(net, info, settings), tmp_path / "torch")
    if route == "onnx-file":
        predictor = Predictor.from_weights(onnx_files[model], settings)  # backend auto: ONNX Runtime
    else:
        predictor = Predictor.from_graph(graphs[model], settings.replace(backend=route), meta=runtimes.GraphInfo(info, False, None))
    assert predictor.settings.backend == Backend.ONNXRUNTIME if route != "openvino" else Backend.OPENVINO
    metrics, keypoints = _eval(predictor, tmp_path / route)
    ref_metrics, ref_keypoints = _TORCH[model, flip]
    np.testing.assert_allclose([metrics[n] for n in METRIC_NAMES], [ref_metrics[n] for n in METRIC_NAMES], atol=1e-4)
    assert keypoints.keys() == ref_keypoints.keys() and len(keypoints) >= 10
    ours, ref = np.stack(list(keypoints.values())), np.stack([ref_keypoints[k] for k in keypoints])
    np.testing.assert_allclose(ours[..., :2], ref[..., :2], atol=0.01)  # px
    np.testing.assert_allclose(ours[..., 2], ref[..., 2], atol=1e-5)  # scores


def test_onnx_file_metadata_reads_back_on_both_runtimes(models, onnx_files):
    pytest.importorskip("openvino")
    info = models["cocoaic19"][1]
    for backend in (Backend.ONNXRUNTIME, Backend.OPENVINO):
        pytest.importorskip(runtimes.EXTRAS[backend][0])
        run = runtimes.make_runner(backend, onnx_files["cocoaic19"], Precision.FP32, torch.device("cpu"), "test")
        assert runtimes.read_metadata(run.metadata(), "test") == runtimes.GraphInfo(info, False, None)


def test_graph_model_pads_a_fixed_batch_and_runs_the_flip_test_around_the_graph():
    calls = []

    def graph(crops: np.ndarray) -> np.ndarray:  # a stand-in runtime: 2 maps per crop from its pixels
        calls.append(len(crops))
        x = crops[..., 0].astype(np.float32)[:, None, ::4, ::4]  # (N, 1, 4, 3)
        return np.concatenate([x, 2 * x], 1)

    crops = np.random.default_rng(0).integers(0, 256, (5, 16, 12, 3), dtype=np.uint8)
    model = runtimes.GraphModel(graph, (2, 4, 3), flip_indices=(1, 0), batch=4)
    hm = model.heatmaps(torch.from_numpy(crops))
    assert calls == [4, 4, 4] and hm.shape == (5, 2, 4, 3)  # 10 crops (5 + mirrored) in fixed calls of 4
    plain, mirrored = torch.from_numpy(graph(crops)), torch.from_numpy(graph(crops[:, :, ::-1].copy()))
    torch.testing.assert_close(hm, (plain + flip_back(mirrored, (1, 0))) * 0.5)
    assert runtimes.GraphModel(graph, (2, 4, 3)).heatmaps(torch.from_numpy(crops[:0])).shape == (0, 2, 4, 3)


def test_precisions_that_would_be_emulated_or_do_not_exist_are_refused(monkeypatch):
    cpu = torch.device("cpu")
    assert runtimes.precision_problem(Backend.ONNXRUNTIME, Precision.FP32, cpu) is None
    assert "compute in fp32" in runtimes.precision_problem(Backend.ONNXRUNTIME, Precision.BF16, cpu)
    assert "CUDA GPUs only" in runtimes.precision_problem(Backend.TORCH, Precision.FP16, cpu)
    assert "CUDA GPUs only" in runtimes.precision_problem(Backend.OPENVINO, Precision.FP16, cpu)
    monkeypatch.setattr(runtimes, "cpu_bf16", lambda: None)
    for backend in (Backend.TORCH, Backend.OPENVINO):
        assert "AMX or AVX512-BF16" in runtimes.precision_problem(backend, Precision.BF16, cpu)
    net, info = load_model(CKPT17)
    with pytest.raises(UserError, match=r"precision bf16 \(precision\) on backend torch on cpu: bf16 needs a CPU with AMX"):
        Predictor.from_model(net, info, InferenceSettings(device="cpu", precision="bf16"))
    monkeypatch.setattr(runtimes, "cpu_bf16", lambda: "AVX512-BF16")
    assert runtimes.precision_problem(Backend.OPENVINO, Precision.BF16, cpu) is None


def test_missing_extra_is_one_clear_error(monkeypatch, graphs, models):
    real = runtimes.importlib.import_module

    def no_runtimes(name, *args):
        if name in ("onnxruntime", "openvino"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(runtimes.importlib, "import_module", no_runtimes)
    net, info = models["coco17"]
    for backend, extra in (("onnxruntime", "posecli[onnx]"), ("openvino", "posecli[openvino]")):
        with pytest.raises(UserError, match=rf'backend {backend} \(backend\): .* is not installed; pip install "{extra}"'.replace("[", r"\[")):
            Predictor.from_model(net, info, InferenceSettings(device="cpu", backend=backend))


def test_graphs_without_posecli_metadata_and_torch_on_a_graph_are_refused(graphs, onnx_files):
    pytest.importorskip("onnxruntime")
    with pytest.raises(UserError, match="without posecli's metadata"):
        Predictor.from_graph(graphs["coco17"], InferenceSettings(backend="onnxruntime"))
    with pytest.raises(UserError, match=r"runs on the onnxruntime or openvino backend \(backend\)"):
        Predictor.from_weights(onnx_files["coco17"], InferenceSettings(backend="torch"))
    with pytest.raises(UserError, match="network folded is a way to run torch's network"):
        Predictor.from_weights(onnx_files["coco17"], InferenceSettings(network="folded"))
    bad = runtimes.graph_metadata(load_model(CKPT17)[1], False, None, 17) | {"format_version": "99"}
    with pytest.raises(UserError, match="format_version 99 is newer"):
        runtimes.read_metadata(bad, "x.onnx")


def test_benchmark_times_each_backend_and_precision_and_notes_the_refused(models, graphs, monkeypatch):
    monkeypatch.setattr(runtimes, "cpu_bf16", lambda: "AVX512-BF16")
    base = InferenceSettings(device="cpu", flip=False)
    asked = requested_settings(base, [Precision.FP32, Precision.BF16], [Network.AUTO], False, (Backend.TORCH, Backend.ONNXRUNTIME))
    kept, notes = runnable(asked, torch.device("cpu"))
    assert [s.label for s in kept] == ["fp32 auto", "onnxruntime fp32", "bf16 auto"]
    assert notes == ["onnxruntime bf16: not run, ONNX Runtime's CPU kernels compute in fp32; bf16 runs on the openvino or torch backend"]
    result = runner.invoke(app, ["benchmark", "--backend", "torch,tensorrt"])
    assert result.exit_code == 1 and "choose one of auto, torch, onnxruntime, openvino" in said(result)

    backends = [b for b in RUNTIMES if runtimes.installed(b)]
    net, info = models["coco17"]
    predictors = {base: Predictor.from_model(net, info, base)}
    for backend in backends:
        s = base.replace(backend=backend)
        predictors[s] = Predictor.from_graph(graphs["coco17"], s, meta=runtimes.GraphInfo(info, False, None))
    crops = np.random.default_rng(0).integers(0, 256, (1, 256, 192, 3), dtype=np.uint8)
    reference = {False: Predictor.from_model(net, info, base.replace(network="plain")).heatmaps(crops)}
    probe = MatmulProbe(torch.device("cpu"), Precision.FP32, max_n=256)
    runs = bench_batch(predictors, crops, 1, macs=10**9, probes={Precision.FP32: probe}, peaks={Precision.FP32: probe.peak(0.01)},
                       warmup=1, repeats=1, budget_s=60, reference=reference)  # fmt: skip
    assert [(r.backend, r.precision, r.batch_size) for r in runs] == [("torch", "fp32", 1), *[(str(b), "fp32", 1) for b in backends]]
    assert [r.network for r in runs[1:]] == ["onnx"] * len(backends)
    assert all(r.crops_per_s > 0 and r.share_of_peak > 0 and r.max_rel_diff < 1e-4 for r in runs)
