"""A run's record: ``metrics.jsonl`` (one JSON line per iteration, validation, checkpoint) and ``curves.png``.

The curves are drawn with OpenCV (loss by iteration left, validation AP by epoch right);
TensorBoard events are written too when ``torch.utils.tensorboard`` imports.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from posecli.fileio import atomic_path

PANEL = (480, 320)  # (w, h) of one plot
MARGIN = (56, 28, 16, 36)  # left, top, right, bottom
INK, GRID, LOSS, AP = (40, 40, 40), (225, 225, 225), (180, 110, 30), (40, 140, 40)  # BGR
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _panel(xs: np.ndarray, ys: np.ndarray, title: str, xlabel: str, colour, points: bool) -> np.ndarray:
    """One (h, w, 3) uint8 plot of ys against xs with 5 labelled gridlines per axis."""
    w, h = PANEL
    left, top, right, bottom = MARGIN
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.putText(img, title, (left, 18), FONT, 0.5, INK, 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (w - right - 8 * len(xlabel), h - 6), FONT, 0.4, INK, 1, cv2.LINE_AA)
    if len(xs) == 0:
        return img
    x0, x1 = float(xs.min()), float(xs.max()) if xs.max() > xs.min() else float(xs.min()) + 1
    y0, y1 = float(min(ys.min(), 0)), float(ys.max()) if ys.max() > min(ys.min(), 0) else 1.0
    pw, ph = w - left - right, h - top - bottom

    def to_px(x, y):
        return np.stack([left + (x - x0) / (x1 - x0) * pw, top + ph - (y - y0) / (y1 - y0) * ph], -1).round().astype(np.int32)

    for t in np.linspace(0, 1, 5):
        y, x = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
        py, px = to_px(np.array(x0), np.array(y))[1], to_px(np.array(x), np.array(y0))[0]
        cv2.line(img, (left, int(py)), (left + pw, int(py)), GRID, 1)
        cv2.putText(img, f"{y:.3g}", (2, int(py) + 4), FONT, 0.35, INK, 1, cv2.LINE_AA)
        if x1 - x0 >= 8 or abs(x - round(x)) < 1e-6:  # a short range: label whole numbers only, where they are
            cv2.putText(img, f"{x:.0f}", (int(px) - 10, top + ph + 14), FONT, 0.35, INK, 1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (left + pw, top + ph), INK, 1)
    pts = to_px(xs.astype(np.float64), ys.astype(np.float64))
    cv2.polylines(img, [pts.reshape(-1, 1, 2)], False, colour, 1, cv2.LINE_AA)
    if points:
        for p in pts:
            cv2.circle(img, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
    return img


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last ``window`` values (shorter at the start)."""
    c = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def draw_curves(losses: list[tuple[int, float]], val: list[dict]) -> np.ndarray:
    """(iteration, loss) pairs and validation records -> (h, 2w, 3) uint8 BGR image."""
    it = np.array([i for i, _ in losses], np.float64)
    loss = np.array([v for _, v in losses], np.float64)
    if len(loss):
        loss = smooth(loss, max(1, len(loss) // 50))
    ep = np.array([r["epoch"] + 1 for r in val], np.float64)  # epochs done, as the CLI counts
    ap = np.array([r["AP"] for r in val], np.float64)
    left = _panel(it, loss, "training loss (running mean)", "iteration", LOSS, points=False)
    right = _panel(ep, ap, "validation AP", "epoch", AP, points=True)
    return np.concatenate([left, right], axis=1)


def write_curves(path: str | Path, losses: list[tuple[int, float]], val: list[dict]) -> None:
    ok, png = cv2.imencode(".png", draw_curves(losses, val))
    if ok:
        with atomic_path(path) as tmp:
            Path(tmp).write_bytes(png.tobytes())


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder))


class MetricsLog:
    """Appends records to ``metrics.jsonl``; on resume keeps the first ``keep`` (those the checkpoint had seen)."""

    def __init__(self, path: Path, enabled: bool = True, keep: int = 0):
        self.path, self.enabled = Path(path), enabled
        self.count, self.losses, self.val = 0, [], []
        self.tb = None
        if not enabled:
            return
        kept = []
        if keep and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    kept.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
            kept = kept[:keep]
        with atomic_path(self.path) as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in kept))
        for r in kept:
            self._remember(r)
        self.tb = _tensorboard(self.path.parent / "tensorboard")

    def _remember(self, record: dict) -> None:
        self.count += 1
        if record.get("kind") == "train":
            self.losses.append((record["iteration"], record["loss"]))
        elif record.get("kind") == "val":
            self.val.append(record)

    def write(self, record: dict, log: Callable[[dict], None] | None = None) -> None:
        self._remember(record)
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.tb is not None:
                for key, value in record.items():
                    if isinstance(value, float) and key not in ("epoch", "iteration"):
                        self.tb.add_scalar(f"{record['kind']}/{key}", value, record.get("iteration", 0))
        if log:
            log(record)

    @property
    def last_val(self) -> dict:
        return self.val[-1] if self.val else {}

    def draw(self) -> None:
        if self.enabled:
            write_curves(self.path.parent / "curves.png", self.losses, self.val)
