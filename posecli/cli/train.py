from __future__ import annotations

from posecli.cli.common import not_yet


def train():
    """Train a preset (coco, coco-aic-merge, coco-aic-combine) on CPU, one GPU or many with torchrun."""
    not_yet("posecli train")
