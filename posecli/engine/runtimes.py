"""ONNX graphs of posecli models, and the runtimes that run them in place of torch (ONNX Runtime, OpenVINO).

A graph takes what posecli's crops are and gives what the torch model gives:

    crops (N, H, W, 3) uint8 BGR  ->  [BGR->RGB, (x - mean) / std, HRNet, (flip test)]  ->  heatmaps (N, K, h, w) float32

so a backend replaces only crops -> heatmaps: cutting crops, decoding, rescoring, NMS and the
metric stay posecli's one path. The graph's metadata carries what posecli's safetensors carry
(``ModelInfo``) plus whether the flip test is inside (docs/deploy.md lists every key).
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from posecli import __version__
from posecli.choices import Backend, Precision
from posecli.errors import UserError, option
from posecli.layouts import LAYOUTS
from posecli.models.topdown import flip_back, normalise
from posecli.weights import ModelInfo

FORMAT_VERSION = 1  # of the metadata below; a reader refuses a newer one
DEFAULT_OPSET = 17  # ONNX Runtime, OpenVINO and TensorRT releases of the last years all read it
MIN_OPSET = 11  # nearest-neighbour Resize with scales, as HRNet's fuse layers upsample
MAX_OPSET = 20  # the newest torch 2.13's TorchScript-based exporter writes
INPUT, OUTPUT = "crops", "heatmaps"
RUNTIMES = (Backend.ONNXRUNTIME, Backend.OPENVINO)
EXTRAS = {Backend.ONNXRUNTIME: ("onnxruntime", "ONNX Runtime", "posecli[onnx]"),
          Backend.OPENVINO: ("openvino", "OpenVINO", "posecli[openvino]")}  # fmt: skip


class Graph(nn.Module):
    """The exported computation: uint8 BGR crops -> heatmaps, with the flip test when ``flip_indices`` is set.

    The same steps as ``TopDown.heatmaps``: the mirrored crops run in the same call as the
    originals, then ``flip_back`` (mirror, swap left/right, one-pixel shift) and the average.
    """

    def __init__(self, net: nn.Module, info: ModelInfo, flip_indices: tuple[int, ...] | None):
        super().__init__()
        self.net, self.info, self.flip_indices = net, info, flip_indices

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        x = normalise(crops, self.info.mean, self.info.std)
        if self.flip_indices is None:
            return self.net(x)
        both = self.net(torch.cat([x, x.flip(-1)]))
        n = crops.shape[0]
        return (both[:n] + flip_back(both[n:], self.flip_indices)) * 0.5


def to_onnx(net: nn.Module, info: ModelInfo, flip: bool = False, batch: int | None = None,
            opset: int = DEFAULT_OPSET) -> bytes:  # fmt: skip
    """``net`` (not changed) as a serialised ONNX graph; ``batch`` None = any batch size.

    torch's TorchScript-based exporter (``dynamo=False``): on torch 2.13 it exports HRNet in
    3-4 s with nothing else installed; the torch.export-based default needs onnxscript, takes
    13 s for the small reference model, writes opset 18 and converts it down. Both give the
    same heatmaps (5e-7).
    """
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UserError(f"opset ({option('opset')}) {opset}: choose {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    flip_indices = LAYOUTS[info.layout].flip_indices if flip else None
    graph = Graph(copy.deepcopy(net).float().cpu().eval(), info, flip_indices)
    w, h = info.input_size
    example = torch.zeros((batch or 2, h, w, 3), dtype=torch.uint8)
    buffer = io.BytesIO()
    dynamic = None if batch else {INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}
    with warnings.catch_warnings():
        # The exporter's own notices: that it is the TorchScript one, and that mean/std become constants.
        warnings.simplefilter("ignore", (DeprecationWarning, FutureWarning, torch.jit.TracerWarning))
        torch.onnx.export(graph, (example,), buffer, dynamo=False, input_names=[INPUT], output_names=[OUTPUT],
                          opset_version=opset, dynamic_axes=dynamic, do_constant_folding=True)  # fmt: skip
    return buffer.getvalue()


def graph_metadata(info: ModelInfo, flip: bool, batch: int | None, opset: int) -> dict[str, str]:
    """String metadata of an exported graph: ``ModelInfo``'s keys, and how to feed the graph."""
    w, h = info.input_size
    return info.to_metadata() | {
        "format_version": str(FORMAT_VERSION),
        "posecli_version": __version__,
        "flip_test": json.dumps(flip),
        "flip_indices": json.dumps(list(LAYOUTS[info.layout].flip_indices)),
        "batch": json.dumps(batch),
        "opset": str(opset),
        "input": f"{INPUT}: uint8 ({batch or 'N'}, {h}, {w}, 3) BGR, 0..255, as cut by posecli (no normalisation)",
        "output": f"{OUTPUT}: float32 ({batch or 'N'}, {LAYOUTS[info.layout].num_keypoints}, "
                  f"{info.heatmap_size[1]}, {info.heatmap_size[0]})" + (", flip test included" if flip else ""),
    }  # fmt: skip


