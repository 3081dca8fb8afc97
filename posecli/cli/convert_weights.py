"""``posecli convert weights``: MMPose / official HRNet .pth -> safetensors with metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from posecli.cli.common import out, user_errors
from posecli.errors import UserError
from posecli.fileio import check_output
from posecli.weights import import_checkpoint, save_weights


@user_errors
def weights(
    checkpoint: Annotated[Path, typer.Option("--weights", "-w", help="MMPose .pth (published, or as training wrote it) or official HRNet .pth.")],
    output: Annotated[Path, typer.Option("--out", "-o", help="The .safetensors file to write.")],
    arch: Annotated[Optional[str], typer.Option(help="Architecture, when it cannot be recognised from the weights.")] = None,
    layout: Annotated[Optional[str], typer.Option(help="Keypoint layout (coco, aic, coco-aic), when not in the checkpoint.")] = None,
    allow_missing: Annotated[bool, typer.Option(help="Write the file even when weights are missing.")] = False,
):
    """Convert a .pth checkpoint to safetensors, reporting missing and unexpected keys.

    Examples:

      posecli convert weights -w td-hm_hrnet-w32_8xb64-210e_coco-256x192-81c58e40_20220909.pth -o hrnet_w32_coco.safetensors

      posecli convert weights -w work_dirs/my_run/best_coco_AP_epoch_210.pth -o mine.safetensors
    """
    if output.suffix != ".safetensors":
        raise UserError(f"{output}: the output must end in .safetensors")
    check_output(output, [checkpoint])
    imported = import_checkpoint(checkpoint, arch=arch, layout=layout)
    if imported.skipped:
        out.print(f"[dim]not converted[/] {', '.join(imported.skipped)} (training state, not weights)")
    for key in imported.unexpected:
        out.print(f"[yellow]unexpected[/] {key} (dropped)")
    for key in imported.missing:
        out.print(f"[red]missing[/] {key}")
    if imported.missing and not allow_missing:
        raise UserError(f"{checkpoint}: {len(imported.missing)} weights missing; nothing written (--allow-missing writes anyway)")
    save_weights(output, imported.state_dict, imported.info)
    info = imported.info
    out.print(f"wrote {output}: {info.arch}, {info.layout} layout, {len(imported.state_dict)} tensors, "
              f"{len(imported.unexpected)} unexpected, {len(imported.missing)} missing")  # fmt: skip
