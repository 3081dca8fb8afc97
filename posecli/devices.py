"""The one device check that train, eval, predict and benchmark share: a clear error in seconds, not a crash later."""

from __future__ import annotations

import re

import torch

from posecli.errors import UserError

SPELLING = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")


def valid_devices() -> list[str]:
    """The device names this process can use: cpu, and cuda, cuda:0 ... where torch sees GPUs."""
    names = ["cpu"]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count:
        names += ["cuda"] + [f"cuda:{i}" for i in range(count)]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return names


def device_problem(name: str | None) -> str | None:
    """What is wrong with a device name here (None: nothing); ``auto`` / None is always fine."""
    if name in (None, "auto"):
        return None
    valid = valid_devices()
    choose = f"valid here: {', '.join(['auto'] + valid)}"
    m = SPELLING.match(name)
    if m is None:
        return f"not a device name; {choose}"
    kind, index = m[1], m[2]
    if kind == "cpu":
        return None if index in (None, "0") else f"there is one CPU device; {choose}"
    if kind == "mps":
        return None if "mps" in valid else f"this torch sees no Apple GPU (MPS); {choose}"
    if "cuda" not in valid:
        why = "is built without CUDA" if torch.version.cuda is None else "sees no GPU"
        return f"no CUDA device here (torch {torch.__version__} {why}); {choose}"
    count = sum(v.startswith("cuda:") for v in valid)
    if index is not None and int(index) >= count:
        return f"there {'is' if count == 1 else 'are'} {count} CUDA device{'s' * (count != 1)}; {choose}"
    return None


def parse_device(name: str | None) -> torch.device:
    """``auto``/None (CUDA if there is a GPU, else CPU), ``cpu``, ``cuda``, ``cuda:N``, ``mps`` -> a torch.device.

    UserError if this machine has no such device, listing the ones it has.
    """
    problem = device_problem(name)
    if problem:
        raise UserError(f"device {name!r}: {problem}")
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
