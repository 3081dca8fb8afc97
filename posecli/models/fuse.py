"""Inference-only rewrite: fold each BatchNorm into the convolution before it.

In eval mode BatchNorm is a per-channel affine map ``y = a * x + b``; applied
after a convolution it can be moved into the convolution's weight and bias,
which removes one pass over every activation. The result equals the original to
float rounding (about 1e-6 relative), so it is safe for eval and predict, never
for training (the folded model has no BatchNorm statistics to update). The arithmetic is
torch's own ``fuse_conv_bn_eval``; this module only finds HRNet's conv -> BN pairs.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def _fold_children(module: nn.Module) -> None:
    """Fold the conv -> BN pairs that are direct children of ``module``, in place."""
    if isinstance(module, nn.Sequential):  # conv_bn(), downsample, fuse and transition layers
        for i in range(len(module) - 1):
            if isinstance(module[i], nn.Conv2d) and isinstance(module[i + 1], nn.BatchNorm2d):
                module[i] = fuse_conv_bn_eval(module[i], module[i + 1])
                module[i + 1] = nn.Identity()
        return
    # HRNet's stem and residual blocks name their pairs conv1/bn1, conv2/bn2, conv3/bn3.
    for k in (1, 2, 3):
        conv, bn = getattr(module, f"conv{k}", None), getattr(module, f"bn{k}", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            setattr(module, f"conv{k}", fuse_conv_bn_eval(conv, bn))
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
