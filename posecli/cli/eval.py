from __future__ import annotations

from posecli.cli.common import not_yet


def evaluate():
    """COCO keypoint AP with detector or ground-truth boxes, flip test, rescoring and OKS NMS."""
    not_yet("posecli eval")
