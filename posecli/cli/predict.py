"""``posecli predict``: keypoints for images, folders, globs and videos, drawn and as JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from posecli.choices import Backend, Decode, Network, Nms, Precision
from posecli.cli.common import (shown, BackendOption, BatchSize, DecodeOption, Device, Flip, MinBoxScore, NetworkOption, NmsOption,
                                NmsThr, PrecisionOption, Weights, console, device_option, out, user_errors)  # fmt: skip
from posecli.engine.inference import InferenceSettings
from posecli.engine.predict import PredictConfig
from posecli.fileio import check_folder, check_output
from posecli.engine.predict import predict as run_predict
from posecli.errors import UserError


class RateColumn(ProgressColumn):
    """Images plus video frames per second, averaged by rich over the last few seconds."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:.1f} frames/s" if task.speed else "- frames/s", style="progress.data.speed")


@user_errors
def predict(
    inputs: Annotated[list[str], typer.Argument(metavar="INPUT...", help="Images, folders (their images and videos), glob patterns, videos, camera indices (0) or devices (/dev/video0), stream URLs (rtsp://, http(s)://: whatever OpenCV's FFmpeg opens).")],
    weights: Weights,
    boxes: Annotated[Optional[Path], typer.Option(help="COCO detection results (image_id, bbox xywh, score) for the images.")] = None,
    ann: Annotated[Optional[Path], typer.Option(help="COCO annotations that name the image ids of --boxes (default: numeric file names, 000000000785.jpg -> 785).")] = None,
    detector: Annotated[str, typer.Option(help="Person boxes when there is no --boxes: hog (OpenCV's, offline), none (the whole image), or a YOLOX / RTMDet FILE.onnx in rtmlib's format (docs/pictures.md).")] = "hog",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for predictions.json, drawn images, drawn videos and their .jsonl.")] = Path("predictions"),
    batch_size: BatchSize = 32,
    device: Device = "auto",
    min_box_score: MinBoxScore = 0.0,
    min_keypoint_score: Annotated[float, typer.Option(help="Draw only keypoints scored above this (the JSON keeps all).")] = 0.3,
    draw: Annotated[bool, typer.Option("--draw/--no-draw", help="Write drawn copies of images and videos.")] = True,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Folders: their subfolders' images and videos too.")] = False,
    max_frames: Annotated[Optional[int], typer.Option(min=1, help="Videos and streams: stop after this many processed frames each.")] = None,
    every: Annotated[int, typer.Option(min=1, help="Videos and streams: process every Nth frame (the drawn video plays at 1/N the rate).")] = 1,
    track: Annotated[bool, typer.Option("--track/--no-track", help="Videos and streams: a track_id per person across frames, in the .jsonl and drawn.")] = False,
    track_by: Annotated[str, typer.Option(help="What --track matches with the previous frame: oks (keypoints) or iou (boxes).")] = "oks",
    det_every: Annotated[int, typer.Option(min=1, help="Videos and streams: the detector on every Nth frame; between, boxes from the last frame's keypoints (faster).")] = 1,
    output_format: Annotated[str, typer.Option("--format", help="posecli (predictions.json, per-frame .jsonl) or mmpose: also MMPose's inferencer JSON per image / video (keypoints, keypoint_scores, bbox, bbox_score).")] = "posecli",
    flip: Flip = True,
    decode: DecodeOption = Decode.STANDARD,
    nms: NmsOption = Nms.OKS,
    nms_thr: NmsThr = 0.9,
    network: NetworkOption = Network.AUTO,
    precision: PrecisionOption = Precision.FP32,
    backend: BackendOption = Backend.AUTO,
):
    """Keypoints for images, folders, videos, cameras and streams: drawn pictures and JSON.

    Examples:

      posecli predict photo.jpg -w model.safetensors --out out/

      posecli predict val2017/ -w model.pth --boxes detections.json --ann person_keypoints_val2017.json

      posecli predict clip.mp4 -w model.safetensors --detector yolox_m.onnx --track --det-every 5

      posecli predict 0 -w model.safetensors --track --max-frames 300      (camera 0; Ctrl-C stops and keeps what was done)

      posecli predict rtsp://camera.local/stream -w model.safetensors --every 2 --no-draw
    """
    if track_by not in ("oks", "iou"):
        raise UserError(f"--track-by {track_by!r}: use oks or iou")
    device_option(device)
    check_folder(out_dir)
    check_output(out_dir / "predictions.json", [weights, boxes, ann])
    settings = InferenceSettings(device=device, flip=flip, decode=decode, batch_size=batch_size, network=network,
                                 backend=backend, precision=precision)  # fmt: skip
    cfg = PredictConfig(inputs, weights, out_dir, boxes, ann, detector, settings, min_box_score, str(nms), nms_thr,
                        min_keypoint_score, draw, recursive, max_frames, every, track, track_by, det_every, output_format)  # fmt: skip
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), RateColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("predict", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total or None)  # 0: a live source, no end known

        def warn(message: str) -> None:
            bar.console.print(f"[yellow]warning:[/] {shown(message)}", highlight=False)

        summary = run_predict(cfg, progress, warn)  # its outputs are one unit: all of them, or the previous ones
    count = summary.images + summary.frames
    out.print(f"{summary.images} images, {summary.frames} video frames, {summary.people} people "
              f"in {summary.seconds:.1f} s ({count / max(summary.seconds, 1e-9):.1f} frames/s)")  # fmt: skip
    reused = count - summary.detector_runs
    out.print(f"boxes: {summary.box_source}" + (f"; {reused} frames from the previous frame's keypoints" if reused > 0 else ""))
    if summary.whole_image:
        out.print(f"[yellow]nobody found in {summary.whole_image} of {count} images/frames: the whole image served as the "
                  "box there, labelled 'whole image' (box_score null; the person's score is its keypoints' alone)[/]")  # fmt: skip
    if summary.interrupted:
        out.print("[yellow]stopped by Ctrl-C: everything done so far is written[/]")
    out.print(f"wrote {summary.predictions} and {len(summary.written) - 1} drawn or .jsonl files in {out_dir}")
    if summary.warnings:
        console.print(f"[yellow]{len(summary.warnings)} warning(s)[/]; the rest was processed")
