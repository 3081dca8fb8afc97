"""The top-down model around the network: input normalisation and flip test, as MMPose."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# ImageNet statistics on 0..255 RGB, as MMPose's PoseDataPreprocessor.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)


def normalise(crops_bgr: torch.Tensor, mean=MEAN_RGB, std=STD_RGB) -> torch.Tensor:
    """(B, H, W, 3) uint8 BGR crops -> (B, 3, H, W) float32 normalised RGB."""
    x = crops_bgr.flip(-1).permute(0, 3, 1, 2).float()
    mean_t = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    # MMPose's arithmetic ((x - mean) / std, float32), in place: the same bits, no new batch-sized buffers
    return x.sub_(mean_t).div_(std_t)


def flip_back(heatmaps: torch.Tensor, flip_indices: list[int] | tuple[int, ...], shift: bool = True) -> torch.Tensor:
    """Heatmaps of a mirrored input -> heatmaps of the original: mirror, swap left/right, shift.

    The one-pixel shift to the right keeps column 0 as it is (MMPose does not zero it).
    """
    hm = heatmaps.flip(-1)[:, list(flip_indices)]
    if shift:
        hm[..., 1:] = hm[..., :-1].clone()
    return hm


@dataclass
class TopDown:
    """A heatmap network plus what it needs at test time.

    ``flip_indices`` set = flip test (the layout's, which for combine models has 19 entries).
    ``chunk``: crops per network call. On CPU small calls keep more of HRNet's activations in
    cache: for the eager network, calls of 8 crops are faster and need less memory than one
    call of the whole batch (docs/benchmarks.md); the oneDNN network takes 16 and splits
    its first layers further itself. Per-crop results do not depend on it. ``compiled``: the
    same network compiled for calls of exactly ``chunk`` crops; a shorter last call runs
    ``net`` (a compiled network would compile again for every new shape).
    """

    net: nn.Module
    flip_indices: tuple[int, ...] | None = None
    shift_heatmap: bool = True
    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    chunk: int | None = None
    compiled: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised crops -> (B, K, h, w) float32 heatmaps, ``chunk`` crops per call."""
        step = self.chunk or len(x)
        if len(x) > step:
            return torch.cat([self.forward(part) for part in x.split(step)])
        net = self.compiled if self.compiled is not None and len(x) == step else self.net
        return net(x).float()

    @torch.inference_mode()
    def heatmaps(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 BGR crops -> (B, K, h, w) float32 heatmaps (flip-fused when enabled)."""
        x = normalise(crops_bgr, self.mean, self.std)  # NHWC storage: already channels-last
        if self.flip_indices is None:
            return self.forward(x)
        both = self.forward(torch.cat([x, x.flip(-1)]))
        plain, mirrored = both[: len(x)], both[len(x) :]
        return (plain + flip_back(mirrored, self.flip_indices, self.shift_heatmap)) * 0.5