@dataclass(frozen=True)
class GraphInfo:
    """What an exported graph's metadata says about it."""

    info: ModelInfo
    flip: bool  # the flip test is inside the graph
    batch: int | None  # the batch size the graph is fixed to, None = any


def read_metadata(meta: dict[str, str], where: str) -> GraphInfo:
    """Check a graph's metadata; UserError naming ``where`` when it is not a posecli graph or is damaged."""
    if meta.get("format") != "posecli" or "arch" not in meta:
        raise UserError(f"{where}: an ONNX model without posecli's metadata (format, arch, layout, ...); "
                        "posecli runs graphs made by `posecli export`")  # fmt: skip
    try:
        version = int(meta.get("format_version", "0"))
        if version > FORMAT_VERSION:
            raise ValueError(f"format_version {version} is newer than this posecli's {FORMAT_VERSION}; upgrade posecli")
        info = ModelInfo.from_metadata(meta)
        flip, batch = json.loads(meta.get("flip_test", "false")), json.loads(meta.get("batch", "null"))
        if not isinstance(flip, bool):
            raise ValueError(f"flip_test {meta['flip_test']!r} must be true or false")
        if batch is not None and not (type(batch) is int and batch > 0):
            raise ValueError(f"batch {meta['batch']!r} must be null (any) or a positive integer")
        if json.loads(meta.get("flip_indices", "null")) not in (None, list(LAYOUTS[info.layout].flip_indices)):
            raise ValueError(f"flip_indices differ from layout {info.layout!r}'s")
    except (ValueError, json.JSONDecodeError) as e:
        raise UserError(f"{where}: bad metadata: {e}; export it again with `posecli export`") from None
    return GraphInfo(info, flip, batch)


def cpu_bf16() -> str | None:
    """The unit that runs bfloat16 natively on this CPU (AMX, AVX512-BF16), or None (bf16 would be emulated)."""
    checks = (("AMX", "_is_amx_tile_supported", "amx_bf16"), ("AVX512-BF16", "_is_avx512_bf16_supported", "avx512_bf16"))
    flags = _cpu_flags()
    for name, torch_check, flag in checks:
        probe = getattr(torch.cpu, torch_check, None)  # private, but cross-platform; /proc/cpuinfo where it is gone
        if (probe() if probe else False) or flag in flags:
            return name
    return None


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def precision_problem(backend: Backend, precision: Precision, device: torch.device) -> str | None:
    """Why ``precision`` should not run on ``backend`` and ``device`` (unsupported, or emulated and slow), or None."""
    if precision == Precision.FP32:
        return None
    if backend == Backend.ONNXRUNTIME:
        return f"ONNX Runtime's CPU kernels compute in fp32; {precision} runs on the openvino or torch backend"
    if backend == Backend.OPENVINO:
        device = torch.device("cpu")  # posecli runs OpenVINO on the CPU
    if device.type == "cuda":
        if precision == Precision.BF16 and not torch.cuda.is_bf16_supported():
            return f"this GPU ({torch.cuda.get_device_name(device)}) has no native bf16; use fp16 or fp32"
        return None
    if device.type != "cpu":
        return None  # MPS and others: the device's own kernels decide
    if precision == Precision.FP16:
        return "fp16 runs natively on CUDA GPUs only; on a CPU it would be emulated (use bf16 where the CPU has it, or fp32)"
    if cpu_bf16() is None:
        return ("bf16 needs a CPU with AMX or AVX512-BF16 and this one has neither: it would be emulated, many times "
                "slower than fp32")
    return None


