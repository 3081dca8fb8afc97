"""``posecli export``: weights -> one ONNX graph that takes uint8 crops and gives heatmaps, checked against torch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from posecli.cli.common import console, out, user_errors
from posecli.engine.export import TOLERANCE, export_onnx
from posecli.engine.runtimes import DEFAULT_OPSET
from posecli.errors import UserError


@user_errors
def export(
    weights: Annotated[Path, typer.Option("--weights", "-w", help="posecli .safetensors, or an MMPose / official HRNet .pth.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="The .onnx file to write.")],
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Put MMPose's flip test inside the graph (mirror, flip back, shift, average): one call gives posecli's flip-test heatmaps.")] = False,
    batch: Annotated[Optional[int], typer.Option(min=1, help="Fix the batch size (crops per call); default: any.")] = None,
    dynamic_batch: Annotated[bool, typer.Option("--dynamic-batch", help="Any batch size (the default); not with --batch.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = DEFAULT_OPSET,
):
    """Export to ONNX: uint8 BGR crops (N, H, W, 3) in, heatmaps (N, K, h, w) out, normalisation (and --flip) inside.

    The graph's metadata says what posecli's weights say (arch, layout, keypoint names, flip
    indices, sizes, mean/std, flip test inside or not); `posecli eval` and `predict` take the
    .onnx as weights. Before writing, the graph runs beside the torch model on the bundled
    sample's crops: a difference beyond 1e-4 is an error and nothing is written.

    Examples:

      posecli export -w model.safetensors -o model.onnx --flip

      posecli export -w model.safetensors -o model_b32.onnx --batch 32
    """
    if dynamic_batch and batch is not None:
        raise UserError("--dynamic-batch and --batch: give one (a graph takes any batch size, or exactly --batch crops)")
    result = export_onnx(weights, out_file, flip=flip, batch=batch, opset=opset,
                         progress=lambda msg: console.print(f"[dim]{msg}[/]", highlight=False))  # fmt: skip
    info = result.info
    out.print(f"largest heatmap difference to torch on {result.crops} sample crops ({result.checked_on}): "
              f"{result.max_diff:.1e} (limit {TOLERANCE:g})", highlight=False)  # fmt: skip
    w, h = info.input_size
    out.print(f"wrote {result.path} ({result.size_bytes / 2**20:.1f} MiB, {result.seconds:.0f} s): {info.arch}, "
              f"{info.layout} layout, crops uint8 ({result.batch or 'N'}, {h}, {w}, 3) BGR -> heatmaps, flip test "
              f"{'inside' if result.flip else 'not inside'}, opset {result.opset}", highlight=False)  # fmt: skip
