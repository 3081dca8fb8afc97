"""Timed runs: the network alone on random crops (``bench_batch``), and images through the whole
inference path, stage by stage (``bench_pipeline``). Settings compared in one run are interleaved
call by call, so that a machine whose speed drifts (shared cores, clocks) slows them all alike."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from posecli import sample
from posecli.choices import Backend, Precision
from posecli.data.coco import read_coco, read_detections
from posecli.engine.bench.machine import peak_memory_mb
from posecli.engine.bench.peaks import SLOW_GFLOPS, MatmulPeak, MatmulProbe
from posecli.engine.inference import InferenceSettings, Predictor, crop_boxes, decode_to_image

STAGES = ("decode_image", "crop_warp", "forward", "decode_heatmaps")


@dataclass
class ModelRun:
    """One setting at one batch size: ``Predictor.heatmaps`` (normalise, forward(s), flip back) on random crops."""

    setting: str
    precision: str
    network: str  # torch's way of running the network; "onnx" for a runtime's exported graph
    batch_size: int
    crops_per_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50 / p90 / p99 of one batch
    first_call_s: float | None = None  # the first warm-up call (compiling happens before, when building)
    peak_memory_mb: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None  # median of matmul samples taken between this run's timed calls
    share_of_peak: float | None = None
    max_rel_diff: float | None = None  # max |heatmaps - plain fp32| / max |plain fp32|, smallest batch only
    repeats: int = 0
    skipped: str | None = None
    backend: str = "torch"


@dataclass
class PipelineRun:
    """Images and detector boxes in, keypoints out, through the shared inference path."""

    setting: str
    batch_size: int
    images: int
    crops: int
    ms_per_crop: dict[str, float]  # per stage, see STAGES
    share: dict[str, float]
    crops_per_s: float


def relative_diff(a: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(a - reference).max() / max(np.abs(reference).max(), 1e-12))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()  # Predictor.heatmaps returns numpy: the device is synchronised
    return time.perf_counter() - start


def skip_reason(setting: InferenceSettings, peak: MatmulPeak, macs: int, batch_size: int, budget_s: float) -> str | None:
    if setting.precision != Precision.FP32 and peak.gflops < SLOW_GFLOPS:
        return f"{setting.precision} matmul runs at {peak.gflops:.1f} GFLOP/s here (no native support): model not run"
    seconds = 2 * macs * (2 if setting.flip else 1) * batch_size / (peak.gflops * 1e9)
    if seconds > budget_s:
        return f"one batch of {batch_size} would take ~{seconds:.0f} s at the measured {setting.precision} peak"
    return None


def bench_batch(predictors: dict[InferenceSettings, Predictor], crops: np.ndarray, batch_size: int, *, macs: int,
                probes: dict[Precision, MatmulProbe], peaks: dict[Precision, MatmulPeak], warmup: int, repeats: int,
                budget_s: float, reference: dict[bool, np.ndarray] | None = None) -> list[ModelRun]:  # fmt: skip
    """Every setting at one batch size: warm-up, then timed calls interleaved across settings.

    Before each timed call, 3 matmul products of the setting's precision are timed: the
    share of peak compares figures of the same seconds. A setting stops after ``repeats``
    calls or once its calls have taken ``budget_s``.
    """
    batch = crops[:batch_size]
    runs = {s: ModelRun(s.label, str(s.precision), str(p.settings.network) if p.settings.backend == Backend.TORCH else "onnx",
                        batch_size, backend=str(p.settings.backend)) for s, p in predictors.items()}  # fmt: skip
    times: dict[InferenceSettings, list[float]] = {}
    samples: dict[InferenceSettings, list[float]] = {}
    for s, predictor in predictors.items():
        runs[s].skipped = skip_reason(s, peaks[s.precision], macs, batch_size, budget_s)
        if runs[s].skipped:
            continue
        start = time.perf_counter()
        heatmaps = predictor.heatmaps(batch)
        runs[s].first_call_s = time.perf_counter() - start
        if reference is not None:
            runs[s].max_rel_diff = relative_diff(heatmaps, reference[s.flip])
        for _ in range(warmup - 1):
            predictor.heatmaps(batch)
        times[s], samples[s] = [], []
    for _ in range(repeats):
        for s in times:
            if sum(times[s]) < budget_s:
                samples[s] += [probes[s.precision].sample() for _ in range(3)]
                times[s].append(_timed(lambda: predictors[s].heatmaps(batch)))
    for s in times:
        run, flops = runs[s], 2 * macs * (2 if s.flip else 1) * batch_size
        samples[s] += [probes[s.precision].sample() for _ in range(3)]
        median = statistics.median(times[s])
        p = np.percentile(np.asarray(times[s]) * 1e3, [50, 90, 99])
        run.latency_ms = {"p50": float(p[0]), "p90": float(p[1]), "p99": float(p[2])}
        run.repeats, run.crops_per_s, run.gflops = len(times[s]), batch_size / median, flops / median / 1e9
        run.peak_gflops = statistics.median(samples[s])
        run.share_of_peak = run.gflops / run.peak_gflops
        run.peak_memory_mb = peak_memory_mb(predictors[s].device, lambda: predictors[s].heatmaps(batch))
    return list(runs.values())


def sample_images_and_boxes() -> list[tuple[Path, np.ndarray]]:
    """The bundled COCO val images with their detector boxes: [(image path, (N, 4) float32 xyxy)]."""
    coco = read_coco(sample.COCO_ANN)
    boxes = read_detections(sample.COCO_DET, coco)
    return [(sample.COCO_IMAGES / im["file_name"], boxes.xyxy[boxes.image_ids == image_id])
            for image_id, im in coco.images.items()]  # fmt: skip


def bench_pipeline(predictor: Predictor, samples: list[tuple[Path, np.ndarray]], repeats: int) -> PipelineRun:
    """Predict's path, stage by stage: read image, crop boxes, heatmaps (batched per image), decode."""
    n_crops, batch_size = sum(len(xyxy) for _, xyxy in samples), predictor.settings.batch_size
    passes = []
    for _ in range(repeats):
        spent = dict.fromkeys(STAGES, 0.0)
        for path, xyxy in samples:
            t0 = time.perf_counter()
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            t1 = time.perf_counter()
            crops = crop_boxes(image, xyxy, predictor.codec.input_size)
            t2 = time.perf_counter()
            heatmaps = np.concatenate([predictor.heatmaps(crops.images[i : i + batch_size])
                                       for i in range(0, len(xyxy), batch_size)])  # fmt: skip
            t3 = time.perf_counter()
            decode_to_image(heatmaps, predictor.codec, crops.centers, crops.scales)
            t4 = time.perf_counter()
            for stage, seconds in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                spent[stage] += seconds
        passes.append(spent)
    median = {s: statistics.median(p[s] for p in passes) for s in STAGES}
    return PipelineRun(predictor.settings.label, batch_size, len(samples), n_crops,
                       ms_per_crop={s: median[s] / n_crops * 1e3 for s in STAGES},
                       share={s: median[s] / sum(median.values()) for s in STAGES},
                       crops_per_s=n_crops / statistics.median(sum(p.values()) for p in passes))  # fmt: skip
