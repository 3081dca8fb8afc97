from __future__ import annotations

from posecli.cli.common import not_yet


def predict():
    """Keypoints for images, folders and videos: drawn pictures and JSON."""
    not_yet("posecli predict")
