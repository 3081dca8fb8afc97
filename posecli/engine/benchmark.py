"""Speed and memory of a pose model and of the whole pipeline, against this device's own peak.

What is counted. A crop costs ``macs`` multiply-adds per forward (convolutions
and linear layers only, see ``posecli.engine.flops``; HRNet-W32 at 256x192:
7.65 G, 7% more than the 7.1 "GFLOPs" of the HRNet paper, whose counter leaves
some layers out). One multiply-add = 2 FLOPs, and the flip test runs 2 forwards
per crop, so

    achieved GFLOP/s = 2 * macs * forwards_per_crop * crops/s / 1e9.

The peak is the median GFLOP/s (2 n^3 / time) of a large ``torch.mm`` of the
same dtype and device, sampled between the timed calls of the same run. A
network also spends time on work that is not counted (BatchNorm, ReLU,
additions, upsampling, memory traffic), so its share of that peak stays below
100% even when every convolution runs as fast as the matmul.

Settings compared in one run are interleaved call by call, so that a machine
whose speed drifts (shared cores, clocks) slows them all alike.
"""

from __future__ import annotations

import copy
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch import nn

from posecli import sample
from posecli.data.coco import read_coco, read_detections
from posecli.engine.flops import count_macs
from posecli.engine.inference import CompileError, default_chunk, Predictor, crop_boxes, decode_to_image
from posecli.errors import UserError
from posecli.layouts import LAYOUTS
from posecli.models.fuse import fuse_conv_bn
from posecli.models.hrnet import ARCHS, PoseHRNet, build_model
from posecli.models.onednn import onednn_network
from posecli.weights import ModelInfo, load_model

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SLOW_GFLOPS = 5.0  # a dtype whose matmul runs below this is emulated: report it, skip its model runs
SAME_OUTPUT = 1e-4  # relative heatmap difference from float32 summation order (random He-init w32: ~2e-5)
STAGES = ("decode_image", "crop_warp", "forward", "decode_heatmaps")


@dataclass(frozen=True)
class Setting:
    """How the network runs; all but ``dtype`` change only the float32 summation order."""

    dtype: str = "fp32"
    channels_last: bool = False
    fuse_bn: bool = False
    compile: bool = False
    flip: bool = False
    chunk: int | None = None  # crops per network call (None: the whole batch, with flip both views)
    onednn: bool = False  # oneDNN's fused convolutions (posecli.models.onednn; BN folded there); CPU float32 only

    @property
    def label(self) -> str:
        flags = {"channels-last": self.channels_last, "fuse-bn": self.fuse_bn, "onednn": self.onednn,
                 f"chunk{self.chunk}": self.chunk, "compile": self.compile, "flip": self.flip}  # fmt: skip
        return " ".join([self.dtype] + [name for name, on in flags.items() if on])


def compared_settings(setting: Setting) -> list[Setting]:
    """``setting``, its plain version (same dtype and flip), and each of its speed options alone."""
    plain = Setting(setting.dtype, flip=setting.flip)
    options = {k: getattr(setting, k) for k in ("channels_last", "fuse_bn", "onednn", "chunk", "compile") if getattr(setting, k)}
    alone = [Setting(setting.dtype, flip=setting.flip, **{k: v}) for k, v in options.items()]
    return list(dict.fromkeys([plain, *alone, setting]))


def requested_settings(dtypes: list[str], device: torch.device, *, channels_last: bool, fuse_bn: bool, onednn: bool,
                       chunk: int | None, compile: bool, flip: bool, compare: bool) -> list[Setting]:  # fmt: skip
    """The command line's options -> the settings to time, in order.

    oneDNN applies to float32 on CPU only. Compiling replaces it (inductor does its own fusion),
    so with both asked for, float32 is timed both ways. ``chunk`` None: the predictor's default
    for that setting; 0: the whole batch. ``compare`` adds each setting's plain version and
    each of its options alone.
    """
    settings = []
    for dtype in dtypes:
        fusable = onednn and dtype == "fp32" and device.type == "cpu"
        for compiled in [False, True] if compile and fusable else [compile]:
            fused = fusable and not compiled
            calls = default_chunk(device, fused) if chunk is None else chunk or None
            settings.append(Setting(dtype, channels_last, fuse_bn, compiled, flip, calls, fused))
    if compare:
        settings = [c for s in settings for c in compared_settings(s)]
    return list(dict.fromkeys(settings))


