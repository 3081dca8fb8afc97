"""``posecli eval``: COCO keypoint AP of a checkpoint, with detector or ground-truth boxes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from posecli.choices import Backend, Decode, Network, Nms, Precision
from posecli.cli.common import (shown, BackendOption, BatchSize, DecodeOption, Device, Flip, MinBoxScore, NetworkOption, NmsOption,
                                NmsThr, PrecisionOption, Weights, console, device_option, given, out, user_errors)  # fmt: skip
from posecli.engine import distributed
from posecli.engine.cocometric import METRIC_NAMES
from posecli.engine.evaluate import EvalResult, eval_data
from posecli.engine.evaluate import evaluate as run_evaluation
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.fileio import check_folder, check_output
from posecli.presets import load_preset


class CropRate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} crops/s", style="cyan")


def _device(device: str) -> str:
    return str(distributed.process_device(device))  # under torchrun auto and cuda are cuda:LOCAL_RANK


@user_errors
def evaluate(
    ctx: typer.Context,
    weights: Weights,
    preset: Annotated[Optional[str], typer.Option(help="Preset whose data.val and test settings to use (a typed option wins).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of the preset's data paths.")] = None,
    ann: Annotated[Optional[Path], typer.Option(help="COCO keypoint annotation file.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Folder of the annotation file's images.")] = None,
    boxes: Annotated[Optional[Path], typer.Option(help="COCO detection results (person boxes); without it, or with --gt-boxes, ground-truth boxes.")] = None,
    gt_boxes: Annotated[bool, typer.Option("--gt-boxes", help="Ground-truth person boxes, even where the preset names a detection file.")] = False,
    sample: Annotated[bool, typer.Option(help="Evaluate on the bundled 4-image COCO sample with its detector boxes.")] = False,
    flip: Flip = True,
    decode: DecodeOption = Decode.STANDARD,
    nms: NmsOption = Nms.OKS,
    nms_thr: NmsThr = 0.9,
    min_box_score: MinBoxScore = 0.0,
    batch_size: BatchSize = 32,
    network: NetworkOption = Network.AUTO,
    precision: PrecisionOption = Precision.FP32,
    backend: BackendOption = Backend.AUTO,
    device: Device = "auto",
    workers: Annotated[Optional[int], typer.Option(min=0, show_default="none on CPU, 2 on GPU", help="DataLoader workers that decode images and cut crops.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write results.keypoints.json and metrics.json (and keypoints.png with the plot extra) here.")] = None,
    skip_bad_images: Annotated[bool, typer.Option(help="Evaluate without the images that fail the check (missing, empty, "
                                                       "truncated) and their ground truth, instead of stopping.")] = False,  # fmt: skip
) -> None:
    """COCO keypoint AP with detector or ground-truth boxes, flip test, rescoring and OKS NMS, as MMPose's CocoMetric.

    Examples:

      posecli eval -w hrnet_w32_coco_256x192.pth --preset coco --data-root data/

      posecli eval -w runs/sample/best.safetensors --sample --out eval/

      torchrun --nproc-per-node 8 -m posecli eval -w model.safetensors --preset coco --data-root data/
    """
    device_option(device)
    data = eval_data(load_preset(preset) if preset else None, data_root, ann, images, boxes, gt_boxes, sample)
    test = data.test
    if out_dir is not None:  # before evaluating, not after
        check_folder(out_dir)
        for name in ("results.keypoints.json", "metrics.json"):
            check_output(out_dir / name, [weights, data.ann, data.boxes])

    def pick(name: str, typed, from_preset):  # an option typed on the command line wins over the preset's value
        return typed if given(ctx, name) or preset is None else from_preset

    flip, decode, batch_size = pick("flip", flip, test.flip), pick("decode", decode, test.decode), pick("batch_size", batch_size, test.batch_size)
    nms, nms_thr = pick("nms", nms, test.nms), pick("nms_thr", nms_thr, test.nms_thr)
    settings = InferenceSettings(device=_device(device), flip=flip, decode=decode, batch_size=batch_size,
                                 network=network, backend=backend, precision=precision, shift_heatmap=test.shift_heatmap)  # fmt: skip
    predictor = Predictor.from_weights(weights, settings, keep=test.output_keypoints)
    ann_file, images_dir, boxes_file, published = data.ann, data.images, data.boxes, data.published
    main = distributed.launch().main  # under torchrun only rank 0 reports
    if main:
        console.print(f"[bold]eval[/] {weights} on {ann_file} with {boxes_file or 'ground-truth boxes'}: "
                      f"flip {'on' if flip else 'off'}, {decode} decode, {nms} NMS, {predictor.device}", highlight=False)  # fmt: skip
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), CropRate(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not main) as bar:  # fmt: skip
        task = bar.add_task("crops", total=None)
        result = run_evaluation(
            predictor, ann_file, images_dir, boxes_file, workers=workers,
            out_dir=out_dir, nms=nms, nms_thr=nms_thr if nms_thr is not None else test.nms_thr,
            keypoint_score_thr=test.keypoint_score_thr, score_mode=test.score_mode, min_box_score=min_box_score,
            skip_bad_images=skip_bad_images,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            log=lambda msg: main and console.print(f"[dim]{msg}[/]", highlight=False),
        )  # fmt: skip
    if not main:
        return
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {shown(warning)}", highlight=False)
    if result.metrics:
        _print(result, published)
        if out_dir:
            chart = out_dir / "keypoints.png"
            console.print(f"wrote {out_dir / 'results.keypoints.json'} and {out_dir / 'metrics.json'}"
                          + (f", and the per-keypoint chart {chart}" if chart.exists() else ""), highlight=False)  # fmt: skip


def _print(result: EvalResult, published: dict) -> None:
    table = Table(title="COCO keypoint AP", caption=f"{result.num_boxes} boxes, {result.num_results} results after NMS")
    table.add_column("metric")
    table.add_column("posecli", justify="right")
    if published:
        table.add_column("published", justify="right")
    for name in METRIC_NAMES:
        row = [name, f"{result.metrics[name]:.4f}"]
        if published:
            row.append(f"{published[name]:.3f}" if name in published else "")
        table.add_row(*row)
    out.print(table)
    joints = Table(title="Per keypoint, matched persons", caption="within: the keypoint's own OKS term > 0.5")
    for col in ("keypoint", "labelled", "within", "mean OKS term"):
        joints.add_column(col, justify="left" if col == "keypoint" else "right")
    for s in result.per_keypoint:
        joints.add_row(s.name, str(s.labelled), f"{s.within:.1%}" if s.labelled else "-",
                       f"{s.mean_oks:.3f}" if s.labelled else "-")  # fmt: skip
    out.print(joints)
