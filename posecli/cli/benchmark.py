from __future__ import annotations

from posecli.cli.common import not_yet


def benchmark():
    """Speed and memory of the model and of the whole pipeline, against this device's measured peak."""
    not_yet("posecli benchmark")
