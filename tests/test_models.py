"""HRNet: MMPose's parameter names and shapes, and the variants as data."""

from __future__ import annotations

import pytest
import torch

from conftest import REF
from posecli.models.hrnet import ARCHS, build_model


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
