"""``posecli eval``: COCO keypoint AP of a checkpoint, with detector or ground-truth boxes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from posecli import sample as bundled
from posecli.choices import Backend, Precision
from posecli.cli.common import console, device_option, out, user_errors
from posecli.engine.cocometric import METRIC_NAMES, NMS_MODES
from posecli.engine.evaluate import EvalResult
from posecli.engine.evaluate import evaluate as run_evaluation
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.errors import UserError
from posecli.fileio import check_folder, check_output
from posecli.presets import TestCfg, load_preset


class CropRate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:.1f} crops/s", style="cyan")


def _data(preset, data_root, ann, images, boxes, use_sample):
    """(ann, images, boxes, test settings, published numbers) from --preset/--data-root, --ann/--images or --sample."""
    if preset:
        if data_root is None:
            raise UserError("--preset needs --data-root (the folder that holds coco/annotations, coco/val2017, ...)")
        p = load_preset(preset)
        val = p.data.val
        det = boxes or (data_root / val.boxes if val.boxes else None)
        return ann or data_root / val.ann, images or data_root / val.images, det, p.test, p.published
    if use_sample:
        return bundled.COCO_ANN, bundled.COCO_IMAGES, boxes or bundled.COCO_DET, TestCfg(), {}
    if ann is None or images is None:
        raise UserError("say what to evaluate on: --ann ANN.json --images DIR, or --preset NAME --data-root DIR, or --sample")
    return ann, images, boxes, TestCfg(), {}


def _device(device: str | None) -> str | None:
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


@user_errors
def evaluate(
    weights: Annotated[Path, typer.Argument(help="Weights: posecli .safetensors, an MMPose / official HRNet .pth, or a .onnx from posecli export.")],
    preset: Annotated[Optional[str], typer.Option(help="Preset whose data.val and test settings to use.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of the preset's data paths.")] = None,
    ann: Annotated[Optional[Path], typer.Option(help="COCO keypoint annotation file.")] = None,
    images: Annotated[Optional[Path], typer.Option(help="Folder of the annotation file's images.")] = None,
    boxes: Annotated[Optional[Path], typer.Option(help="COCO detection results (person boxes); default: ground-truth boxes.")] = None,
    sample: Annotated[bool, typer.Option(help="Evaluate on the bundled 4-image COCO sample with its detector boxes.")] = False,
    flip: Annotated[Optional[bool], typer.Option("--flip/--no-flip", help="Flip test (default: the preset's, else on).")] = None,
    decode: Annotated[Optional[str], typer.Option(help="Heatmap decoding: standard or dark.")] = None,
    nms: Annotated[Optional[str], typer.Option(help="Per-image NMS: oks, soft_oks or none.")] = None,
    nms_thr: Annotated[Optional[float], typer.Option(min=0.0, max=1.0, help="OKS threshold of the NMS.")] = None,
    min_box_score: Annotated[Optional[float], typer.Option(help="Skip detector boxes scoring below this.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="Crops per forward pass.")] = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="DataLoader workers that decode images and cut crops (default: 2 on GPU, 0 on CPU, where the network's threads use every core).")] = None,
    compile: Annotated[bool, typer.Option(help="torch.compile the network instead of running it on oneDNN's fused convolutions: same numbers; on 2 CPU cores slower than the default and 10-30 s of compiling first.")] = False,
    device: Annotated[Optional[str], typer.Option(help="cpu, cuda or cuda:N (default: cuda if available).")] = None,
    backend: Annotated[Backend, typer.Option(help="What runs crops -> heatmaps: auto = torch, or for a .onnx the installed runtime.")] = Backend.AUTO,
    precision: Annotated[Precision, typer.Option(help="fp32 gives MMPose's numbers; bf16 runs on CPUs with AMX or AVX512-BF16 and CUDA, fp16 on CUDA (docs/deploy.md).")] = Precision.FP32,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Write results.keypoints.json and metrics.json here.")] = None,
    skip_bad_images: Annotated[bool, typer.Option(help="Evaluate without the images that fail the check (missing, empty, "
                                                       "truncated) and their ground truth, instead of stopping.")] = False,  # fmt: skip
) -> None:
    """COCO keypoint AP with detector or ground-truth boxes, flip test, rescoring and OKS NMS."""
    device_option(device)
    ann_file, images_dir, boxes_file, test, published = _data(preset, data_root, ann, images, boxes, sample)
    if out_dir is not None:  # before evaluating, not after
        check_folder(out_dir)
        for name in ("results.keypoints.json", "metrics.json"):
            check_output(out_dir / name, [weights, ann_file, boxes_file])
    decode = decode or test.decode
    nms = nms or test.nms
    if decode not in ("standard", "dark"):
        raise UserError(f"--decode {decode!r}: use standard or dark")
    if nms not in NMS_MODES:
        raise UserError(f"--nms {nms!r}: use one of {', '.join(NMS_MODES)}")
    flip = test.flip if flip is None else flip
    settings = InferenceSettings(device=_device(device) or "auto", flip=flip, decode=decode,
                                 batch_size=batch_size or test.batch_size, network="compiled" if compile else "auto",
                                 backend=backend, precision=precision)  # fmt: skip
    predictor = Predictor.from_weights(weights, settings, keep=test.output_keypoints)
    main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    if main:
        console.print(f"[bold]eval[/] {weights} on {ann_file} with {boxes_file or 'ground-truth boxes'}: "
                      f"flip {'on' if flip else 'off'}, {decode} decode, {nms} NMS, {predictor.device}", highlight=False)  # fmt: skip
    with Progress("{task.description}", BarColumn(), MofNCompleteColumn(), CropRate(), TimeRemainingColumn(),
                  console=console, transient=True, disable=not main) as bar:  # fmt: skip
        task = bar.add_task("crops", total=None)
        result = run_evaluation(
            predictor, ann_file, images_dir, boxes_file, workers=workers,
            out_dir=out_dir, nms=nms, nms_thr=nms_thr if nms_thr is not None else test.nms_thr,
            keypoint_score_thr=test.keypoint_score_thr, min_box_score=min_box_score, skip_bad_images=skip_bad_images,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            log=lambda msg: main and console.print(f"[dim]{msg}[/]", highlight=False),
        )  # fmt: skip
    if not main:
        return
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if result.metrics:
        _print(result, published)
        if out_dir:
            console.print(f"wrote {out_dir / 'results.keypoints.json'} and {out_dir / 'metrics.json'}", highlight=False)


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
