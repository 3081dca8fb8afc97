"""``posecli convert``: datasets (AIC -> COCO, keypoint remapping) and checkpoints (-> safetensors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from posecli.cli.common import console, out, user_errors
from posecli.fileio import check_output

app = typer.Typer(help="Convert datasets (AIC raw -> COCO, layout remapping) and checkpoints (MMPose .pth -> safetensors).", no_args_is_help=True)


# --- datasets ---------------------------------------------------------------------------------


@app.command("aic")
@user_errors
def aic(
    raw: Annotated[Path, typer.Argument(help="AIC's raw annotation file, e.g. keypoint_train_annotations_20170909.json.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="COCO keypoint file to write, e.g. aic_train.json.")],
    images: Annotated[Optional[Path], typer.Option(help="Folder of the AIC images: width and height are read from their headers.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Drop malformed records and count them, instead of stopping at the first.")] = False,
) -> None:
    """AI Challenger's raw release -> COCO keypoint format, as MMPose's aic_train.json.

    Examples:

      posecli convert aic keypoint_train_annotations_20170909.json --images keypoint_train_images_20170902/ -o aic_train.json
    """
    from posecli.data.aic import convert_aic_file

    check_output(output, [raw])
    with console.status(f"converting {raw}" + (f", reading image sizes from {images}" if images else "")):
        summary = convert_aic_file(raw, output, images_dir=images, skip_invalid=skip_invalid)
    if not summary.sizes:
        console.print("[yellow]warning:[/] no --images: width and height are left out of the image entries", highlight=False)
    if summary.missing_images:
        shown = ", ".join(summary.missing_images[:5]) + (", ..." if len(summary.missing_images) > 5 else "")
        console.print(f"[yellow]warning:[/] {len(summary.missing_images)} images missing or unreadable under {images}, written without a size: {shown}", highlight=False)
    print_summary(f"{output}: {summary.images:,} images, {summary.persons:,} persons", summary.labelled, summary.visible, summary.skipped)


@app.command("remap")
@user_errors
def remap(
    inputs: Annotated[list[Path], typer.Argument(help="COCO keypoint files; several are concatenated, ids renumbered.")],
    to: Annotated[str, typer.Option("--to", help="Target layout: coco (merge: aic -> coco) or coco-aic (combine).")],
    output: Annotated[Path, typer.Option("--out", "-o", help="COCO keypoint file to write.")],
    source: Annotated[Optional[str], typer.Option("--from", help="Source layout of every input (default: read from each file's category keypoint names).")] = None,
    drop_empty: Annotated[bool, typer.Option("--drop-empty", help="Drop persons left with no labelled keypoint in the target layout.")] = False,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Drop malformed annotations and count them, instead of stopping at the first.")] = False,
) -> None:
    """Remap COCO keypoint files to another keypoint layout, and concatenate them.

    Examples:

      posecli convert remap aic_train.json --to coco -o aic_as_coco.json

      posecli convert remap person_keypoints_train2017.json aic_train.json --to coco-aic -o coco_aic_train.json
    """
    from posecli.data.remap import remap_files

    check_output(output, inputs)
    with console.status(f"remapping {len(inputs)} file(s) to {to}"):
        summary = remap_files(inputs, output, to, source, drop_empty=drop_empty, skip_invalid=skip_invalid)
    for path, layout in summary.inputs:
        lost = summary.unmapped.get(path)
        out.print(f"{path}: {layout} -> {summary.target}" + (f" (dropped: {', '.join(lost)})" if lost else ""), highlight=False)
    print_summary(f"{output}: {summary.images:,} images, {summary.persons:,} persons, {summary.target} layout", summary.labelled, summary.visible, summary.skipped)


def print_summary(title: str, labelled: dict[str, int], visible: dict[str, int], skipped: dict[str, int]) -> None:
    """Per-keypoint label counts, then what was skipped and why."""
    out.print(title, highlight=False)
    table = Table()
    table.add_column("keypoint")
    table.add_column("labelled", justify="right")
    table.add_column("visible", justify="right")
    for name, count in labelled.items():
        table.add_row(name, f"{count:,}", f"{visible[name]:,}")
    out.print(table)
    if skipped:
        out.print(f"[yellow]skipped {sum(skipped.values()):,} records:[/]")
        for why, count in sorted(skipped.items(), key=lambda item: -item[1]):
            out.print(f"  {count:,}  {why}", highlight=False)