def check_precision(backend: Backend, precision: Precision, device: torch.device) -> None:
    problem = precision_problem(backend, precision, device)
    if problem:
        raise UserError(f"precision {precision} ({option('precision')}) on backend {backend} on {device}: {problem}")


def installed(backend: Backend) -> bool:
    return importlib.util.find_spec(EXTRAS[backend][0]) is not None


def installed_runtimes() -> list[Backend]:
    return [b for b in RUNTIMES if installed(b)]


def _runtime_module(backend: Backend):
    module, name, extra = EXTRAS[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"backend {backend} ({option('backend')}): {name} is not installed; pip install \"{extra}\"") from None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


class OnnxRuntimeRunner:
    """An ONNX Runtime session: crops (N, H, W, 3) uint8 -> the graph's first output as numpy."""

    def __init__(self, model: bytes | Path, device: torch.device, where: str):
        ort = _runtime_module(Backend.ONNXRUNTIME)
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # as many as torch uses, for a like-for-like comparison
        providers = ["CUDAExecutionProvider"] if device.type == "cuda" else ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                                providers=providers)  # fmt: skip
        except Exception as e:  # ONNX Runtime raises its own types for unreadable or invalid models
            raise UserError(f"{where}: ONNX Runtime cannot load it ({_first_line(e)})") from None
        self.input = self.session.get_inputs()[0].name

    def metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: crops})[0]


class OpenVinoRunner:
    """An OpenVINO CPU model compiled for one precision: crops (N, H, W, 3) uint8 -> the first output as numpy.

    The LATENCY hint: one synchronous request at a time uses every thread (THROUGHPUT splits
    them across parallel requests that posecli does not make; docs/deploy.md).
    """

    PRECISIONS = {Precision.FP32: "f32", Precision.BF16: "bf16", Precision.FP16: "f16"}

    def __init__(self, model: bytes | Path, precision: Precision, where: str):
        ov = _runtime_module(Backend.OPENVINO)
        core = ov.Core()
        try:
            graph = core.read_model(model if isinstance(model, bytes) else str(model))
            framework = graph.get_rt_info()["framework"] if graph.has_rt_info("framework") else {}
            self._metadata = {k: v.astype(str) for k, v in framework.items()}  # the ONNX file's metadata_props
            config = {"INFERENCE_PRECISION_HINT": self.PRECISIONS[precision], "PERFORMANCE_HINT": "LATENCY",
                      "INFERENCE_NUM_THREADS": torch.get_num_threads()}  # fmt: skip
            self.request = core.compile_model(graph, "CPU", config).create_infer_request()
        except Exception as e:  # OpenVINO raises RuntimeError and its own types
            raise UserError(f"{where}: OpenVINO cannot load it ({_first_line(e)})") from None

    def metadata(self) -> dict[str, str]:
        return self._metadata

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        return self.request.infer({0: crops})[0]  # a copy: the request reuses its output buffer


