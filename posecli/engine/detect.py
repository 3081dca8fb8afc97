"""Person detectors that run offline on the CPU: OpenCV's HOG, or a YOLOX-style ONNX model (ONNX Runtime or OpenCV).

A detector is a callable ``image (H, W, 3) uint8 BGR -> (xyxy (N, 4) float32 image px, scores (N,) float32)``
with a ``name`` saying what it is. ``make_detector`` turns a detector spec (a name or a file) into one.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from posecli.errors import UserError, option
from posecli.geometry import xyxy_to_xywh

NMS_IOU = 0.45  # YOLOX's usual test-time IoU threshold
YOLOX_STRIDES = (8, 16, 32)
YOLOX_DEFAULT_SIZE = (640, 640)  # (w, h), when the model's input size is not fixed in the file
PAD_VALUE = 114  # YOLOX letterbox fill


def nms(xyxy: np.ndarray, scores: np.ndarray, min_score: float, iou: float = NMS_IOU) -> np.ndarray:
    """Indices of the boxes (N, 4) that survive a score threshold and greedy IoU suppression, best first."""
    if len(xyxy) == 0:
        return np.zeros(0, np.int64)
    keep = cv2.dnn.NMSBoxes(xyxy_to_xywh(xyxy).tolist(), scores.astype(float).tolist(), min_score, iou)
    return np.asarray(keep, np.int64).reshape(-1)


def box_nms(xyxy: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU, inside: float | None = None) -> np.ndarray:
    """Indices (best first) of the boxes (N, 4) that survive greedy suppression by IoU above ``iou`` and, with
    ``inside``, by lying that share of their own area inside a better-scored kept box."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    areas = np.clip(xyxy[:, 2:] - xyxy[:, :2], 0, None).prod(1)
    for i in order:
        if keep:
            kept = xyxy[keep]
            lo, hi = np.maximum(kept[:, :2], xyxy[i, :2]), np.minimum(kept[:, 2:], xyxy[i, 2:])
            inter = np.clip(hi - lo, 0, None).prod(1)
            if (inter / np.maximum(areas[keep] + areas[i] - inter, 1e-9) > iou).any():
                continue
            if inside is not None and (inter / max(areas[i], 1e-9) > inside).any():
                continue
        keep.append(int(i))
    return np.asarray(keep, np.int64)


@dataclass
class HogDetector:
    """OpenCV's HOG + linear SVM people detector (Dalal-Triggs), shipped inside opencv-python.

    Tuned on the bundled images (docs/pictures.md gives the counts): the image is scaled so its longer
    side is 640..800 px (small people grow to the 64x128 window, large images cost less), then given a
    replicated border of a quarter of its height, without which a person filling the image's height
    never fits a window; windows scoring above a margin of -0.3 count (the SVM's own 0 misses most of
    COCO's people). A window holds a margin around its person, so each box is shrunk to the window's
    central 70% x 80%. Boxes go through IoU NMS and drop boxes lying mostly inside a better one, HOG's
    usual duplicate at another scale. Scores are SVM margins mapped to (0, 1) by a logistic (margin 0,
    the SVM's own threshold, becomes 0.5). It sees upright, whole people best.
    """

    min_side: int = 640  # the longer side is scaled up to this ...
    max_side: int = 800  # ... or down to this: HOG's cost grows with the pixel count
    border: float = 0.25  # replicated border, as a share of the scaled image's height
    margin: float = -0.3  # SVM margin (hitThreshold) above which a window counts
    shrink: tuple[float, float] = (0.7, 0.8)  # the person's share of a window's width and height
    iou: float = NMS_IOU
    inside: float = 0.7  # a box with this share of its area inside a better box is its duplicate
    name: str = "OpenCV HOG people detector"
    _hog: cv2.HOGDescriptor = field(init=False, repr=False)

    def __post_init__(self):
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        longer = max(image.shape[:2])
        ratio = min(max(1.0, self.min_side / longer), self.max_side / longer)
        scaled = image
        if ratio != 1.0:
            scaled = cv2.resize(image, None, fx=ratio, fy=ratio, interpolation=cv2.INTER_LINEAR if ratio > 1 else cv2.INTER_AREA)
        pad = int(self.border * scaled.shape[0])
        padded = cv2.copyMakeBorder(scaled, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        rects, margins = self._hog.detectMultiScale(padded, hitThreshold=self.margin, winStride=(8, 8), padding=(16, 16), scale=1.05)
        if len(rects) == 0:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
        x, y, w, h = (np.asarray(rects, np.float32).reshape(-1, 4) - [pad, pad, 0, 0]).T / ratio
        sw, sh = self.shrink
        cx, cy, half_w, half_h = x + w / 2, y + h / 2, w * sw / 2, h * sh / 2
        xyxy = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], 1)
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, image.shape[1])
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, image.shape[0])
        scores = (1.0 / (1.0 + np.exp(-np.asarray(margins, np.float32).reshape(-1)))).astype(np.float32)
        good = (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])  # a window wholly in the border holds nobody
        xyxy, scores = xyxy[good], scores[good]
        keep = box_nms(xyxy, scores, self.iou, self.inside)
        return xyxy[keep].astype(np.float32), scores[keep]


