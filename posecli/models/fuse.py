"""Inference-only rewrite: fold each BatchNorm into the convolution before it.

In eval mode BatchNorm is a per-channel affine map ``y = a * x + b``; applied
after a convolution it can be moved into the convolution's weight and bias,
which removes one pass over every activation. The result equals the original to
float rounding (about 1e-6 relative), so it is safe for eval and predict, never
for training (the folded model has no BatchNorm statistics to update).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv with ``bn`` (eval mode: running statistics) folded into its weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)  # fmt: skip
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def _fold_children(module: nn.Module) -> None:
    """Fold the conv -> BN pairs that are direct children of ``module``, in place."""
    if isinstance(module, nn.Sequential):  # conv_bn(), downsample, fuse and transition layers
        for i in range(len(module) - 1):
            if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                module[i] = fold_bn(module[i], module[i + 1])
                module[i + 1] = nn.Identity()
        return
    # HRNet's stem and residual blocks name their pairs conv1/bn1, conv2/bn2, conv3/bn3.
    for k in (1, 2, 3):
        conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, f"conv{k}", fold_bn(conv, bn))
            setattr(module, f"bn{k}", nn.Identity())


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in eval mode with every conv -> BatchNorm pair folded into one conv.

    Pairs are found by structure: adjacent in an ``nn.Sequential``, or named
    ``convN``/``bnN`` in one module (HRNet's stem and blocks). A BatchNorm that
    does not directly follow a convolution is left as it is.
    """
    fused = copy.deepcopy(model).eval()
    for module in list(fused.modules()):
        _fold_children(module)
    return fused


def count_batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