@dataclass
class MatmulPeak:
    dtype: str
    n: int  # (n, n) @ (n, n)
    gflops: float  # median over repeats
    repeats: int


@dataclass
class ConvPeak:
    shape: str
    gflops: float  # median over repeats
    repeats: int


@dataclass
class ModelRun:
    """One setting at one batch size: ``Predictor.heatmaps`` (normalise, forward(s), flip back) on random crops."""

    setting: str
    dtype: str
    batch_size: int
    crops_per_s: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50 / p90 / p99 of one batch
    first_call_s: float | None = None  # the first warm-up call (compiling happens before, in make_predictor)
    peak_memory_mb: float | None = None
    gflops: float | None = None
    peak_gflops: float | None = None  # median of matmul samples taken between this run's timed calls
    share_of_peak: float | None = None
    max_rel_diff: float | None = None  # max |heatmaps - plain fp32| / max |plain fp32|, smallest batch only
    repeats: int = 0
    skipped: str | None = None


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


@dataclass
class BenchmarkResult:
    machine: dict
    model: dict
    options: dict
    matmul_peaks: list[MatmulPeak]
    conv_peak: ConvPeak | None  # float32, for comparison: shares use the matmul peaks
    model_runs: list[ModelRun]
    pipeline: list[PipelineRun]
    notes: list[str]

    def to_json(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- inputs


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise UserError(f"--batch-sizes {text!r}: give positive integers separated by commas, e.g. 1,8,32")
    return sorted(set(sizes))


def parse_dtypes(text: str) -> list[str]:
    dtypes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [d for d in dtypes if d not in DTYPES]
    if not dtypes or unknown:
        raise UserError(f"--dtype {text!r}: unknown {', '.join(unknown) or 'empty'}; choose from {', '.join(DTYPES)}")
    return list(dict.fromkeys(dtypes))


def check_device(device: str) -> torch.device:
    if device not in ("cpu", "cuda"):
        raise UserError(f"--device {device!r}: choose cpu or cuda")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: this torch sees no CUDA device; use --device cpu")
    return torch.device(device)


def random_model(arch: str, layout: str, seed: int = 0) -> tuple[PoseHRNet, ModelInfo]:
    """A randomly initialised model whose activations have trained-like magnitudes.

    Speed does not depend on the weights' values, except through denormals:
    HRNet's own N(0, 0.001) init shrinks activations towards 1e-14 and below,
    where float arithmetic slows down. So: He init, then BatchNorm statistics
    of one random batch.
    """
    if arch not in ARCHS:
        raise UserError(f"--arch {arch!r}: unknown architecture; known: {', '.join(ARCHS)}")
    if layout not in LAYOUTS:
        raise UserError(f"--layout {layout!r}: unknown keypoint layout; known: {', '.join(LAYOUTS)}")
    torch.manual_seed(seed)
    net = build_model(arch, LAYOUTS[layout].num_keypoints)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    for bn in bns:
        bn.momentum = None  # cumulative average: one batch gives its exact statistics
    info = ModelInfo(arch, layout)
    with torch.no_grad():
        net.train()(torch.randn(2, 3, info.input_size[1], info.input_size[0]))
    for bn in bns:
        bn.momentum = 0.1
    return net.eval(), info


def load_benchmark_model(weights: str | Path | None, arch: str, layout: str) -> tuple[nn.Module, ModelInfo, str]:
    """--weights, or a random model of --arch/--layout -> (model, info, where the weights came from)."""
    if weights is not None:
        net, info = load_model(weights)
        return net, info, str(weights)
    net, info = random_model(arch, layout)
    return net, info, "random (speed does not depend on the weights)"


# ----------------------------------------------------------------------------- measuring


class _Cast(nn.Module):
    """Runs ``net`` in another dtype: casts its float32 input (TopDown casts the heatmaps back)."""

    def __init__(self, net: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net.to(dtype), dtype

    def forward(self, x):
        return self.net(x.to(self.dtype))


def make_predictor(net: nn.Module, info: ModelInfo, setting: Setting, device: torch.device) -> Predictor:
    """The shared ``Predictor`` with ``setting`` applied to a copy of the network (compiled here, if asked)."""
    if setting.onednn:
        net = onednn_network(net, info.input_size)
    else:
        net = fuse_conv_bn(net) if setting.fuse_bn else copy.deepcopy(net).eval()
    net = net.to(device)
    if setting.channels_last:
        net = net.to(memory_format=torch.channels_last)
    if setting.dtype != "fp32":
        net = _Cast(net, DTYPES[setting.dtype])
    predictor = Predictor.from_model(net, info, flip=setting.flip, device=str(device), channels_last=setting.channels_last,
                                     fuse_bn=False, use_onednn=False)  # built above, before any cast  # fmt: skip
    predictor = predictor.with_chunk(setting.chunk)
    if setting.compile:
        try:
            predictor = predictor.compile()
        except CompileError as e:
            raise UserError(f"{setting.label}: {e}; run without --compile") from None
    return predictor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class MatmulProbe:
    """One (n, n) @ (n, n) product of a dtype, ready to time: this device's attainable GFLOP/s.

    n grows from 256 to ``max_n`` unless one product already takes 50 ms, so that
    an emulated dtype costs a fraction of a second, not a minute.
    """

    def __init__(self, device: torch.device, dtype: str, max_n: int = 2048):
        self.device, self.dtype, self.n = device, dtype, 256
        while True:
            self.a, self.b = (torch.randn(self.n, self.n, device=device).to(DTYPES[dtype]) for _ in range(2))
            self.sample()
            if self.n >= max_n or self.sample() < 2 * self.n**3 / 0.05 / 1e9:
                break
            self.n *= 2

    def sample(self) -> float:
        """GFLOP/s of one product."""
        _sync(self.device)
        start = time.perf_counter()
        torch.mm(self.a, self.b)
        _sync(self.device)
        return 2 * self.n**3 / (time.perf_counter() - start) / 1e9

    def peak(self, seconds: float = 2.0) -> MatmulPeak:
        """Median GFLOP/s over about ``seconds`` of products (at least 3)."""
        return MatmulPeak(self.dtype, self.n, *median_rate(self.sample, 2 * self.n**3, seconds))


def median_rate(sample: Callable[[], float], flops: float, seconds: float) -> tuple[float, int]:
    """(median, count) of GFLOP/s ``sample()`` calls filling about ``seconds`` (3 to 50 calls)."""
    samples = [sample()]
    repeats = int(min(50, max(3, seconds * samples[0] * 1e9 / flops)))
    samples += [sample() for _ in range(repeats - 1)]
    return statistics.median(samples), repeats


def conv_peak(device: torch.device, seconds: float = 2.0) -> ConvPeak:
    """Median float32 GFLOP/s of one large 3x3 convolution, channels-last, as HRNet's low branches run it.

    On this AVX-512 machine it ran from 2% below to 8% above the matmul peak across runs; it is
    reported beside the shares, which keep the matmul peak as their reference (the issues' definition).
    """
    n, c, h, w = 32, 256, 32, 24
    x = torch.randn(n, c, h, w, device=device).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(c, c, 3, 3, device=device)
    flops = 2 * n * h * w * c * c * 9

    def sample() -> float:
        _sync(device)
        start = time.perf_counter()
        torch.nn.functional.conv2d(x, weight, padding=1)
        _sync(device)
        return flops / (time.perf_counter() - start) / 1e9

    sample()  # the first call picks and builds the kernel
    return ConvPeak(f"{c}->{c} 3x3, {n}x{h}x{w}, channels-last", *median_rate(sample, flops, seconds))


def peak_memory_mb(device: torch.device, fn: Callable[[], object]) -> float:
    """Peak memory of one call: CUDA max allocated, or this process's RSS high-water (Linux: reset first)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        pass  # elsewhere: the high-water mark since the process started
    fn()
    if status.exists():
        return next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmHWM:")) / 1024
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if os.uname().sysname == "Darwin" else rss / 1024


def relative_diff(a: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(a - reference).max() / max(np.abs(reference).max(), 1e-12))


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()  # Predictor.heatmaps returns numpy: the device is synchronised
    return time.perf_counter() - start


def skip_reason(setting: Setting, peak: MatmulPeak, macs: int, batch_size: int, budget_s: float) -> str | None:
    if setting.dtype != "fp32" and peak.gflops < SLOW_GFLOPS:
        return f"{setting.dtype} matmul runs at {peak.gflops:.1f} GFLOP/s here (no native support): model not run"
    seconds = 2 * macs * (2 if setting.flip else 1) * batch_size / (peak.gflops * 1e9)
    if seconds > budget_s:
        return f"one batch of {batch_size} would take ~{seconds:.0f} s at the measured {setting.dtype} peak"
    return None


def bench_batch(predictors: dict[Setting, Predictor], crops: np.ndarray, batch_size: int, *, macs: int,
                probes: dict[str, MatmulProbe], peaks: dict[str, MatmulPeak], warmup: int, repeats: int,
                budget_s: float, reference: dict[bool, np.ndarray] | None = None) -> list[ModelRun]:  # fmt: skip
    """Every setting at one batch size: warm-up, then timed calls interleaved across settings.

    Before each timed call, 3 matmul products of the setting's dtype are timed:
    the share of peak compares figures of the same seconds. A setting stops
    after ``repeats`` calls or once its calls have taken ``budget_s``.
    """
    batch = crops[:batch_size]
    runs = {s: ModelRun(s.label, s.dtype, batch_size) for s in predictors}
    times: dict[Setting, list[float]] = {}
    samples: dict[Setting, list[float]] = {}
    for s, predictor in predictors.items():
        runs[s].skipped = skip_reason(s, peaks[s.dtype], macs, batch_size, budget_s)
        if runs[s].skipped:
            continue
        start = time.perf_counter()
        heatmaps = predictor.heatmaps(batch)  # the first warm-up call; compiles, when compiling
        runs[s].first_call_s = time.perf_counter() - start
        if reference is not None:
            runs[s].max_rel_diff = relative_diff(heatmaps, reference[s.flip])
        for _ in range(warmup - 1):
            predictor.heatmaps(batch)
        times[s], samples[s] = [], []
    for _ in range(repeats):
        for s in times:
            if sum(times[s]) < budget_s:
                samples[s] += [probes[s.dtype].sample() for _ in range(3)]
                times[s].append(_timed(lambda: predictors[s].heatmaps(batch)))
    for s in times:
        run, flops = runs[s], 2 * macs * (2 if s.flip else 1) * batch_size
        samples[s] += [probes[s.dtype].sample() for _ in range(3)]
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


def bench_pipeline(predictor: Predictor, setting: Setting, samples: list[tuple[Path, np.ndarray]],
                   batch_size: int, repeats: int) -> PipelineRun:  # fmt: skip
    """Predict's path, stage by stage: read image, crop boxes, heatmaps (batched per image), decode."""
    n_crops = sum(len(xyxy) for _, xyxy in samples)
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
    return PipelineRun(setting.label, batch_size, len(samples), n_crops,
                       ms_per_crop={s: median[s] / n_crops * 1e3 for s in STAGES},
                       share={s: median[s] / sum(median.values()) for s in STAGES},
                       crops_per_s=n_crops / statistics.median(sum(p.values()) for p in passes))  # fmt: skip


# ----------------------------------------------------------------------------- the whole run


class CpuUse:
    """How much of the machine other processes and the hypervisor ('steal') took since creation (Linux)."""

    def __init__(self):
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float, float] | None:
        try:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        hz, own = os.sysconf("SC_CLK_TCK"), os.times()
        busy = sum(ticks[:3]) + sum(ticks[5:7])  # user nice system irq softirq
        return busy / hz, ticks[7] / hz if len(ticks) > 7 else 0.0, own.user + own.system, time.monotonic()

    def others(self) -> dict[str, float] | None:
        """Fractions of all cores' time: {'other_processes', 'steal'}."""
        end = self._read()
        if self.start is None or end is None:
            return None
        busy, steal, own, wall = (b - a for a, b in zip(self.start, end))
        capacity = wall * (os.cpu_count() or 1)
        return {"other_processes": max(0.0, busy - own) / capacity, "steal": steal / capacity}


def machine_info(device: torch.device) -> dict:
    cpu = ""
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else ""
    info = {"cpu": cpu or __import__("platform").processor(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "device": str(device)}  # fmt: skip
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def run_benchmark(net: nn.Module, info: ModelInfo, source: str, *, settings: list[Setting], batch_sizes: list[int],
                  device: torch.device, pipeline: bool = False, warmup: int = 2, repeats: int = 5,
                  budget_s: float = 120.0, progress: Callable[[str], None] = lambda _: None) -> BenchmarkResult:  # fmt: skip
    """Every setting at every batch size, then (``pipeline``) the sample images end to end with the fastest setting.

    ``budget_s`` caps one measurement: a slow setting gets fewer timed calls, or none.
    """
    cpu_use, macs = CpuUse(), count_macs(net, info.input_size)
    probes, peaks = {}, {}
    for dtype in dict.fromkeys(["fp32"] + [s.dtype for s in settings]):
        progress(f"matmul peak, {dtype}")
        probes[dtype] = MatmulProbe(device, dtype)
        peaks[dtype] = probes[dtype].peak()
    progress("convolution peak, fp32")
    conv = conv_peak(device)
    w, h = info.input_size
    crops = np.random.default_rng(0).integers(0, 256, (max(batch_sizes), h, w, 3), dtype=np.uint8)
    progress("reference heatmaps (plain fp32)")
    reference = {flip: make_predictor(net, info, Setting(flip=flip), device).heatmaps(crops[: batch_sizes[0]])
                 for flip in {s.flip for s in settings}}  # fmt: skip
    predictors, notes = {}, [f"weights: {source}"]
    for s in settings:
        progress(f"preparing {s.label}" + (" (compiling)" if s.compile else ""))
        start = time.perf_counter()
        predictors[s] = make_predictor(net, info, s, device)
        if s.compile:
            notes.append(f"{s.label}: compiled in {time.perf_counter() - start:.0f} s (once; not in the timings)")
    runs = []
    for b in batch_sizes:
        progress(f"batch {b}: {len(settings)} setting(s) x {repeats} calls")
        runs += bench_batch(predictors, crops, b, macs=macs, probes=probes, peaks=peaks, warmup=warmup, repeats=repeats,
                            budget_s=budget_s, reference=reference if b == batch_sizes[0] else None)  # fmt: skip
    notes += [f"{r.setting}, batch {r.batch_size}: skipped, {r.skipped}" for r in runs if r.skipped]
    best, exact = fastest(runs)
    pipelines = []
    if pipeline and best is not None:
        setting = next(s for s in settings if s.label == best.setting)
        samples = sample_images_and_boxes()
        pass_s = sum(len(x) for _, x in samples) / best.crops_per_s
        if pass_s > budget_s:
            notes.append(f"pipeline skipped: one pass would take ~{pass_s:.0f} s")
        else:
            progress(f"pipeline, {setting.label}")
            pipelines.append(bench_pipeline(predictors[setting], setting, samples, max(batch_sizes),
                                            max(1, min(repeats, int(budget_s / pass_s)))))  # fmt: skip
    if best is not None:
        match = f"same heatmaps as plain fp32 to {SAME_OUTPUT:g}" if exact else "no setting matched plain fp32"
        notes.append(f"fastest at batch {best.batch_size} ({match}): {best.setting}, {best.crops_per_s:.2f} crops/s, "
                     f"{best.share_of_peak:.0%} of the matmul peak")  # fmt: skip
    machine = machine_info(device) | {"cpu_taken_by_others": cpu_use.others()}
    taken = machine["cpu_taken_by_others"]
    if taken and sum(taken.values()) > 0.05:
        notes.append(f"during this run other processes took {taken['other_processes']:.0%} of the cores and the "
                     f"hypervisor {taken['steal']:.0%}: figures are low, shares less reliable")  # fmt: skip
    return BenchmarkResult(
        machine,
        {"arch": info.arch, "layout": info.layout, "weights": source, "input_size": list(info.input_size),
         "macs_per_crop": macs, "macs_counted": "Conv2d and Linear multiply-adds; BN, ReLU, add, upsample not counted"},
        {"batch_sizes": batch_sizes, "warmup": warmup, "repeats": repeats, "budget_s": budget_s,
         "settings": [asdict(s) | {"label": s.label} for s in settings]},
        list(peaks.values()), conv, runs, pipelines, notes,
    )  # fmt: skip


def fastest(runs: list[ModelRun]) -> tuple[ModelRun | None, bool]:
    """At the largest measured batch: the fastest run whose setting matches plain fp32 (True), else the fastest (False)."""
    measured = [r for r in runs if r.crops_per_s]
    if not measured:
        return None, False
    largest = [r for r in measured if r.batch_size == max(m.batch_size for m in measured)]
    exact = {r.setting for r in runs if r.max_rel_diff is not None and r.max_rel_diff <= SAME_OUTPUT}
    candidates = [r for r in largest if r.setting in exact]
    return max(candidates or largest, key=lambda r: r.crops_per_s), bool(candidates)
