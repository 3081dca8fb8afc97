"""A run's record: ``metrics.jsonl`` (one JSON line per iteration, validation, checkpoint) and ``curves.png``.

The curves (loss and learning rate by iteration, validation AP by epoch) are drawn by
``posecli.plots`` when matplotlib is installed (the ``plot`` extra); TensorBoard events are
written too when ``torch.utils.tensorboard`` imports (the ``tensorboard`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from posecli import plots
from posecli.fileio import append_text, atomic_path


def _tensorboard(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    # A resumed run logs again the steps after its checkpoint: purge_step makes TensorBoard drop the
    # killed run's events from that step on (they sit in the previous event file), so each step shows once.
    return SummaryWriter(str(folder), purge_step=purge_step)


class MetricsLog:
    """Appends records to ``metrics.jsonl``; on resume keeps the first ``keep`` (those the checkpoint had seen),
    and TensorBoard hides the earlier events from step ``purge_step`` on."""

    def __init__(self, path: Path, enabled: bool = True, keep: int = 0, purge_step: int | None = None):
        self.path, self.enabled = Path(path), enabled
        self.count, self.train, self.val = 0, [], []
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
        self.tb = _tensorboard(self.path.parent / "tensorboard", purge_step)

    def _remember(self, record: dict) -> None:
        self.count += 1
        if record.get("kind") == "train":
            self.train.append(record)
        elif record.get("kind") == "val":
            self.val.append(record)

    def write(self, record: dict, log: Callable[[dict], None] | None = None) -> None:
        self._remember(record)
        if self.enabled:
            append_text(self.path, json.dumps(record) + "\n")  # a full disk: an error that names the file
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
            plots.training_curves(self.path.parent / "curves.png", self.train, self.val)