def letterbox(image: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Resize keeping the aspect ratio into the top-left of a (h, w) canvas filled with 114 -> canvas, ratio."""
    w, h = input_size
    ratio = min(h / image.shape[0], w / image.shape[1])
    new_w, new_h = int(image.shape[1] * ratio), int(image.shape[0] * ratio)
    canvas = np.full((h, w, 3), PAD_VALUE, np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return canvas, ratio


def yolox_grid(input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anchor cells (A, 2) xy and their strides (A, 1) of a YOLOX head, strides 8, 16, 32, row-major."""
    w, h = input_size
    cells, strides = [], []
    for s in YOLOX_STRIDES:
        ys, xs = np.mgrid[0 : h // s, 0 : w // s]
        cells.append(np.stack([xs.ravel(), ys.ravel()], 1))
        strides.append(np.full((xs.size, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(strides).astype(np.float32)


def decode_yolox(raw: np.ndarray, input_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(A, 5 + C) YOLOX output -> xyxy (A, 4) in input px and person scores (A,) = objectness x class 0.

    Raw exports give (dx, dy) cell offsets and log (w, h) in strides; exports that decode in the
    graph already give the centre and size in pixels. A raw log size above 16 would mean a box
    e^16 strides wide, so sizes that large can only be pixels.
    """
    raw = raw.astype(np.float32)
    centre, size = raw[:, :2], raw[:, 2:4]
    if size.size and size.max() <= 16:
        grid, stride = yolox_grid(input_size)
        if len(grid) != len(raw):
            raise UserError(f"the detector gives {len(raw)} anchors, but a YOLOX head on a {input_size[0]}x{input_size[1]} "
                            f"input has {len(grid)}; is this a YOLOX model?")  # fmt: skip
        centre, size = (centre + grid) * stride, np.exp(size) * stride
    xyxy = np.concatenate([centre - size / 2, centre + size / 2], 1)
    return xyxy, raw[:, 4] * raw[:, 5]


@dataclass
class OnnxYoloxDetector:
    """A YOLOX-style person detector in ONNX, run by ONNX Runtime where it is installed, else OpenCV's dnn module.

    Input: the BGR image letterboxed into the model's size (pad 114), float32 0..255, no
    normalisation. Output: either raw (1, A, 5 + C) predictions (decoded, thresholded and NMS-ed
    here, person = class 0) or an in-graph NMS's (1, N, 5) xyxy+score with optional (1, N) labels.
    """

    path: Path
    min_score: float = 0.3
    iou: float = NMS_IOU
    name: str = field(init=False)
    input_size: tuple[int, int] = field(init=False)  # (w, h)
    dropped: int = field(init=False, default=0)  # boxes above the score threshold that were not finite or empty
    _net: cv2.dnn.Net | None = field(init=False, repr=False, default=None)
    _session: object | None = field(init=False, repr=False, default=None)  # an onnxruntime.InferenceSession

    def __post_init__(self):
        if not Path(self.path).is_file():
            raise UserError(f"{self.path}: no such detector file")
        if importlib.util.find_spec("onnxruntime") is not None:
            import onnxruntime

            try:
                self._session = onnxruntime.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            except Exception as e:  # ONNX Runtime raises its own types for unreadable or invalid models
                raise UserError(f"{self.path}: ONNX Runtime cannot read this ONNX model ({_first_line(e)})") from None
            size = _fixed_size(self._session.get_inputs()[0].shape)
        else:
            try:
                self._net = cv2.dnn.readNetFromONNX(str(self.path))
            except cv2.error as e:
                raise UserError(f"{self.path}: OpenCV cannot read this ONNX model ({_first_line(e)})") from None
            size = onnx_input_size(self.path)
        self.input_size = size or YOLOX_DEFAULT_SIZE
        runner = "ONNX Runtime" if self._session is not None else "OpenCV"
        self.name = f"ONNX detector {Path(self.path).name} at {self.input_size[0]}x{self.input_size[1]} ({runner})"

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        canvas, ratio = letterbox(image, self.input_size)
        blob = np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32)
        try:
            if self._session is not None:
                outputs = self._session.run(None, {self._session.get_inputs()[0].name: blob})
            else:
                self._net.setInput(blob)
                outputs = self._net.forward(self._net.getUnconnectedOutLayersNames())
        except Exception as e:  # cv2.error, or ONNX Runtime's own types
            raise UserError(f"{self.path}: the detector failed on a {self.input_size[0]}x{self.input_size[1]} input ({_first_line(e)})") from None
        xyxy, scores = self._read_outputs([np.asarray(o) for o in outputs])
        xyxy = xyxy / ratio
        xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, image.shape[1])
        xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, image.shape[0])
        with np.errstate(invalid="ignore"):
            good = np.isfinite(xyxy).all(1) & np.isfinite(scores) & (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])
            self.dropped += int((~good & ~(scores < self.min_score)).sum())  # NaN scores count too
        xyxy, scores = xyxy[good], scores[good]  # NaN would upset the NMS; an empty box holds nobody
        keep = nms(xyxy, scores, self.min_score, self.iou)
        return xyxy[keep].astype(np.float32), scores[keep].astype(np.float32)

    def _read_outputs(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        boxes = [o for o in outputs if o.ndim == 3 and o.shape[0] == 1]
        labels = [o for o in outputs if o.ndim == 2 and o.shape[0] == 1]
        if len(boxes) != 1 or boxes[0].shape[2] < 5:
            shapes = ", ".join(str(o.shape) for o in outputs)
            raise UserError(f"{self.path}: outputs {shapes} are not YOLOX's (1, A, 5 + classes) nor (1, N, 5) + labels")
        out = boxes[0][0]
        if out.shape[1] > 5:
            return decode_yolox(out, self.input_size)
        xyxy, scores = out[:, :4].astype(np.float32), out[:, 4].astype(np.float32)
        if labels and labels[0].shape[1] == len(out):
            person = labels[0][0] == 0
            xyxy, scores = xyxy[person], scores[person]
        return xyxy, scores


def make_detector(spec: str, min_score: float = 0.3):
    # ``min_score`` is the ONNX detector's own threshold (rtmlib's 0.3), before predict's own box-score filter
    """A detector spec -> a detector, or None for ``none`` (the caller then uses the whole image)."""
    if spec == "none":
        return None
    if spec == "hog":
        if not hasattr(cv2, "HOGDescriptor_getDefaultPeopleDetector"):  # a stripped OpenCV build
            return None
        return HogDetector()
    if spec.lower().endswith(".onnx"):
        return OnnxYoloxDetector(Path(spec), min_score)
    raise UserError(f"detector ({option('detector')}) {spec!r}: use hog, none, or the path of a YOLOX-style .onnx person detector")


def onnx_input_size(path: str | Path) -> tuple[int, int] | None:
    """(w, h) of an ONNX model's first input when the file fixes it, read with the onnx package; None without it."""
    if importlib.util.find_spec("onnx") is None:
        return None
    import onnx

    try:
        dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    except Exception:  # a file onnx cannot parse: OpenCV has read it, so leave the size to the default
        return None
    return _fixed_size([d.dim_value if d.HasField("dim_value") else None for d in dims])


def _fixed_size(shape: list) -> tuple[int, int] | None:
    """(w, h) of an NCHW input shape whose H and W are fixed positive integers, else None."""
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[2:]):
        return None
    return shape[3], shape[2]


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
