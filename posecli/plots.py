"""Pictures of numbers: training curves and per-keypoint charts, drawn with matplotlib.

matplotlib is an optional extra (``pip install "posecli[plot]"``): without it nothing is
drawn and ``available()`` says so, so that callers can mention it once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from posecli.fileio import atomic_path


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only: never open a window, work without a display
    import matplotlib.pyplot as plt

    return plt


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Running mean over the last ``window`` values (shorter at the start)."""
    c = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)


def training_curves(path: str | Path, train: Sequence[dict], val: Sequence[dict]) -> bool:
    """``metrics.jsonl``'s train records (iteration, loss, lr) and val records (epoch, AP) -> one PNG.

    Three panels: loss by iteration (raw, and a running mean over 2% of the run), learning rate
    by iteration, validation AP by epoch. Returns False (and writes nothing) without matplotlib.
    """
    if not available():
        return False
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    it = np.array([r["iteration"] for r in train], np.float64)
    loss = np.array([r["loss"] for r in train], np.float64)
    lr = np.array([r.get("lr", np.nan) for r in train], np.float64)
    epochs = np.array([r["epoch"] + 1 for r in val], np.float64)  # epochs done, as the CLI counts
    ap = np.array([r["AP"] for r in val], np.float64)

    fig, (ax_loss, ax_lr, ax_ap) = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained")
    if len(loss):
        ax_loss.plot(it, loss, color="tab:blue", alpha=0.25, linewidth=0.8, label="per iteration")
        ax_loss.plot(it, smooth(loss, max(1, len(loss) // 50)), color="tab:blue", label="running mean")
        ax_loss.legend(frameon=False, fontsize=8)
    ax_loss.set(title="training loss", xlabel="iteration")
    ax_lr.plot(it, lr, color="tab:orange")
    ax_lr.set(title="learning rate", xlabel="iteration")
    ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax_ap.plot(epochs, ap, color="tab:green", marker="o", markersize=3)
    ax_ap.set(title="validation AP", xlabel="epoch", ylim=(0, max(1e-3, float(ap.max()) * 1.1) if len(ap) else 1))
    for ax in (ax_loss, ax_lr, ax_ap):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.grid(alpha=0.3)
    _save(fig, path)
    return True


def keypoint_chart(path: str | Path, names: Sequence[str], within: Sequence[float], mean_oks: Sequence[float],
                   title: str = "per keypoint, matched persons") -> bool:  # fmt: skip
    """Horizontal bars per keypoint: share within OKS 0.5 and mean OKS term -> one PNG (False without matplotlib)."""
    if not available():
        return False
    plt = _pyplot()
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(names) + 1.2), layout="constrained")
    ax.barh(y - 0.2, within, height=0.4, color="tab:green", label="within (OKS term > 0.5)")
    ax.barh(y + 0.2, mean_oks, height=0.4, color="tab:blue", label="mean OKS term")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), title=title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    _save(fig, path)
    return True
