"""``posecli predict``: keypoints for images, folders, globs and videos, drawn and as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from posecli.choices import Backend, Decode, Network, Precision
from posecli.cli.common import (BackendOption, BatchSize, DecodeOption, Device, Flip, NetworkOption, PrecisionOption, Weights,
                                console, device_option, out, user_errors)  # fmt: skip
from posecli.engine.inference import InferenceSettings
from posecli.engine.predict import PredictConfig
from posecli.fileio import check_folder, check_output
from posecli.engine.predict import predict as run_predict


class RateColumn(ProgressColumn):
    """Images plus video frames per second, averaged by rich over the last few seconds."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} frames/s" if task.speed else "- frames/s", style="progress.data.speed")


@user_errors
def predict(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Images, folders (their images and videos, not recursive), glob patterns, videos.")],
    weights: Weights,
    boxes: Annotated[Optional[Path], typer.Option(help="COCO detection results (image_id, bbox xywh, score) for the images.")] = None,
    ann: Annotated[Optional[Path], typer.Option(help="COCO annotations that name the image ids of --boxes (default: numeric file names, 000000000785.jpg -> 785).")] = None,
    detector: Annotated[str, typer.Option(help="Person boxes when there is no --boxes: hog (OpenCV's, offline), none (the whole image), or a YOLOX-style FILE.onnx.")] = "hog",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for predictions.json, drawn images, drawn videos and their .jsonl.")] = Path("predictions"),
    batch_size: BatchSize = 32,
    device: Device = "auto",
    min_box_score: Annotated[float, typer.Option(help="Drop person boxes scored below this.")] = 0.3,
    min_keypoint_score: Annotated[float, typer.Option(help="Draw only keypoints scored above this (the JSON keeps all).")] = 0.3,
    draw: Annotated[bool, typer.Option("--draw/--no-draw", help="Write drawn copies of images and videos.")] = True,
    flip: Flip = True,
    decode: DecodeOption = Decode.STANDARD,
    network: NetworkOption = Network.AUTO,
    precision: PrecisionOption = Precision.FP32,
    backend: BackendOption = Backend.AUTO,
):
    """Keypoints for images, folders and videos: drawn pictures and JSON.

    Examples:

      posecli predict photo.jpg -w model.safetensors --out out/

      posecli predict val2017/ -w model.pth --boxes detections.json --ann person_keypoints_val2017.json

      posecli predict clip.mp4 -w model.safetensors --detector yolox_m.onnx --no-flip
    """
    device_option(device)
    check_folder(out_dir)
    check_output(out_dir / "predictions.json", [weights, boxes, ann])
    settings = InferenceSettings(device=device, flip=flip, decode=decode, batch_size=batch_size, network=network,
                                 backend=backend, precision=precision)  # fmt: skip
    cfg = PredictConfig(inputs, weights, out_dir, boxes, ann, detector, settings, min_box_score, min_keypoint_score, draw)
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("predict", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        def warn(message: str) -> None:
            bar.console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False)

        summary = run_predict(cfg, progress, warn)  # its outputs are one unit: all of them, or the previous ones
    count = summary.images + summary.frames
    out.print(f"{summary.images} images, {summary.frames} video frames, {summary.people} people "
              f"in {summary.seconds:.1f} s ({count / max(summary.seconds, 1e-9):.1f} frames/s)")  # fmt: skip
    out.print(f"boxes: {summary.box_source}")
    if summary.whole_image:
        out.print(f"[yellow]the whole image served as the person box in {summary.whole_image} of {count} images/frames[/]")
    out.print(f"wrote {summary.predictions} and {len(summary.written) - 1} drawn or .jsonl files in {out_dir}")
    if summary.warnings:
        console.print(f"[yellow]{len(summary.warnings)} warning(s)[/]; the rest was processed")
