"""oneDNN's fused convolutions: the same heatmaps as the BN-folded eager network, and the CPU default."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from conftest import CKPT17
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.models import onednn
from posecli.models.fuse import fuse_conv_bn
from posecli.models.hrnet import PoseHRNet, hrnet_config
from posecli.weights import load_model

pytestmark = pytest.mark.skipif(not onednn.available(), reason="this torch has no oneDNN fused convolutions")


def _random_hrnet() -> PoseHRNet:
    """Two modules per stage and two blocks per branch: every fuse pattern, multiscale outputs mid-stage."""
    torch.manual_seed(0)
    net = PoseHRNet(hrnet_config(8, stage1_channels=16, blocks=2, stage3_modules=2, stage4_modules=2), 17)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):  # statistics that make folding change the numbers
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


@pytest.mark.parametrize("which", ["reference", "random"])
def test_fused_network_gives_the_folded_networks_heatmaps(which):
    net = load_model(CKPT17)[0] if which == "reference" else _random_hrnet()
    before = copy.deepcopy(net.state_dict())
    folded = fuse_conv_bn(net).to(memory_format=torch.channels_last)
    fused = onednn.onednn_network(net, (192, 256))
    x = torch.randn(7, 3, 256, 192).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref = folded(x)
        for n in (4, 7, 1):  # the early layers' packed call size, then others
            out = fused(x[:n])
            assert out.shape == ref[:n].shape
            assert (out - ref[:n]).abs().max() <= 1e-5 * ref.abs().max()
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # built from a copy


def test_cpu_predictor_runs_on_onednn_by_default_with_the_plain_keypoints():
    net, info = load_model(CKPT17)
    default = Predictor.from_model(net, info)
    eager = Predictor.from_model(net, info, InferenceSettings(network="folded"))
    plain = Predictor.from_model(net, info, InferenceSettings(network="plain"))
    assert default.onednn and isinstance(default.model.net, onednn.FusedPoseHRNet)
    assert not eager.onednn and not plain.onednn
    crops = np.random.default_rng(0).integers(0, 256, (10, 256, 192, 3), dtype=np.uint8)  # with flip: calls of 16 + 4
    a, b = default.heatmaps(crops), plain.heatmaps(crops)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_predictor_falls_back_to_eager_where_onednn_is_missing(monkeypatch):
    monkeypatch.setattr(onednn, "available", lambda: False)
    net, info = load_model(CKPT17)
    predictor = Predictor.from_model(net, info)
    assert not predictor.onednn and not isinstance(predictor.model.net, onednn.FusedPoseHRNet)
    with pytest.raises(RuntimeError, match="no oneDNN"):
        onednn.onednn_network(net, info.input_size)


def test_the_self_check_keeps_the_callers_random_state():
    onednn.available.cache_clear()
    state = torch.get_rng_state()
    assert onednn.available()
    assert torch.equal(torch.get_rng_state(), state)  # training's draws do not depend on whether it ran
