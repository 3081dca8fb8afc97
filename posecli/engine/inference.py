"""Boxes in, keypoints out: the one inference path that eval, predict and benchmark share.

image (H, W, 3) uint8 BGR + boxes (N, 4) xyxy
  -> crops (N, 256, 192, 3) uint8, centers/scales (N, 2)     [crop_boxes]
  -> heatmaps (N, K, 64, 48) float32                           [TopDown.heatmaps]
  -> keypoints (N, K, 2) image px, scores (N, K)               [decode_to_image]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from posecli.codec import HeatmapCodec
from posecli.geometry import box_center_scale, fix_aspect_ratio, input_to_image, warp_image, warp_matrix
from posecli.layouts import LAYOUTS, Layout
from posecli.models import onednn
from posecli.models.fuse import fuse_conv_bn
from posecli.models.hrnet import PoseHRNet
from posecli.models.topdown import TopDown, normalise
from posecli.weights import ModelInfo, load_model


CPU_CHUNK = 8  # crops per eager network call on CPU: 6-16 measure within 3%, all faster than 64 (docs/benchmarks.md)
GPU_COMPILE_CHUNK = 64  # a compiled network needs one fixed call size; on GPU, batch 32 with flip


class CompileError(RuntimeError):
    """torch.compile could not build the network here (e.g. no C++ compiler for inductor's CPU kernels)."""


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
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@dataclass
class Predictor:
    """A loaded model with its test-time settings."""

    model: TopDown
    codec: HeatmapCodec
    layout: Layout
    info: ModelInfo
    device: torch.device
    channels_last: bool = True
    keep: int | None = None  # keep only the first `keep` keypoints after decoding (combine -> COCO 17)

    @classmethod
    def from_weights(cls, path, flip: bool = True, dark: bool = False, device: str | None = None,
                     channels_last: bool = True, keep: int | None = None, fuse_bn: bool = True,
                     use_onednn: bool = True) -> "Predictor":  # fmt: skip
        net, info = load_model(path)
        return cls.from_model(net, info, flip, dark, device, channels_last, keep, fuse_bn, use_onednn)

    @classmethod
    def from_model(cls, net, info: ModelInfo, flip: bool = True, dark: bool = False, device: str | None = None,
                   channels_last: bool = True, keep: int | None = None, fuse_bn: bool = True,
                   use_onednn: bool = True) -> "Predictor":  # fmt: skip
        """``net`` itself is moved to the device and set to eval mode, unless ``fuse_bn`` works on a copy.

        channels-last, BatchNorm folding and (on CPU, float32 HRNets) oneDNN's fused convolutions
        are the defaults: `posecli benchmark` measures them fastest on CPU, and they change only
        the float summation order (same keypoints and AP). A network already built by
        ``onednn.onednn_network`` is taken as it is.
        """
        dev = pick_device(device)
        layout = LAYOUTS[info.layout]
        if use_onednn and fuse_bn and channels_last and runs_on_onednn(net, dev):
            net = onednn.onednn_network(net, info.input_size)  # folds BN, on a copy
        elif fuse_bn:
            net = fuse_conv_bn(net)
        fused = isinstance(net, onednn.FusedPoseHRNet)
        if not fused:  # the fused network lives on the CPU, its packed weights in oneDNN's own layout
            net = net.to(dev).eval()
            if channels_last:  # same keypoints (README of the reference data); faster convolutions on CPU
                net = net.to(memory_format=torch.channels_last)
        model = TopDown(net, layout.flip_indices if flip else None, mean=info.mean, std=info.std,
                        chunk=default_chunk(dev, fused))  # fmt: skip
        codec = HeatmapCodec(info.input_size, info.heatmap_size, dark=dark)
        return cls(model, codec, layout, info, dev, channels_last, keep)

    def compile(self) -> "Predictor":
        """This predictor with its network also compiled by ``torch.compile`` (inductor, weights frozen).

        The same heatmaps as eager. Compiling happens here, on one call of zeros; full calls of
        ``chunk`` crops then run compiled and a shorter last call runs eager, so nothing compiles
        again. Raises ``CompileError`` where inductor cannot build it, and for a oneDNN network
        (already fused, and inductor would split it into many graphs): make the predictor with
        ``use_onednn=False`` to compile. w32 on 2 CPU cores, with flip: compiled 1.06x the eager
        folded network after 10-30 s, oneDNN 1.10x with no compiling (docs/benchmarks.md).
        """
        if self.onednn:
            raise CompileError("the oneDNN network is fused already and does not compile; build the predictor with "
                               "use_onednn=False to compile")  # fmt: skip
        chunk = self.model.chunk or GPU_COMPILE_CHUNK
        compiled = torch.compile(self.model.net, options={"freezing": True})
        w, h = self.info.input_size
        try:
            with torch.inference_mode():  # an input made as real calls make theirs: dynamo guards on its strides
                compiled(normalise(torch.zeros(chunk, h, w, 3, dtype=torch.uint8, device=self.device)))
        except Exception as e:  # inductor raises many kinds (no compiler, unsupported op): all mean "stay eager"
            raise CompileError(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from e
        return dataclasses.replace(self, model=dataclasses.replace(self.model, chunk=chunk, compiled=compiled))

    def with_chunk(self, chunk: int | None) -> "Predictor":
        """The same predictor calling its network on ``chunk`` crops at a time (None: the whole batch)."""
        return dataclasses.replace(self, model=dataclasses.replace(self.model, chunk=chunk))

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

    def predict_image(self, image: np.ndarray, xyxy: np.ndarray, batch_size: int = 32):
        """One image and its boxes -> keypoints (N, K, 2), scores (N, K)."""
        crops = crop_boxes(image, xyxy, self.codec.input_size)
        kpts, scores = [], []
        for i in range(0, len(xyxy), batch_size):
            k, s = self(crops.slice(i, i + batch_size))
            kpts.append(k)
            scores.append(s)
        if not kpts:
            return np.zeros((0, self.num_keypoints, 2), np.float32), np.zeros((0, self.num_keypoints), np.float32)
        return np.concatenate(kpts), np.concatenate(scores)
