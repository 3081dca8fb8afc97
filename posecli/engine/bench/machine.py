"""What a benchmark ran on, what else ran meanwhile, and how much memory a call took."""

from __future__ import annotations

import os
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import psutil
import torch


class CpuUse:
    """How much of the machine other processes and the hypervisor ('steal') took since creation."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float, float]:
        system, own = psutil.cpu_times(), psutil.Process().cpu_times()
        busy = system.user + system.nice + system.system + getattr(system, "irq", 0.0) + getattr(system, "softirq", 0.0)
        steal = getattr(system, "steal", 0.0)  # Linux only; elsewhere nobody reports it
        return busy, steal, own.user + own.system, time.monotonic()

    def others(self) -> dict[str, float]:
        """Fractions of all cores' time: {'other_processes', 'steal'}."""
        busy, steal, own, wall = (b - a for a, b in zip(self.start, self._read()))
        capacity = max(wall, 1e-9) * (os.cpu_count() or 1)
        return {"other_processes": max(0.0, busy - own) / capacity, "steal": max(0.0, steal) / capacity}


def cpu_name() -> str:
    # No library in our dependencies names the CPU model; Linux says it in /proc/cpuinfo.
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def peak_memory_mb(device: torch.device, fn: Callable[[], object]) -> float:
    """Peak memory of one call: CUDA's max allocated, or this process's RSS high-water mark.

    On Linux the high-water mark is reset first (``/proc/self/clear_refs``), so it is this
    call's; elsewhere it is the process's since it started.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # the kernel's reset of the RSS high-water mark
    except OSError:
        pass
    fn()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024
