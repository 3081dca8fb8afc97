"""``posecli train``: a preset end to end; ``torchrun --nproc-per-node N -m posecli train ...`` for DDP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from posecli.choices import Precision
from posecli.cli.common import Device, console, device_option, out, shown, user_errors
from posecli.engine import distributed
from posecli.engine.train import SAMPLE_SETTINGS, RunOptions, run_preset
from posecli.engine.train import train as run_training
from posecli.fileio import check_folder


class TrainView:
    """Turns the library's events into a per-epoch progress bar and a line per validation."""

    def __init__(self, bar: Progress):
        self.bar, self.task = bar, None

    def __call__(self, e: dict) -> None:
        kind = e["kind"]
        if kind == "note":
            console.print(f"[yellow]note:[/] {shown(e['text'])}", highlight=False)
        elif kind == "start":
            how = f"resuming in epoch {e['epoch'] + 1} after step {e['step']}" if e["resumed"] else "new run"
            console.print(f"[bold]train[/] {e['preset']}: {e['arch']}, {e['instances']} instances, {e['world']} "
                          f"process(es) on {e['device']}, global batch {e['global_batch']}, lr {e['lr']:.3g}; {how}",
                          highlight=False)  # fmt: skip
            if e["epoch"] >= e["epochs"]:
                console.print(f"[yellow]note:[/] the run has done all its {e['epochs']} epochs; nothing to train "
                              "(--resume --epochs N extends it to N)", highlight=False)  # fmt: skip
        elif kind == "epoch":
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(f"epoch {e['epoch'] + 1}/{e['epochs']}", total=e["steps"], completed=e["step"], loss=float("nan"),
                                          lr=0.0, data=0.0)  # fmt: skip
        elif kind == "train" and self.task is not None:
            self.bar.update(self.task, completed=e["step"] + 1, loss=e["loss"], lr=e["lr"], data=e["data_time"])
        elif kind == "validating":
            self.bar.update(self.task, description=f"epoch {e['epoch'] + 1} (validating)")
        elif kind == "val":
            best = " [green]best[/]" if e["best"] else ""
            self.bar.console.print(f"epoch {e['epoch'] + 1}: AP {e['AP']:.4f}, AP50 {e['AP50']:.4f}, AR {e['AR']:.4f} "
                                   f"({e['boxes']} boxes){best}", highlight=False)  # fmt: skip
        elif kind == "done":
            out.print(f"done: best AP {e['best_ap']:.4f} (epoch {e['best_epoch'] + 1}); weights in {e['workdir']}/best.safetensors "
                      f"and last.safetensors", highlight=False)  # fmt: skip


