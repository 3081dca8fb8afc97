"""The training benchmark: how fast a preset trains on this device, and what that makes of its epochs.

    stages    one sample through the pipeline in this process, stage by stage (decode, augment, warp, targets)
    loader    the run's DataLoader (persistent workers, as ``train`` makes it): samples/s for each worker count
    step      ``train.train_step`` itself (forward under autocast, weighted MSE, backward, fused Adam) on real
              batches: samples/s per precision at the preset's batch size
    estimate  the preset's epochs x its training instances at the slower of step and loader, on one device,
              and on as many as MMPose's recipe uses, assuming linear scaling (an assumption, not a measurement)

Data: the bundled sample of the preset's sources (real JPEGs and annotations, the preset's
augmentation and input size), repeated so that a pass is long enough to time; every copy is its
own item, with its own draws. Weights: a random model with trained-like activations
(``bench.run.random_model``); speed does not depend on the values, except through denormals.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Callable

import cv2
import numpy as np
import torch

from posecli.augment import affine_crop
from posecli.choices import Backend, Precision
from posecli.data.dataset import Instances, TrainDataset, build_train_dataset, load_instances, read_image
from posecli.engine import runtimes
from posecli.engine.bench.machine import CpuUse, machine_info, peak_memory_mb
from posecli.engine.bench.run import random_model
from posecli.engine.shards import RunningStats, make_loader
from posecli.engine.train import Dist, make_adam, train_step
from posecli.errors import UserError
from posecli.layouts import get_layout
from posecli.presets import Preset
from posecli.weights import ModelInfo

STAGES = ("decode", "augment", "warp", "targets")
# Training instances of the presets' full sources, for the estimate when no data root is given to count them:
# COCO train2017's persons with keypoints (149,813, as MMPose's and HRNet's logs load them) and AI Challenger's
# train persons (about 378,000, the figure). Counted from the files when they are at hand.
KNOWN_INSTANCES = {"coco": 149_813, "aic": 378_000}
REFERENCE_DEVICES = 8  # MMPose's recipes: 8 GPUs x batch 64 (td-hm_hrnet-w32_8xb64-210e)


@dataclass
class LoaderRun:
    workers: int  # 0: in the main process
    batch_size: int
    samples: int
    samples_per_s: float  # a second pass over the same batches: workers already started, as in every epoch but the first
    start_s: float  # the first pass's first batch: workers starting (once per run, with persistent workers)


@dataclass
class StepRun:
    setting: str  # e.g. "bf16 channels-last"
    precision: str
    channels_last: bool
    compiled: bool
    batch_size: int
    samples_per_s: float | None = None
    step_ms: dict[str, float] = field(default_factory=dict)  # p50 / p90
    first_step_s: float | None = None  # includes compiling, for a compiled setting
    peak_memory_mb: float | None = None
    losses: list[float] = field(default_factory=list)  # every step's, warm-up included: finite, and falling
    steps: int = 0
    skipped: str | None = None


@dataclass
class Estimate:
    setting: str
    samples_per_s: float  # per device: the slower of the step and the loader
    bound: str  # "step" or "loader (N workers)"
    hours_one_device: float
    devices: int
    hours: float  # on ``devices`` devices, assuming each runs at the per-device rate


@dataclass
class TrainBenchmark:
    machine: dict
    preset: dict  # name, arch, input size, batch size, epochs, workers
    instances: int
    instances_source: str
    stages_ms: dict[str, float]  # per sample, one process, one OpenCV thread
    loader: list[LoaderRun]
    steps: list[StepRun]
    estimates: list[Estimate]
    assumption: str
    notes: list[str]

    def to_json(self) -> dict:
        return asdict(self)


def repeated(instances: Instances, copies: int) -> Instances:
    """The same persons ``copies`` times over (the images are shared, not copied)."""
    per_person = ("image_index", "xyxy", "keypoints", "visible", "ann_ids", "source", "remapped")
    return dataclasses.replace(instances, **{k: np.concatenate([getattr(instances, k)] * copies) for k in per_person})


def stage_times(ds: TrainDataset, items: int) -> dict[str, float]:
    """Milliseconds per sample of each stage, in the dataset's own order, in this process."""
    total = dict.fromkeys(STAGES, 0.0)
    ds.set_epoch(0)
    for i in range(items):
        t0 = time.perf_counter()
        image = read_image(ds.instances.image_path(i))
        t1 = time.perf_counter()
        s = ds.augmented(i, image, ds.draws(i))
        t2 = time.perf_counter()
        s = affine_crop(s, ds.codec.input_size)
        t3 = time.perf_counter()
        ds.targets(s)
        t4 = time.perf_counter()
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            total[stage] += dt
    return {stage: t / items * 1e3 for stage, t in total.items()}


