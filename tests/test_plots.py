import cv2
import numpy as np

from posecli import plots


def _records():
    train = [{"iteration": i, "loss": 1e-3 / (1 + i), "lr": 1e-3 * min(1, i / 5)} for i in range(40)]
    val = [{"epoch": e, "AP": 0.1 * e} for e in range(0, 8, 2)]
    return train, val


def test_training_curves_png(tmp_path):
    path = tmp_path / "curves.png"
    assert plots.training_curves(path, *_records())
    image = cv2.imread(str(path))
    assert image is not None and image.shape[1] > 2 * image.shape[0]  # three panels side by side
    assert list(tmp_path.iterdir()) == [path]  # written through a temporary file, nothing else left


def test_keypoint_chart_png(tmp_path):
    path = tmp_path / "keypoints.png"
    assert plots.keypoint_chart(path, ["nose", "left_eye"], [0.5, 1.0], [0.4, 0.9])
    assert cv2.imread(str(path)) is not None


def test_without_matplotlib_nothing_is_drawn(tmp_path, monkeypatch):
    monkeypatch.setattr(plots, "available", lambda: False)
    assert not plots.training_curves(tmp_path / "curves.png", *_records())
    assert not plots.keypoint_chart(tmp_path / "k.png", ["nose"], [0.5], [0.5])
    assert list(tmp_path.iterdir()) == []


def test_smooth_is_a_running_mean():
    assert np.allclose(plots.smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
