"""HRNet: MMPose's parameter names and shapes, and the variants as data."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch._dynamo

from conftest import CKPT17, REF
from posecli.engine.inference import InferenceSettings, CompileError, Predictor
from posecli.models.fuse import count_batchnorms
from posecli.models.hrnet import ARCHS, build_model
from posecli.weights import load_model


def _reference_keys(name: str) -> dict[str, tuple[int, ...]]:
    keys = {}
    for line in (REF / name).read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, _ = line.split("\t")
        keys[key] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return keys


@pytest.mark.parametrize("k, name", [(17, "keys_w32_17.txt"), (19, "keys_w32_19.txt")])
def test_w32_has_exactly_mmposes_keys_and_shapes(k, name):
    with torch.device("meta"):
        model = build_model("hrnet-w32", k)
    mine = {key: tuple(v.shape) for key, v in model.state_dict().items()}
    assert mine == _reference_keys(name)
    if k == 17:
        assert sum(p.numel() for p in model.parameters()) == 28_536_113


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_builds_and_maps_input_to_quarter_resolution(arch):
    if arch != "hrnet-small":
        with torch.device("meta"):
            model = build_model(arch, 17)
        out = model(torch.empty(2, 3, 256, 192, device="meta"))
    else:
        out = build_model(arch, 17).eval()(torch.zeros(2, 3, 256, 192))
    assert tuple(out.shape) == (2, 17, 64, 48)


def test_unknown_arch_is_an_error():
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("resnet-50", 17)


def test_default_predictor_folds_bn_in_a_copy_and_gives_the_same_heatmaps():
    net, info = load_model(CKPT17)
    before = copy.deepcopy(net.state_dict())
    fused = Predictor.from_model(net, info)  # the default: channels-last, BatchNorm folded
    plain = Predictor.from_model(net, info, InferenceSettings(network="plain"))
    assert count_batchnorms(fused.model.net) == 0 and count_batchnorms(net) > 0
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the caller's model is untouched
    crops = np.random.default_rng(0).integers(0, 256, (3, 256, 192, 3), dtype=np.uint8)
    a, b = fused.heatmaps(crops), plain.heatmaps(crops)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


@pytest.mark.parametrize("network, chunk", [("folded", 8), ("onednn", 16)])
def test_chunked_calls_give_the_whole_batch_heatmaps(network, chunk):
    net, info = load_model(CKPT17)
    chunked = Predictor.from_model(net, info, InferenceSettings(network=network))  # CPU defaults: 8 per call, 16 on oneDNN
    assert chunked.model.chunk == chunk
    whole = chunked.with_chunk(None)
    crops = np.random.default_rng(1).integers(0, 256, (13, 256, 192, 3), dtype=np.uint8)  # with flip: 26 crops
    a, b = chunked.heatmaps(crops), whole.heatmaps(crops)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_compiled_predictor_gives_eager_heatmaps_and_compiles_once():
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    net, info = load_model(CKPT17)
    eager = Predictor.from_model(net, info, InferenceSettings(network="folded"))  # compiling replaces oneDNN's fusion
    compiled = eager.compile()
    assert compiled.compiled and not eager.compiled
    crops = np.random.default_rng(2).integers(0, 256, (13, 256, 192, 3), dtype=np.uint8)
    for n in (13, 5, 4):  # full chunks run compiled, the shorter rest eager: no new shape reaches the compiler
        a, b = compiled.heatmaps(crops[:n]), eager.heatmaps(crops[:n])
        assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_a_onednn_predictor_refuses_to_compile():
    net, info = load_model(CKPT17)
    predictor = Predictor.from_model(net, info)
    if not predictor.onednn:
        pytest.skip("this torch has no oneDNN fused convolutions")
    with pytest.raises(CompileError, match="compile the folded network"):
        predictor.compile()
