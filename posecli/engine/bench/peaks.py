"""This device's attainable GFLOP/s: the median of a large matmul (the reference of every share)
and of a large 3x3 convolution (for comparison), each sampled between the timed calls of a run."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch

from posecli.choices import Precision
from posecli.engine.inference import TORCH_DTYPES

SLOW_GFLOPS = 5.0  # a precision whose matmul runs below this is emulated: report it, skip its model runs


@dataclass
class MatmulPeak:
    precision: str
    n: int  # (n, n) @ (n, n)
    gflops: float  # median over repeats
    repeats: int


@dataclass
class ConvPeak:
    shape: str
    gflops: float  # median over repeats
    repeats: int


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MatmulProbe:
    """One (n, n) @ (n, n) product of a precision, ready to time: this device's attainable GFLOP/s.

    n grows from 256 to ``max_n`` unless one product already takes 50 ms, so that
    an emulated precision costs a fraction of a second, not a minute.
    """

    def __init__(self, device: torch.device, precision: Precision, max_n: int = 2048):
        self.device, self.precision, self.n = device, Precision(precision), 256
        while True:
            self.a, self.b = (torch.randn(self.n, self.n, device=device).to(TORCH_DTYPES[self.precision]) for _ in range(2))
            self.sample()
            if self.n >= max_n or self.sample() < 2 * self.n**3 / 0.05 / 1e9:
                break
            self.n *= 2

    def sample(self) -> float:
        """GFLOP/s of one product."""
        sync(self.device)
        start = time.perf_counter()
        torch.mm(self.a, self.b)
        sync(self.device)
        return 2 * self.n**3 / (time.perf_counter() - start) / 1e9

    def peak(self, seconds: float = 2.0) -> MatmulPeak:
        """Median GFLOP/s over about ``seconds`` of products (at least 3)."""
        return MatmulPeak(str(self.precision), self.n, *median_rate(self.sample, 2 * self.n**3, seconds))


def median_rate(sample: Callable[[], float], flops: float, seconds: float) -> tuple[float, int]:
    """(median, count) of GFLOP/s ``sample()`` calls filling about ``seconds`` (3 to 50 calls)."""
    samples = [sample()]
    repeats = int(min(50, max(3, seconds * samples[0] * 1e9 / flops)))
    samples += [sample() for _ in range(repeats - 1)]
    return statistics.median(samples), repeats


def conv_peak(device: torch.device, seconds: float = 2.0) -> ConvPeak:
    """Median float32 GFLOP/s of one large 3x3 convolution, channels-last, as HRNet's low branches run it.

    It can run above the matmul (docs/benchmarks.md); shares keep the matmul as their reference.
    """
    n, c, h, w = 32, 256, 32, 24
    x = torch.randn(n, c, h, w, device=device).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, c, 3, 3, device=device)
    flops = 2 * n * h * w * c * c * 9

    def sample() -> float:
        sync(device)
        start = time.perf_counter()
        torch.nn.functional.conv2d(x, weight, padding=1)
        sync(device)
        return flops / (time.perf_counter() - start) / 1e9

    sample()  # the first call picks and builds the kernel
    return ConvPeak(f"{c}->{c} 3x3, {n}x{h}x{w}, channels-last", *median_rate(sample, flops, seconds))
