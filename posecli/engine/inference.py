"""Boxes in, keypoints out: the one inference path that eval, predict and benchmark share.

image (H, W, 3) uint8 BGR + boxes (N, 4) xyxy
  -> crops (N, 256, 192, 3) uint8, centers/scales (N, 2)     [crop_boxes]
  -> heatmaps (N, K, 64, 48) float32                           [TopDown.heatmaps]
  -> keypoints (N, K, 2) image px, scores (N, K)               [decode_to_image]
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from posecli.choices import Backend, Decode, Network, Precision
from posecli.codec import HeatmapCodec
from posecli.engine import runtimes
from posecli.devices import parse_device
from posecli.errors import UserError, option
from posecli.geometry import box_center_scale, fix_aspect_ratio, input_to_image, warp_image, warp_matrix
from posecli.layouts import LAYOUTS, Layout
from posecli.models import onednn
from posecli.models.fuse import fuse_conv_bn
from posecli.models.hrnet import PoseHRNet
from posecli.models.topdown import TopDown, normalise
from posecli.weights import ModelInfo, load_model


CPU_CHUNK = 8  # crops per eager network call on CPU: small calls keep activations in cache (docs/benchmarks.md)
GPU_COMPILE_CHUNK = 64  # a compiled network needs one fixed call size; on GPU, batch 32 with flip
TORCH_DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


class CompileError(UserError):
    """torch.compile could not build the network here (e.g. no C++ compiler for inductor's CPU kernels)."""


@dataclass(frozen=True)
class InferenceSettings:
    """How crops become keypoints at test time: one value, built once, used by eval, predict,
    benchmark and validation alike. Only ``flip``, ``shift_heatmap``, ``decode`` and ``precision``
    change the numbers."""

    device: str = "auto"  # auto (CUDA if there is one) | cpu | cuda | cuda:N
    flip: bool = True  # flip test: average with the mirrored crop's heatmaps, as MMPose's test_cfg
    shift_heatmap: bool = True  # flip test: the flipped-back heatmaps shifted one pixel right, as MMPose
    decode: Decode = Decode.STANDARD
    batch_size: int = 32  # crops per Predictor call; eval regroups crops across images to fill it
    network: Network = Network.AUTO
    precision: Precision = Precision.FP32
    chunk: int | None = None  # crops per network call: None the network's default here, 0 the whole batch
    backend: Backend = Backend.AUTO  # what runs crops -> heatmaps: torch, or an ONNX runtime (engine/runtimes.py)

    def __post_init__(self):
        for name, kind in (("decode", Decode), ("network", Network), ("precision", Precision), ("backend", Backend)):
            object.__setattr__(self, name, kind.parse(getattr(self, name), name))
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch size {self.batch_size!r}: must be a positive integer")
        if self.chunk is not None and (not isinstance(self.chunk, int) or self.chunk < 0):
            raise ValueError(f"chunk {self.chunk!r}: must be 0 (the whole batch) or a positive integer")

    def replace(self, **changes) -> "InferenceSettings":
        return dataclasses.replace(self, **changes)

    @property
    def label(self) -> str:
        calls = [] if self.chunk is None else [f"chunk{self.chunk or 'all'}"]
        torch_backend = self.backend in (Backend.AUTO, Backend.TORCH)
        runs = [str(self.precision), str(self.network)] if torch_backend else [str(self.backend), str(self.precision)]
        return " ".join([*runs, *calls] + ["flip"] * self.flip)


def default_chunk(device: torch.device, onednn_network: bool = False) -> int | None:
    if device.type != "cpu":
        return None  # a GPU is fastest on the whole batch
    return onednn.LATE_CHUNK if onednn_network else CPU_CHUNK


@dataclass
class Crops:
    images: np.ndarray  # (N, h, w, 3) uint8 BGR, network input size
    centers: np.ndarray  # (N, 2) float32, image px
    scales: np.ndarray  # (N, 2) float32 (w, h) of the cropped region, aspect fixed to the input

    def slice(self, start: int, stop: int) -> "Crops":
        return Crops(self.images[start:stop], self.centers[start:stop], self.scales[start:stop])


def crop_boxes(image: np.ndarray, xyxy: np.ndarray, input_size: tuple[int, int]) -> Crops:
    """Affine crops of padded, aspect-fixed boxes (MMPose's GetBBoxCenterScale + TopdownAffine)."""
    centers, scales = box_center_scale(xyxy)
    scales = fix_aspect_ratio(scales, input_size[0] / input_size[1])
    w, h = input_size
    images = np.empty((len(centers), h, w, 3), dtype=np.uint8)
    for i, (c, s) in enumerate(zip(centers, scales)):
        images[i] = warp_image(image, warp_matrix(c, s, 0.0, input_size), input_size)
    return Crops(images, centers, scales)


def decode_to_image(heatmaps: np.ndarray, codec: HeatmapCodec, centers: np.ndarray, scales: np.ndarray):
    """(N, K, h, w) heatmaps -> keypoints (N, K, 2) float32 in image px, scores (N, K) float32."""
    decoded = [codec.decode(hm) for hm in heatmaps]
    keypoints = np.stack([k for k, _ in decoded]) if decoded else np.zeros((0, heatmaps.shape[1], 2), np.float32)
    scores = np.stack([s for _, s in decoded]) if decoded else np.zeros((0, heatmaps.shape[1]), np.float32)
    return input_to_image(keypoints, centers, scales, codec.input_size).astype(np.float32), scores


def runs_on_onednn(net: torch.nn.Module, device: torch.device) -> bool:
    """Whether ``posecli.models.onednn`` can run ``net`` here: a float32 PoseHRNet, on CPU, with oneDNN."""
    is_fp32 = all(p.dtype == torch.float32 for p in net.parameters())
    return device.type == "cpu" and isinstance(net, PoseHRNet) and is_fp32 and onednn.available()


def pick_device(device: str | None) -> torch.device:
    """``auto`` (or None): CUDA if this torch sees a GPU, else the CPU; UserError for a device this machine lacks."""
    return parse_device(device)  # the one check every command shares


def resolve_network(asked: Network, net: torch.nn.Module, device: torch.device, precision: Precision) -> Network:
    """``auto`` -> the fastest way that gives the same keypoints here; an explicit choice is checked."""
    fusable = precision == Precision.FP32 and runs_on_onednn(net, device)
    if asked == Network.AUTO:
        return Network.ONEDNN if fusable else Network.FOLDED
    if asked == Network.ONEDNN and not fusable:
        raise UserError("the onednn network runs float32 HRNets on the CPU only, with a torch that has oneDNN; "
                        "choose the folded network here")  # fmt: skip
    return asked


class Cast(torch.nn.Module):
    """``net`` in another precision: casts its float32 input (TopDown casts the heatmaps back)."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.net, self.dtype = net.to(dtype), dtype

    def forward(self, x):
        return self.net(x.to(self.dtype))


def prepare_network(net: torch.nn.Module, info: ModelInfo, network: Network, precision: Precision,
                    device: torch.device) -> torch.nn.Module:  # fmt: skip
    """A copy of ``net`` as ``network`` runs it, on ``device``, in ``precision``; ``net`` is not changed."""
    if network == Network.ONEDNN:
        return onednn.onednn_network(net, info.input_size)  # folds BN, on a copy; lives on the CPU
    if network == Network.PLAIN:
        net = copy.deepcopy(net).to(device).eval()
    else:  # folded, and compiled (which compiles the folded network)
        net = fuse_conv_bn(net).to(device).to(memory_format=torch.channels_last)
    return net if precision == Precision.FP32 else Cast(net, TORCH_DTYPES[precision])


@dataclass
class Predictor:
    """A loaded model with its test-time settings."""

    model: TopDown
    codec: HeatmapCodec
    layout: Layout
    info: ModelInfo
    device: torch.device
    settings: InferenceSettings = InferenceSettings()
    keep: int | None = None  # keep only the first `keep` keypoints after decoding (combine -> COCO 17)

    @classmethod
    def from_weights(cls, path, settings: InferenceSettings = InferenceSettings(), keep: int | None = None) -> "Predictor":
        """A torch weights file, or a graph from ``posecli export`` (``.onnx``: its metadata says what it is)."""
        if str(path).lower().endswith(".onnx"):
            return cls.from_graph(Path(path), settings, keep)
        net, info = load_model(path)
        return cls.from_model(net, info, settings, keep)

    @classmethod
    def from_graph(cls, graph: Path | bytes, settings: InferenceSettings = InferenceSettings(), keep: int | None = None,
                   meta: runtimes.GraphInfo | None = None, where: str | None = None) -> "Predictor":  # fmt: skip
        """An exported graph (a .onnx path, or its bytes) on ONNX Runtime or OpenVINO.

        ``meta`` None: what the graph's own metadata says. The flip test runs inside the graph
        when it was exported with it; else, when ``settings.flip`` asks for it, around the
        graph as ``TopDown`` runs it. A graph with the flip test inside cannot run without it.
        """
        where = where or str(graph if isinstance(graph, Path) else "the exported graph")
        if isinstance(graph, Path) and not graph.is_file():
            raise UserError(f"{graph}: no such file")
        backend = runtimes.resolve_backend(settings.backend, graph=True)
        if settings.network != Network.AUTO:
            raise UserError(f"network {settings.network} is a way to run torch's network; an ONNX graph on {backend} "
                            f"runs as exported (leave the network ({option('network')}) at auto)")  # fmt: skip
        device = runtimes.runtime_device(backend, settings.device)
        runner = runtimes.make_runner(backend, graph, settings.precision, device, where)
        meta = meta or runtimes.read_metadata(runner.metadata(), where)
        if meta.flip and not settings.shift_heatmap:
            raise UserError(f"{where} has MMPose's flip test (with its heatmap shift) inside its graph; it cannot run "
                            "the flip test without the shift")  # fmt: skip
        if meta.flip and not settings.flip:
            raise UserError(f"{where} has the flip test inside its graph (exported with it), so it cannot run "
                            f"without it: keep the flip test ({option('flip')}), or export again without it")  # fmt: skip
        info, layout = meta.info, LAYOUTS[meta.info.layout]
        flip_outside = layout.flip_indices if settings.flip and not meta.flip else None
        chunk = settings.chunk or None
        model = runtimes.GraphModel(runner, (layout.num_keypoints, info.heatmap_size[1], info.heatmap_size[0]),
                                    flip_outside, settings.shift_heatmap, batch=meta.batch, chunk=chunk)  # fmt: skip
        codec = HeatmapCodec(info.input_size, info.heatmap_size, dark=settings.decode == Decode.DARK)
        return cls(model, codec, layout, info, torch.device("cpu"), settings.replace(backend=backend), keep)

    @classmethod
    def from_model(cls, net: torch.nn.Module, info: ModelInfo, settings: InferenceSettings = InferenceSettings(),
                   keep: int | None = None) -> "Predictor":  # fmt: skip
        """``net`` is not changed: every network works on a copy. One already built by
        ``onednn.onednn_network`` is taken as it is. On an ONNX runtime backend, ``net`` is
        exported to a graph in memory first (``runtimes.to_onnx``, a few seconds)."""
        backend = runtimes.resolve_backend(settings.backend, graph=False)
        if backend != Backend.TORCH:
            device = runtimes.runtime_device(backend, settings.device)  # a UserError if the runtime is missing
            runtimes.check_precision(backend, settings.precision, device)  # both before exporting
            return cls.from_graph(runtimes.to_onnx(net, info), settings, keep, runtimes.GraphInfo(info, False, None),
                                  where=f"{info.arch} exported for {backend}")  # fmt: skip
        device = pick_device(settings.device)
        runtimes.check_precision(backend, settings.precision, device)
        if isinstance(net, onednn.FusedPoseHRNet):
            network = Network.ONEDNN
        else:
            network = resolve_network(settings.network, net, device, settings.precision)
            net = prepare_network(net, info, network, settings.precision, device)
        settings = settings.replace(network=network, backend=backend)
        chunk = default_chunk(device, network == Network.ONEDNN) if settings.chunk is None else settings.chunk or None
        model = TopDown(net, LAYOUTS[info.layout].flip_indices if settings.flip else None, settings.shift_heatmap,
                        mean=info.mean, std=info.std, chunk=chunk)  # fmt: skip
        codec = HeatmapCodec(info.input_size, info.heatmap_size, dark=settings.decode == Decode.DARK)
        predictor = cls(model, codec, LAYOUTS[info.layout], info, device, settings, keep)
        return predictor.compile() if network == Network.COMPILED else predictor

    def compile(self) -> "Predictor":
        """This predictor with its network also compiled by ``torch.compile`` (inductor, weights frozen).

        The same heatmaps as eager. Compiling happens here, on one call of zeros; full calls of
        ``chunk`` crops then run compiled and a shorter last call runs eager, so nothing compiles
        again. Raises ``CompileError`` where inductor cannot build it, and for a oneDNN network
        (already fused, and inductor would split it into many graphs).
        """
        if self.onednn:
            raise CompileError("the onednn network is fused already and does not compile; compile the folded network")
        if isinstance(self.model, runtimes.GraphModel):
            raise CompileError(f"torch.compile compiles the torch backend's network, not a {self.settings.backend} graph")
        chunk = self.model.chunk or GPU_COMPILE_CHUNK
        compiled = torch.compile(self.model.net, options={"freezing": True})
        w, h = self.info.input_size
        try:
            with torch.inference_mode():  # an input made as real calls make theirs: dynamo guards on its strides
                compiled(normalise(torch.zeros(chunk, h, w, 3, dtype=torch.uint8, device=self.device)))
        except Exception as e:  # inductor raises many kinds (no compiler, unsupported op): all mean "stay eager"
            raise CompileError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                               "the folded network gives the same keypoints without compiling") from e  # fmt: skip
        model = dataclasses.replace(self.model, chunk=chunk, compiled=compiled)
        return dataclasses.replace(self, model=model, settings=self.settings.replace(network=Network.COMPILED))

    def with_chunk(self, chunk: int | None) -> "Predictor":
        """The same predictor calling its network on ``chunk`` crops at a time (None: the whole batch)."""
        settings = self.settings.replace(chunk=chunk or 0)
        return dataclasses.replace(self, model=dataclasses.replace(self.model, chunk=chunk), settings=settings)

    @property
    def compiled(self) -> bool:
        return self.model.compiled is not None

    @property
    def onednn(self) -> bool:
        """Whether the network runs on oneDNN's fused convolutions (``posecli.models.onednn``)."""
        return isinstance(self.model.net, onednn.FusedPoseHRNet)

    @property
    def num_keypoints(self) -> int:
        return self.keep or self.layout.num_keypoints

    def heatmaps(self, crops: np.ndarray | torch.Tensor) -> np.ndarray:
        """(N, h, w, 3) uint8 crops -> (N, K, h', w') heatmaps as numpy."""
        x = torch.as_tensor(crops).to(self.device, non_blocking=True)
        hm = self.model.heatmaps(x)
        if self.keep:
            hm = hm[:, : self.keep]
        return hm.cpu().numpy()

    def __call__(self, crops: Crops) -> tuple[np.ndarray, np.ndarray]:
        """Crops -> keypoints (N, K, 2) image px and scores (N, K)."""
        return decode_to_image(self.heatmaps(crops.images), self.codec, crops.centers, crops.scales)

    def predict_image(self, image: np.ndarray, xyxy: np.ndarray):
        """One image and its boxes -> keypoints (N, K, 2), scores (N, K)."""
        crops = crop_boxes(image, xyxy, self.codec.input_size)
        batch_size = self.settings.batch_size
        kpts, scores = [], []
        for i in range(0, len(xyxy), batch_size):
            k, s = self(crops.slice(i, i + batch_size))
            kpts.append(k)
            scores.append(s)
        if not kpts:
            return np.zeros((0, self.num_keypoints, 2), np.float32), np.zeros((0, self.num_keypoints), np.float32)
        return np.concatenate(kpts), np.concatenate(scores)
