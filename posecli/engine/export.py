"""``posecli export``: a weights file -> one ONNX graph (uint8 crops in, heatmaps out), checked before it is written.

The graph is ``runtimes.Graph``: normalisation inside, and with ``flip`` MMPose's flip test
too, so a deployed model gives posecli's heatmaps in one call. Before anything is written the
graph runs on the bundled sample's crops in ONNX Runtime (else OpenVINO, fp32) beside the
torch model; a difference beyond ``TOLERANCE`` is an error and leaves no file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from posecli import sample
from posecli.choices import Backend
from posecli.data.coco import gt_boxes, read_coco
from posecli.engine import runtimes
from posecli.engine.inference import InferenceSettings, Predictor, crop_boxes
from posecli.errors import UserError, option
from posecli.fileio import check_output, write_bytes
from posecli.weights import ModelInfo, load_model

TOLERANCE = 1e-4  # largest heatmap difference to torch (heatmaps peak near 1; float32 summation order gives ~1e-7)


@dataclass
class ExportResult:
    path: Path
    info: ModelInfo
    flip: bool
    batch: int | None  # None = any batch size
    opset: int
    checked_on: str  # the runtime the check ran on
    crops: int  # sample crops compared
    max_diff: float  # largest |graph - torch| heatmap difference, relative where heatmaps exceed 1
    size_bytes: int
    seconds: float


def sample_crops(input_size: tuple[int, int]) -> np.ndarray:
    """(N, h, w, 3) uint8 crops of the annotated people in the bundled COCO sample (12 crops)."""
    coco = read_coco(sample.COCO_ANN)
    boxes = gt_boxes(coco)
    crops = []
    for image_id in dict.fromkeys(boxes.image_ids.tolist()):
        image = cv2.imread(str(sample.COCO_IMAGES / coco.images[image_id]["file_name"]), cv2.IMREAD_COLOR)
        crops.append(crop_boxes(image, boxes.xyxy[boxes.image_ids == image_id], input_size).images)
    return np.concatenate(crops)


def with_metadata(graph: bytes, metadata: dict[str, str]) -> bytes:
    """The serialised graph with ``metadata`` as its ONNX metadata_props, checked by ``onnx.checker``."""
    try:
        import onnx
    except ImportError:
        raise UserError('posecli export writes ONNX metadata with the onnx package: pip install "posecli[onnx]"') from None
    model = onnx.load_from_string(graph)
    onnx.helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def heatmap_difference(a: np.ndarray, reference: np.ndarray) -> float:
    """max |a - reference|, divided by max |reference| where that exceeds 1 (trained heatmaps peak below 1)."""
    return float(np.abs(a - reference).max() / max(1.0, float(np.abs(reference).max())))


def export_onnx(weights: str | Path, out: str | Path, *, flip: bool = False, batch: int | None = None,
                opset: int = runtimes.DEFAULT_OPSET, progress: Callable[[str], None] = lambda _: None) -> ExportResult:  # fmt: skip
    """Export ``weights`` to ``out`` (.onnx), after checking the graph against the torch model."""
    start, out = time.perf_counter(), Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"{out}: name the output .onnx (posecli tells a graph from weights by the name)")
    if batch is not None and batch < 1:
        raise UserError(f"batch ({option('batch')}) {batch}: must be a positive integer (or leave it out for any batch size)")
    check_output(out, [weights])
    checker = next(iter(runtimes.installed_runtimes()), None)
    if checker is None:
        raise UserError('posecli export checks the graph on ONNX Runtime or OpenVINO: pip install "posecli[onnx]"')
    net, info = load_model(weights)
    progress(f"exporting {info.arch} ({info.layout}), flip test {'inside' if flip else 'not inside'}, opset {opset}")
    graph = with_metadata(runtimes.to_onnx(net, info, flip, batch, opset), runtimes.graph_metadata(info, flip, batch, opset))
    crops = sample_crops(info.input_size)
    progress(f"checking on {len(crops)} sample crops: torch vs {checker}")
    settings = InferenceSettings(device="cpu", flip=flip, batch_size=len(crops))
    reference = Predictor.from_model(net, info, settings.replace(network="plain")).heatmaps(crops)
    exported = Predictor.from_graph(graph, settings.replace(backend=checker), where=str(out))
    if exported.info != info or runtimes.read_metadata(exported.model.net.metadata(), str(out)).flip != flip:
        raise UserError(f"{out}: the graph's metadata does not read back as written; nothing written")
    diff = heatmap_difference(exported.heatmaps(crops), reference)
    if not diff <= TOLERANCE:  # also NaN
        raise UserError(f"the exported graph's heatmaps differ from torch's by {diff:.1e} (> {TOLERANCE:g}) on the "
                        f"sample crops; {out} not written")  # fmt: skip
    write_bytes(out, graph)
    return ExportResult(out, info, flip, batch, opset, str(Backend(checker)), len(crops), diff, len(graph),
                        time.perf_counter() - start)  # fmt: skip
