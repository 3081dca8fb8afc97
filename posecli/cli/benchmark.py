"""``posecli benchmark``: speed and memory of the model and the pipeline, against this device's measured peak."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from posecli.choices import Backend, Network, Precision
from posecli.cli.benchmark_train import train_benchmark
from posecli.cli.common import Device, console, device_option, given, out, shown, user_errors
from posecli.engine import distributed
from posecli.engine.bench.run import BenchmarkResult, load_benchmark_model, requested_settings, run_benchmark
from posecli.engine.inference import InferenceSettings
from posecli.engine.runtimes import installed_runtimes
from posecli.errors import UserError
from posecli.fileio import check_output, write_json


def comma_list(text: str, flag: str, parse=str) -> list:
    """'1,8,32' -> [1, 8, 32]: each item through ``parse``; a UserError naming ``flag`` otherwise."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        values = [parse(t) for t in items]
    except ValueError as e:
        raise UserError(f"{flag} {text!r}: {e}") from None
    if not values:
        raise UserError(f"{flag} {text!r}: give at least one value")
    return list(dict.fromkeys(values))


def nonnegative_int(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number >= 0")
    return int(text)


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive integer")
    return int(text)


@user_errors
def benchmark(
    ctx: typer.Context,
    weights: Annotated[Optional[Path], typer.Option("--weights", "-w", help="Weights file; without it, a random model of --arch/--layout (speed does not depend on the weights).")] = None,
    arch: Annotated[str, typer.Option(help="Architecture of the random model (hrnet-w32, hrnet-w48, hrnet-small).")] = "hrnet-w32",
    layout: Annotated[str, typer.Option(help="Keypoint layout of the random model (coco, aic, coco-aic).")] = "coco",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    device: Device = "auto",
    precision: Annotated[str, typer.Option(help="Comma-separated precisions: fp32, bf16, fp16 (each against its own matmul peak), or all (those that do not run natively here are noted, not run).")] = "fp32",
    backend: Annotated[str, typer.Option(help="Comma-separated backends: torch, onnxruntime, openvino, or all (torch and every installed runtime), timed side by side.")] = "torch",
    network: Annotated[str, typer.Option(help="Comma-separated networks: auto (eval's and predict's default), plain, folded, onednn, compiled.")] = "auto",
    chunk: Annotated[Optional[int], typer.Option(min=0, show_default="the network's own on CPU", help="Crops per network call, 0 = the whole batch.")] = None,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Flip test: two forwards per crop, as eval runs.")] = False,
    compare: Annotated[bool, typer.Option(help="Also time the plain network and each speed network (folded, onednn, compiled), interleaved; with --train, NCHW and compiled fp32 steps.")] = False,
    pipeline: Annotated[bool, typer.Option(help="Also time the pipeline on the bundled sample images and detector boxes.")] = False,
    out_file: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write all figures to this JSON file.")] = None,
    warmup: Annotated[int, typer.Option(min=1, help="Untimed calls before timing.")] = 2,
    repeats: Annotated[int, typer.Option(min=1, help="Timed calls (medians are reported).")] = 5,
    budget: Annotated[float, typer.Option(min=0.0, help="Seconds one measurement may take; slow settings get fewer repeats.")] = 120.0,
    train: Annotated[bool, typer.Option("--train", help="Time training instead: the data pipeline for each --workers count and the training step per --precision (default all) at the preset's batch size (or --batch-sizes), and the preset's estimated wall time.")] = False,
    preset: Annotated[Optional[str], typer.Option(show_default="coco", help="With --train: the preset to time (its arch, input size, augmentation, batch size, epochs).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="With --train: preset override key=value; repeatable.")] = None,
    workers: Annotated[Optional[str], typer.Option(show_default="1, 2, 4, ... up to the cores", help="With --train: comma-separated DataLoader worker counts.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="With --train: the preset's data, to count its training instances for the estimate.")] = None,
):
    """Speed and memory of the model and of the whole pipeline, against this device's measured peak.

    Examples:

      posecli benchmark --batch-sizes 1,8,32 --compare --pipeline

      posecli benchmark -w model.safetensors --flip --precision fp32,bf16 --out bench.json

      posecli benchmark --batch-sizes 32 --backend all --precision all

      posecli benchmark --train --preset coco --workers 1,2,4,8 --out train_bench.json
    """
    if train:
        overrides = list(set_ or []) + ([f"model.arch={arch}"] if given(ctx, "arch") else [])
        if out_file is not None:
            check_output(out_file, [])
        train_benchmark(preset, overrides, distributed.process_device(device_option(device)),
                        comma_list(workers, "--workers", nonnegative_int) if workers else None,
                        comma_list(precision, "--precision", lambda t: Precision.parse(t, "precision")) if given(ctx, "precision") and precision != "all" else None,
                        comma_list(batch_sizes, "--batch-sizes", positive_int) if given(ctx, "batch_sizes") else None,
                        compare, warmup, repeats, budget, data_root, out_file)  # fmt: skip
        return
    sizes = comma_list(batch_sizes, "--batch-sizes", positive_int)
    precisions = [] if precision == "all" else comma_list(precision, "--precision", lambda t: Precision.parse(t, "precision"))
    networks = comma_list(network, "--network", lambda t: Network.parse(t, "network"))
    precisions = list(Precision) if precision == "all" else precisions
    backends = [Backend.TORCH, *installed_runtimes()] if backend == "all" else comma_list(backend, "--backend", lambda t: Backend.parse(t, "backend"))
    base = InferenceSettings(device=device_option(device), flip=flip, chunk=chunk)
    if weights is not None and not weights.is_file():
        raise UserError(f"{weights}: no such weights file")
    if out_file is not None:
        check_output(out_file, [weights])
    net, info, source = load_benchmark_model(weights, arch, layout)
    settings = requested_settings(base, precisions, networks, compare, tuple(backends))
    result = run_benchmark(net, info, source, settings=settings, batch_sizes=sizes, pipeline=pipeline, warmup=warmup,
                           repeats=repeats, budget_s=budget, progress=lambda msg: console.print(f"[dim]{msg}[/]"))  # fmt: skip
    print_result(result)
    if out_file is not None:
        write_json(out_file, result.to_json(), indent=1)
        out.print(f"wrote {out_file}")


def print_result(r: BenchmarkResult) -> None:
    m, cuda = r.machine, r.machine["device"].startswith("cuda")
    # Piped or redirected: wide enough for the table (rich would wrap it at 80 columns).
    stdout = out if out.is_terminal else Console(width=130, highlight=False)

    def say(text) -> None:
        stdout.print(text)

    say(f"[bold]{r.model['arch']}[/] ({r.model['layout']}, {r.model['input_size'][0]}x{r.model['input_size'][1]}), "
        f"{r.model['macs_per_crop'] / 1e9:.2f} G multiply-adds per crop; {m.get('gpu', m['cpu'])}, {m['cpu_count']} "
        f"cores, {m['torch_threads']} torch threads, torch {m['torch']} ({m['cpu_capability']}), {m['device']}")  # fmt: skip
    say("matmul peak at start: " + ", ".join(f"{p.precision} {p.gflops:.1f} GFLOP/s ({p.n}x{p.n}, median of {p.repeats})"
                                            for p in r.matmul_peaks))  # fmt: skip
    if r.conv_peak:
        say(f"fp32 convolution ({r.conv_peak.shape}): {r.conv_peak.gflops:.1f} GFLOP/s, for comparison; "
            "shares below use the matmul peak")  # fmt: skip
    table = Table(title="model: Predictor.heatmaps (normalise, forward(s), flip back); medians")
    for col in ("setting", "batch", "crops/s", "ms p50/p90/p99", "peak MB", "GFLOP/s", "peak", "share", "rel. diff"):
        table.add_column(col, justify="left" if col == "setting" else "right", no_wrap=col == "setting")
    for run in r.model_runs:
        if run.skipped:
            table.add_row(run.setting, str(run.batch_size), "[yellow]skipped[/]", "[yellow]see notes[/]", *[""] * 5)
            continue
        diff = "-" if run.max_rel_diff is None else f"{run.max_rel_diff:.0e}"
        table.add_row(run.setting, str(run.batch_size), f"{run.crops_per_s:.2f}",
                      "/".join(f"{run.latency_ms[p]:.0f}" for p in ("p50", "p90", "p99")), f"{run.peak_memory_mb:.0f}",
                      f"{run.gflops:.1f}", f"{run.peak_gflops:.0f}", f"{run.share_of_peak:.0%}", diff)  # fmt: skip
    say(table)
    for p in r.pipeline:
        table = Table(title=f"pipeline: {p.images} sample images, {p.crops} detector boxes, batch {p.batch_size}, {p.setting}")
        for col in ("stage", "ms per crop", "share"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        for stage, ms in p.ms_per_crop.items():
            table.add_row(stage.replace("_", " "), f"{ms:.1f}", f"{p.share[stage]:.0%}")
        table.add_row("[bold]end to end[/]", f"{sum(p.ms_per_crop.values()):.1f}", f"[bold]{p.crops_per_s:.2f} crops/s[/]")
        say(table)
    memory = "CUDA max allocated" if cuda else "process RSS high-water during one call"
    if len({run.setting for run in r.model_runs}) > 1 and not cuda:
        memory += " (with every compared model loaded)"
    say(f"peak MB: {memory}. GFLOP/s = 2 x multiply-adds x forwards x crops/s; share = GFLOP/s / peak, the median GFLOP/s "
        "of a matmul sampled between the timed calls (BN, ReLU, additions and memory traffic are not counted, so 100% is "
        "out of reach). rel. diff = max |heatmaps - plain fp32| / max |plain fp32|, smallest batch.")  # fmt: skip
    for note in r.notes:
        say(f"- {shown(note)}")