@user_errors
def train(
    preset: Annotated[Optional[str], typer.Option(help="Bundled preset (coco, coco-aic-merge, coco-aic-combine) or a .yaml; "
                                                  "with --resume, default: the checkpoint's.")] = None,  # fmt: skip
    data_root: Annotated[Optional[Path], typer.Option(help="Root of the preset's data paths (coco/..., aic/...).")] = None,
    workdir: Annotated[Optional[Path], typer.Option("--out", "-o", show_default="runs/PRESET", help="Run folder: checkpoints, metrics.jsonl, curves.png, preset.yaml.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Preset override key=value, e.g. train.lr=1e-3; repeatable.")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Same as --set train.epochs=N; with --resume, extends the run to N epochs.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Per process; same as --set train.batch_size=N.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader workers; same as --set train.workers=N.")] = None,
    micro_batches: Annotated[Optional[int], typer.Option(min=1, help="Split each batch into this many forward/backward passes "
                                                         "(gradient accumulation; chunk j = what rank j of that many would "
                                                         "get). Default 1, or the resumed run's.")] = None,  # fmt: skip
    checkpoint_iters: Annotated[Optional[int], typer.Option(min=0, help="Also save `last` every N iterations (0: at epoch "
                                                            "ends only). Default 0, or the resumed run's.")] = None,  # fmt: skip
    amp: Annotated[bool, typer.Option(help="Mixed precision in the device's usual type: --precision fp16 on CUDA, bf16 on CPU.")] = False,
    precision: Annotated[Optional[Precision], typer.Option(show_default="fp32, or the resumed run's", help="Forward pass under "
                                                           "autocast: bf16, or fp16 with a GradScaler (CUDA only).")] = None,  # fmt: skip
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", show_default="off, or the resumed run's",
                                                    help="torch.compile the network for training (docs/scale.md).")] = None,  # fmt: skip
    sync_bn: Annotated[Optional[bool], typer.Option("--sync-bn/--no-sync-bn", show_default="off, as MMPose's HRNet configs",
                                                    help="SyncBatchNorm across GPUs (mmengine's sync_bn); off: statistics "
                                                    "averaged across ranks at each epoch end.")] = None,  # fmt: skip
    device: Device = "auto",
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last.state.pt, with the checkpoint's "
                                              "preset and settings (--sample, --data-root, ... need not be repeated).")] = False,  # fmt: skip
    resume_from: Annotated[Optional[Path], typer.Option(help="Continue a run from this .state.pt file (implies --resume).")] = None,
    init_backbone: Annotated[Optional[Path], typer.Option(help="ImageNet HRNet .pth (e.g. hrnet_w32-36af842e.pth) for the backbone.")] = None,
    sample: Annotated[bool, typer.Option(help="Train on the bundled sample (4 COCO + 3 AIC images), small model and schedule.")] = False,
    skip_bad_images: Annotated[bool, typer.Option(help="Train and validate without the images that fail the check before "
                                                       "epoch 1 (missing, empty, truncated), instead of stopping there.")] = False,  # fmt: skip
) -> None:
    """Train a preset (coco, coco-aic-merge, coco-aic-combine) on CPU, one GPU, or many with torchrun.

    The run folder gets preset.yaml, metrics.jsonl, curves.png, last/best .safetensors + .state.pt.

    Examples:

      posecli train --preset coco-aic-merge --sample --out runs/sample

      posecli train --preset coco --data-root data/ --set train.lr=1e-3

      torchrun --nproc-per-node 8 -m posecli train --preset coco --data-root data/ --out runs/coco

      posecli train --resume --out runs/coco --epochs 220
    """
    device_option(device)
    overrides = list(set_ or [])
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("workers", workers)):
        if value is not None:
            overrides.append(f"train.{key}={value}")
    resume_path = resume_from
    if resume_from is not None:
        workdir = workdir or resume_from.parent
    elif resume:
        workdir = workdir or (Path("runs") / Path(preset).stem if preset else None)
        if workdir is None:
            raise typer.BadParameter("--resume needs --out (or --preset, for runs/PRESET)")
        resume_path = workdir / "last.state.pt"
    if workdir is None:
        workdir = Path("runs") / (Path(preset).stem if preset else "run")
    opts = RunOptions(workdir=workdir, data_root=data_root, sample=sample, resume=resume_path, init_backbone=init_backbone,
                      amp=amp, device=device, micro_batches=micro_batches, checkpoint_iters=checkpoint_iters,
                      skip_bad_images=skip_bad_images, precision=precision, compile=compile, sync_bn=sync_bn)  # fmt: skip
    check_folder(workdir)  # before the checkpoint is read: an unusable run folder is the first thing to say
    chosen = run_preset(preset, overrides, sample=sample, resume=resume_path)
    if sample and resume_path is None and distributed.launch().main:  # under torchrun only rank 0 reports
        console.print(f"[yellow]note:[/] the bundled sample (--sample): {', '.join(SAMPLE_SETTINGS)} (override them with --set)",
                      highlight=False)  # fmt: skip
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.6f}  lr {task.fields[lr]:.2e}  data {task.fields[data]:.2f}s"),
               TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        run_training(chosen, opts, TrainView(bar))
