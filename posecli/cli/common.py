"""What every command shares: the console, and turning user errors into a message and exit 1."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Callable

import typer
from rich.console import Console
from rich.markup import escape

from posecli.choices import Backend, Decode, Network, Nms, Precision
from posecli.devices import device_problem
from posecli.errors import UserError, spell_options

console = Console(stderr=True)
out = Console()


# Library parameters whose flag is not simply --the-name-with-dashes.
FLAGS = {"source": "--from", "target": "--to", "workdir": "--out", "out_dir": "--out", "images_dir": "--images",
         "resume": "--resume", "use_gt_boxes": "--gt-boxes", "overrides": "--set"}  # fmt: skip


def flag(name: str) -> str:
    """A library parameter's command-line spelling: ``data_root`` -> ``--data-root``."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def shown(text: str) -> str:
    """A library note or warning as the user reads it: parameters spelled as flags, no rich markup."""
    return escape(spell_options(text, flag))


def user_errors(fn: Callable) -> Callable:
    """Print a ``UserError`` (and unreadable files) as one red line, exit 1, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            console.print(f"[bold red]error:[/] {escape(e.render(flag))}", highlight=False)  # "[x, y, w, h]" is no markup
            raise typer.Exit(1) from None
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            console.print(f"[bold red]error:[/] {e.strerror}: {e.filename}", highlight=False)
            raise typer.Exit(1) from None

    return wrapper


def device_option(value: str | None, flag: str = "--device") -> str | None:
    """The shared device check of every command: ``--device gpu`` fails here, in seconds, listing the valid names."""
    problem = device_problem(value)
    if problem:
        raise UserError(f"{flag} {value}: {problem}")
    return value


def given(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed option ``name`` (rather than leaving its shown default)."""
    source = ctx.get_parameter_source(name)  # click's ParameterSource; typer vendors click, so compare by name
    return source is not None and source.name != "DEFAULT"


# The options every command spells the same way, with the same defaults (``--help`` shows them).
Weights = Annotated[Path, typer.Option("--weights", "-w", help="posecli .safetensors, an MMPose / official HRNet .pth, or a .onnx from posecli export.")]
Device = Annotated[str, typer.Option(help="auto (CUDA if there is a GPU, else the CPU), cpu, cuda or cuda:N.")]
# Inference: what eval and predict share (InferenceSettings), with eval's defaults everywhere.
Flip = Annotated[bool, typer.Option("--flip/--no-flip", help="Flip test: average with the mirrored crop's heatmaps, as MMPose tests.")]
DecodeOption = Annotated[Decode, typer.Option(help="Heatmap decoding: standard (arg-max and a quarter-pixel step) or dark (MMPose's DARK).")]
BatchSize = Annotated[int, typer.Option(min=1, help="Person crops per network batch.")]
NetworkOption = Annotated[Network, typer.Option(help="How the network runs; all give the same keypoints. auto: the fastest here (docs/benchmarks.md).")]
PrecisionOption = Annotated[Precision, typer.Option(help="fp32 gives MMPose's numbers; bf16 needs AMX or AVX512-BF16 or CUDA, fp16 CUDA (docs/deploy.md).")]
BackendOption = Annotated[Backend, typer.Option(help="What runs crops -> heatmaps: auto = torch, or for a .onnx the installed runtime.")]
NmsOption = Annotated[Nms, typer.Option(help="Per-image NMS of the people found: oks, soft_oks or none.")]
NmsThr = Annotated[float, typer.Option(min=0.0, max=1.0, help="OKS above which NMS drops the lower-scored person.")]
MinBoxScore = Annotated[float, typer.Option(min=0.0, help="Drop person boxes scored below this (detector files, detectors).")]
