"""Multiply-adds of a network, counted from its layers as they run.

Only convolutions and linear layers are counted: they are >99% of an HRNet's
arithmetic. BatchNorm, ReLU, residual additions and nearest upsampling are
elementwise (about 1 op per activation) and are left out, as in the usual
"7.1 GFLOPs" figure quoted for HRNet-W32 at 256x192 (which is really MACs).
"""

from __future__ import annotations

import torch
from torch import nn


def layer_macs(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-adds of one Conv2d / Linear call, for the whole batch in ``output``."""
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return output.numel() * per_output
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int] = (192, 256), in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass on one (in_channels, h, w) input; ``input_size`` is (w, h).

    Bias additions are not counted (one add per output, not a multiply-add).
    """
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        total += layer_macs(module, output)

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        w, h = input_size
        model.eval()
        model(torch.zeros(1, in_channels, h, w, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return total