def loader_rate(ds: TrainDataset, workers: int, batch_size: int, device: torch.device) -> LoaderRun:
    """Two passes of the run's own loader over 4 x workers + 4 batches; the second is timed."""
    chunks, loader = make_loader(ds, workers, device)
    n = (4 * workers + 4) * batch_size
    order = np.random.default_rng(workers).permutation(len(ds))[:n].tolist()
    chunks.chunks = [[(0, i) for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    start_s = time.perf_counter() - start
    for _ in it:
        pass
    start = time.perf_counter()
    samples = sum(len(batch["image"]) for batch in loader)
    rate = samples / (time.perf_counter() - start)
    del it, loader  # persistent workers end with their loader
    return LoaderRun(workers, batch_size, samples, rate, start_s)


def step_problem(precision: Precision, device: torch.device) -> str | None:
    """Why a precision is not timed here (as inference refuses it: emulated or unsupported), or None."""
    if precision == Precision.FP16 and device.type != "cuda":
        return "fp16 training needs CUDA (float16 with a GradScaler)"
    return runtimes.precision_problem(Backend.TORCH, precision, device)


def stepper(net: torch.nn.Module, info: ModelInfo, device: torch.device, precision: Precision, channels_last: bool,
             compiled: bool) -> SimpleNamespace:  # fmt: skip
    """What ``train.train_step`` reads of a run, for one process and one micro-batch: the step timed is the step trained."""
    model = net.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return SimpleNamespace(
        model=model, net=torch.compile(model) if compiled else model, info=info, d=Dist(0, 1, device),
        optimizer=make_adam(model.parameters(), 5e-4), stats=RunningStats(model, 1, 1),
        scaler=torch.amp.GradScaler("cuda") if precision == Precision.FP16 else None,
        opts=SimpleNamespace(channels_last=channels_last, precision=precision),
        preset=SimpleNamespace(train=SimpleNamespace(use_target_weight=True)),
    )  # fmt: skip


def pinned(batch: dict, device: torch.device) -> dict:
    return {k: v.pin_memory() for k, v in batch.items()} if device.type == "cuda" else batch


def time_steps(runs: list[tuple[StepRun, SimpleNamespace]], batches: list[dict], warmup: int, repeats: int,
               budget_s: float) -> None:
    """Warm-up steps for each setting, then timed steps interleaved across settings (a machine whose speed
    drifts slows them all alike), until ``repeats`` each or a setting's budget. ``train_step`` ends with
    ``.item()``: each step is synchronised."""
    times: dict[int, list[float]] = {}
    for k, (run, r) in enumerate(runs):
        start = time.perf_counter()
        run.losses.append(train_step(r, [batches[0]], 5e-4))
        run.first_step_s = time.perf_counter() - start
        for i in range(1, warmup):
            run.losses.append(train_step(r, [batches[i % len(batches)]], 5e-4))
        times[k] = []
    for i in range(repeats):
        for k, (run, r) in enumerate(runs):
            if sum(times[k]) < budget_s:
                t0 = time.perf_counter()
                run.losses.append(train_step(r, [batches[(warmup + i) % len(batches)]], 5e-4))
                times[k].append(time.perf_counter() - t0)
    for k, (run, r) in enumerate(runs):
        p = np.percentile(np.asarray(times[k]) * 1e3, [50, 90])
        run.step_ms = {"p50": float(p[0]), "p90": float(p[1])}
        run.steps, run.samples_per_s = len(times[k]), run.batch_size / statistics.median(times[k])
        run.peak_memory_mb = peak_memory_mb(r.d.device, lambda: train_step(r, [batches[0]], 5e-4))


def step_settings(precisions: list[Precision], compare: bool) -> list[tuple[Precision, bool, bool]]:
    """(precision, channels-last, compiled): channels-last eager per precision (training's default); with
    ``compare`` also NCHW and compiled for fp32."""
    settings = [(p, True, False) for p in precisions]
    if compare:
        settings += [(Precision.FP32, False, False), (Precision.FP32, True, True)]
    return list(dict.fromkeys(settings))


def count_instances(preset: Preset, data_root) -> tuple[int, str]:
    """The preset's training instances: counted from ``data_root``, or the full sources' known sizes."""
    if data_root is not None:
        n = len(load_instances(preset.data.train, data_root, get_layout(preset.model.layout)))
        return n, f"counted from {data_root}"
    try:
        n = sum(KNOWN_INSTANCES[src.layout] for src in preset.data.train)
    except KeyError as e:
        raise UserError(f"no known size for a {e.args[0]!r} source: give the data root to count the instances") from None
    parts = " + ".join(f"{src.name} {KNOWN_INSTANCES[src.layout]:,}" for src in preset.data.train)
    return n, f"the full sources' sizes ({parts}); give the data root to count them"


def run_train_benchmark(preset: Preset, device: torch.device, *, workers: list[int], precisions: list[Precision],
                        batch_sizes: list[int], compare: bool = False, warmup: int = 2, repeats: int = 5,
                        budget_s: float = 120.0, data_root=None, copies: int = 20,
                        progress: Callable[[str], None] = lambda _: None) -> TrainBenchmark:  # fmt: skip
    """Stages, the loader for each worker count, the step for each setting and batch size, and the estimate."""
    cpu_use, notes = CpuUse(), []
    instances, source = count_instances(preset, data_root)
    ds = build_train_dataset(preset, None, preset.train.seed, sample=True)
    persons = len(ds)
    ds.instances = repeated(ds.instances, max(copies, -(-max(batch_sizes) * 2 // persons)))
    notes.append(f"data: the bundled sample's {persons} persons of {len(ds.instances.image_paths)} images, "
                 f"x{len(ds) // persons} (each copy its own draws)")  # fmt: skip
    progress("pipeline stages, this process")
    cv2.setNumThreads(1)  # as each loader worker runs (dataset.fork_safe_opencv)
    stage_times(ds, min(len(ds), 16))  # warm-up: file cache, allocator
    stages = stage_times(ds, min(len(ds), 120))
    loaders = []
    for w in workers:
        progress(f"loader, {w} worker(s), batch {batch_sizes[0]}")
        loaders.append(loader_rate(ds, w, batch_sizes[0], device))

    layout = get_layout(preset.model.layout)
    net, _ = random_model(preset.model.arch, layout.name)
    info = ModelInfo(preset.model.arch, layout.name, tuple(preset.model.input_size), tuple(preset.model.heatmap_size))
    steps = []
    for b in batch_sizes:
        items = [ds[i % len(ds)] for i in range(2 * b)]
        batches = [pinned({k: torch.stack([it[k] for it in items[s : s + b]]) for k in ("image", "heatmaps", "weights")}, device)
                   for s in (0, b)]  # fmt: skip
        runs = []
        for precision, channels_last, compiled in step_settings(precisions, compare):
            label = " ".join([str(precision), "channels-last" if channels_last else "NCHW"] + ["compiled"] * compiled)
            run = StepRun(label, str(precision), channels_last, compiled, b)
            steps.append(run)
            run.skipped = step_problem(precision, device)
            if not run.skipped:
                runs.append((run, stepper(copy.deepcopy(net), info, device, precision, channels_last, compiled)))
        progress(f"step, batch {b}: " + ", ".join(run.setting for run, _ in runs) + (" (compiling first)" if compare else ""))
        try:
            time_steps(runs, batches, warmup, repeats, budget_s)
        except torch.OutOfMemoryError:
            for run, _ in runs:
                run.skipped, run.samples_per_s = f"out of memory at batch {b}", None
        del runs
    notes += [f"step {s.setting}, batch {s.batch_size}: not run, {s.skipped}" for s in steps if s.skipped]
    estimates, assumption = estimate(preset, instances, steps, loaders)
    machine = machine_info(device) | {"cpu_taken_by_others": cpu_use.others()}
    if sum(machine["cpu_taken_by_others"].values()) > 0.05:
        taken = machine["cpu_taken_by_others"]
        notes.append(f"other processes took {taken['other_processes']:.0%} of the cores and the hypervisor "
                     f"{taken['steal']:.0%} during this run: figures are low")  # fmt: skip
    described = {"name": preset.name, "arch": preset.model.arch, "input_size": list(preset.model.input_size),
                 "batch_size": preset.train.batch_size, "epochs": preset.train.epochs, "workers": preset.train.workers}  # fmt: skip
    return TrainBenchmark(machine, described, instances, source, stages, loaders, steps, estimates, assumption, notes)


def estimate(preset: Preset, instances: int, steps: list[StepRun], loaders: list[LoaderRun]) -> tuple[list[Estimate], str]:
    """The preset's wall time for each measured step setting at the preset's batch size (or the first measured)."""
    measured = [s for s in steps if s.samples_per_s]
    if not measured:
        return [], "nothing measured"
    batch = preset.train.batch_size if any(s.batch_size == preset.train.batch_size for s in measured) else measured[0].batch_size
    parallel = [run for run in loaders if run.workers > 0]  # workers load while the step runs
    best = max(parallel, key=lambda run: run.samples_per_s) if parallel else None
    serial = next((run for run in loaders if run.workers == 0), None) if best is None else None
    out = []
    for s in (s for s in measured if s.batch_size == batch):
        rate, bound = s.samples_per_s, "step"
        if best is not None and best.samples_per_s < rate:
            rate, bound = best.samples_per_s, f"loader ({best.workers} workers)"
        elif serial is not None:  # no workers: loading and the step take turns
            rate, bound = 1 / (1 / rate + 1 / serial.samples_per_s), "step + loading in turn (0 workers)"
        hours = preset.train.epochs * instances / rate / 3600
        out.append(Estimate(s.setting, rate, bound, hours, REFERENCE_DEVICES, hours / REFERENCE_DEVICES))
    workers = f"{best.workers} loader workers per device, as measured here" if best else "no loader workers"
    assumption = (f"{preset.train.epochs} epochs x {instances:,} instances at batch {batch} per device; {REFERENCE_DEVICES} "
                  f"devices each run at the rate measured here on one ({workers}), i.e. linear scaling; DDP's "
                  "all-reduce, validation and checkpoints are not counted")  # fmt: skip
    return out, assumption


def default_workers() -> list[int]:
    """1, 2, 4, ... up to this machine's cores (at most 16): what a loader can use beside the training process."""
    cores = min(os.cpu_count() or 1, 16)
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    return counts + ([cores] if counts[-1] != cores else [])
