"""Multiply-adds of a network, counted by torch's own ``FlopCounterMode`` as it runs.

FlopCounterMode counts the matrix products (convolutions, linear layers): >99% of an
HRNet's arithmetic. BatchNorm, ReLU, residual additions and nearest upsampling are
elementwise and left out, as in the usual "7.1 GFLOPs" quoted for HRNet-W32 at
256x192 (really multiply-adds, and a count that skips some layers: ours is 7.65 G).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def count_macs(model: nn.Module, input_size: tuple[int, int] = (192, 256), in_channels: int = 3) -> int:
    """Multiply-adds of one forward pass on one (in_channels, h, w) input; ``input_size`` is (w, h).

    Works on a model on the meta device (shapes only). Bias additions are not counted.
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    w, h = input_size
    was_training = model.training
    try:
        with FlopCounterMode(display=False) as counter:
            model.eval()(torch.zeros(1, in_channels, h, w, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2  # FlopCounterMode counts a multiply-add as 2 FLOPs