def make_runner(backend: Backend, model: bytes | Path, precision: Precision, device: torch.device, where: str):
    """A runtime's callable for ``model`` (serialised graph or .onnx path), after the precision check."""
    check_precision(backend, precision, device)
    if backend == Backend.ONNXRUNTIME:
        return OnnxRuntimeRunner(model, device, where)
    return OpenVinoRunner(model, precision, where)


def runtime_device(backend: Backend, asked: str | None) -> torch.device:
    """Where ``backend`` runs for the asked device (``asked``): ONNX Runtime on CUDA when its GPU build is there, else the CPU."""
    wants_gpu, module = asked not in (None, "auto", "cpu"), _runtime_module(backend)  # a UserError if not installed
    if backend == Backend.ONNXRUNTIME:
        has_cuda = "CUDAExecutionProvider" in module.get_available_providers()
        if wants_gpu and not has_cuda:
            raise UserError(f"device {asked} ({option('device')}): this ONNX Runtime has no CUDA provider (install "
                            "onnxruntime-gpu), or run on the cpu")  # fmt: skip
        return torch.device(asked if wants_gpu else "cuda" if has_cuda and torch.cuda.is_available() and asked != "cpu"
                            else "cpu")  # fmt: skip
    if wants_gpu:
        raise UserError(f"device {asked} ({option('device')}): posecli runs OpenVINO on the CPU; use the cpu, or another backend")
    return torch.device("cpu")


def resolve_backend(asked: Backend, graph: bool) -> Backend:
    """``auto`` -> torch for torch weights; for a graph, the first installed runtime. An explicit ask is checked."""
    if not graph:
        return Backend.TORCH if asked == Backend.AUTO else asked
    if asked == Backend.TORCH:
        raise UserError(f"an exported .onnx runs on the onnxruntime or openvino backend ({option('backend')}); torch needs the weights "
                        "file it was exported from")  # fmt: skip
    if asked == Backend.AUTO:
        found = installed_runtimes()
        if not found:
            raise UserError('running an .onnx needs ONNX Runtime or OpenVINO: pip install "posecli[onnx]" '
                            'or "posecli[openvino]"')  # fmt: skip
        return found[0]
    return asked


@dataclass
class GraphModel:
    """A runtime's graph where ``TopDown`` would be: (B, H, W, 3) uint8 crops -> (B, K, h, w) float32 heatmaps.

    ``flip_indices`` set = a flip test the graph does not hold, run here as ``TopDown`` runs
    it (the mirrored crops in the same call). ``batch``: the graph's fixed batch size (calls
    are padded to it); ``chunk``: crops per call otherwise, None = all.
    """

    net: Callable[[np.ndarray], np.ndarray]
    heatmap_shape: tuple[int, int, int]  # (K, h, w)
    flip_indices: tuple[int, ...] | None = None
    shift_heatmap: bool = True
    batch: int | None = None
    chunk: int | None = None
    compiled: None = None  # a graph is never torch.compile'd

    def forward(self, crops: np.ndarray) -> torch.Tensor:
        step = self.batch or self.chunk or max(len(crops), 1)
        parts = [np.zeros((0, *self.heatmap_shape), np.float32)]
        for start in range(0, len(crops), step):
            part = crops[start : start + step]
            if self.batch and len(part) < self.batch:
                part = np.concatenate([part, np.zeros((self.batch - len(part), *part.shape[1:]), part.dtype)])
            parts.append(self.net(np.ascontiguousarray(part))[: len(crops) - start])
        return torch.from_numpy(np.concatenate(parts))

    def heatmaps(self, crops_bgr: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 BGR crops -> (B, K, h, w) float32 heatmaps (flip-fused when enabled)."""
        x = crops_bgr.cpu().numpy()
        if self.flip_indices is None:
            return self.forward(x)
        both = self.forward(np.concatenate([x, x[:, :, ::-1]]))
        plain, mirrored = both[: len(x)], both[len(x) :]
        return (plain + flip_back(mirrored, self.flip_indices, self.shift_heatmap)) * 0.5
