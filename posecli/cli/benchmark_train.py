"""``posecli benchmark --train``: the options' meaning for training, and the tables (the library: engine/bench/train.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from posecli.choices import Precision
from posecli.cli.common import console, out, shown
from posecli.engine.bench.train import TrainBenchmark, default_workers, run_train_benchmark
from posecli.fileio import write_json
from posecli.presets import load_preset


def train_benchmark(preset_name: str | None, overrides: list[str], device: torch.device, workers: list[int] | None,
                    precisions: list[Precision] | None, batch_sizes: list[int] | None, compare: bool, warmup: int,
                    repeats: int, budget: float, data_root: Path | None, out_file: Path | None) -> None:  # fmt: skip
    """Run and print the training benchmark; None: the preset's batch size, every precision, 1..cores workers."""
    preset = load_preset(preset_name or "coco", overrides)
    result = run_train_benchmark(preset, device, workers=workers if workers is not None else default_workers(),
                                 precisions=precisions or list(Precision), batch_sizes=batch_sizes or [preset.train.batch_size],
                                 compare=compare, warmup=warmup, repeats=repeats, budget_s=budget, data_root=data_root,
                                 progress=lambda msg: console.print(f"[dim]{msg}[/]"))  # fmt: skip
    print_train_result(result)
    if out_file is not None:
        write_json(out_file, result.to_json(), indent=1)
        out.print(f"wrote {out_file}")


def print_train_result(r: TrainBenchmark) -> None:
    m, p = r.machine, r.preset
    say = (out if out.is_terminal else Console(width=130, highlight=False)).print  # piped: wide enough for the tables
    say(f"[bold]train {p['name']}[/]: {p['arch']} at {p['input_size'][0]}x{p['input_size'][1]}, batch {p['batch_size']} per "
        f"device, {p['epochs']} epochs; {m.get('gpu', m['cpu'])}, {m['cpu_count']} cores, {m['torch_threads']} torch "
        f"threads, torch {m['torch']}, {m['device']}")  # fmt: skip
    total = sum(r.stages_ms.values())
    say("pipeline in one process (one OpenCV thread), ms per sample: " + ", ".join(
        f"{k} {v:.2f} ({v / total:.0%})" for k, v in r.stages_ms.items()) + f"; {1e3 / total:.0f} samples/s")  # fmt: skip
    table = Table(title="loader: the run's DataLoader (persistent workers), second pass")
    for col in ("workers", "batch", "samples", "samples/s", "start s"):
        table.add_column(col, justify="right")
    for run in r.loader:
        table.add_row(str(run.workers), str(run.batch_size), str(run.samples), f"{run.samples_per_s:.0f}", f"{run.start_s:.2f}")
    say(table)
    table = Table(title="step: train_step (forward under autocast, MSE, backward, fused Adam), medians")
    for col in ("setting", "batch", "samples/s", "ms p50/p90", "first s", "peak MB", "loss first -> last"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for s in r.steps:
        if s.skipped:
            table.add_row(s.setting, str(s.batch_size), "[yellow]not run[/]", *[""] * 4)
            continue
        table.add_row(s.setting, str(s.batch_size), f"{s.samples_per_s:.1f}", f"{s.step_ms['p50']:.0f}/{s.step_ms['p90']:.0f}",
                      f"{s.first_step_s:.1f}", f"{s.peak_memory_mb:.0f}", f"{s.losses[0]:.2e} -> {s.losses[-1]:.2e}")  # fmt: skip
    say(table)
    table = Table(title=f"estimate: {r.instances:,} instances ({r.instances_source})")
    for col in ("setting", "samples/s per device", "bound by", "hours, 1 device", "devices", "hours"):
        table.add_column(col, justify="left" if col == "setting" else "right")
    for e in r.estimates:
        table.add_row(e.setting, f"{e.samples_per_s:.1f}", e.bound, f"{e.hours_one_device:,.1f}", str(e.devices), f"{e.hours:,.1f}")
    say(table)
    say(f"assumption: {r.assumption}")
    for note in r.notes:
        say(f"- {shown(note)}")
