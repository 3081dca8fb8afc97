"""The closed sets of values that presets, the library and the CLI share, one home each.

``str`` enumerations: a member equals its value (``Decode.DARK == "dark"``), YAML and JSON
keep the plain string, and the CLI lists the choices in its help.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    def __str__(self) -> str:  # "dark", not "Decode.DARK", in messages and metadata
        return self.value

    @classmethod
    def parse(cls, value, what: str):
        """``value`` as a member, or ValueError naming ``what`` and the valid values."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{what} {value!r}: choose one of {', '.join(m.value for m in cls)}") from None


class Decode(Choice):
    STANDARD = "standard"  # arg-max + quarter-pixel step towards the higher neighbour
    DARK = "dark"  # Gaussian blur, log, one Newton step (MMPose's unbiased decoding)


class Nms(Choice):
    OKS = "oks"
    SOFT_OKS = "soft_oks"
    NONE = "none"


class Network(Choice):
    """How the trained network runs at test time. All give the same keypoints (float32 summation order only)."""

    AUTO = "auto"  # onednn where it runs (CPU, float32), else folded
    PLAIN = "plain"  # as trained: BatchNorm layers, NCHW
    FOLDED = "folded"  # BatchNorm folded into the convolutions, channels-last
    ONEDNN = "onednn"  # folded, on oneDNN's fused convolutions (CPU, float32)
    COMPILED = "compiled"  # folded, then torch.compile (inductor, weights frozen)


class Precision(Choice):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class Backend(Choice):
    """What runs crops -> heatmaps; crops, decoding and the metric are the same for all."""

    AUTO = "auto"  # torch for torch weights; for an exported .onnx, onnxruntime if installed, else openvino
    TORCH = "torch"
    ONNXRUNTIME = "onnxruntime"  # the optional extra posecli[onnx]
    OPENVINO = "openvino"  # the optional extra posecli[openvino]


class ScoreMode(Choice):
    """An instance's score for NMS and COCOeval, as MMPose's CocoMetric computes it."""

    BBOX = "bbox"  # the box score alone
    BBOX_KEYPOINT = "bbox_keypoint"  # box score x mean of the keypoint scores above keypoint_score_thr
    KEYPOINT = "keypoint"  # mean of all keypoint scores


class Optimizer(Choice):
    ADAM = "adam"  # MMPose's HRNet recipe; the only one its configs use
