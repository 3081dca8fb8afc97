"""Presets: one complete YAML file each, loaded into a tree of frozen dataclasses.

No inheritance and no ``type:`` strings. An unknown or mistyped key is an error that
names it; ``train.lr=1e-3`` style overrides go through the same checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from posecli.choices import Choice, Decode, Nms, Optimizer, ScoreMode
from posecli.errors import UserError
from posecli.layouts import LAYOUTS
from posecli.models.hrnet import ARCHS


@dataclass(frozen=True)
class ModelCfg:
    arch: str = "hrnet-w32"
    layout: str = "coco"  # the layout the network predicts
    input_size: tuple[int, int] = (192, 256)  # (w, h)
    heatmap_size: tuple[int, int] = (48, 64)  # (w, h)
    sigma: float = 2.0  # of the target Gaussians
    init_backbone: str | None = None  # ImageNet HRNet weights (MMPose: hrnet_w32-36af842e.pth)


@dataclass(frozen=True)
class Source:
    """One training set: a COCO-format file, its images, and the layout of its keypoints."""

    name: str
    layout: str
    ann: str  # relative to the data root
    images: str  # relative to the data root


@dataclass(frozen=True)
class ValCfg:
    ann: str
    images: str
    boxes: str | None = None  # detector boxes (COCO results); ground-truth boxes when null
    interval: int = 10  # epochs


@dataclass(frozen=True)
class DataCfg:
    train: tuple[Source, ...]
    val: ValCfg


@dataclass(frozen=True)
class AugmentCfg:
    """MMPose's train pipeline defaults (RandomFlip, RandomHalfBody, RandomBBoxTransform)."""

    flip_prob: float = 0.5
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 9
    half_body_min_upper: int = 2
    half_body_min_lower: int = 3
    half_body_upper_prob: float = 0.7
    half_body_padding: float = 1.5
    shift_factor: float = 0.16
    shift_prob: float = 0.3
    scale_range: tuple[float, float] = (0.5, 1.5)
    scale_prob: float = 1.0
    rotate_factor: float = 80.0  # degrees
    rotate_prob: float = 0.6


@dataclass(frozen=True)
class TrainCfg:
    epochs: int = 210
    batch_size: int = 64  # per process (GPU)
    optimizer: Optimizer = Optimizer.ADAM
    lr: float = 5e-4
    weight_decay: float = 0.0
    warmup_iters: int = 500
    warmup_factor: float = 0.001
    milestones: tuple[int, ...] = (170, 200)  # epochs
    gamma: float = 0.1
    scale_lr: bool = False  # scale lr by total batch / base_batch_size
    base_batch_size: int = 512
    use_target_weight: bool = True  # weight each keypoint's loss by its target weight (0 where unlabelled)
    workers: int = 2
    seed: int = 0
    checkpoint_interval: int = 1  # epochs between `last` checkpoints


@dataclass(frozen=True)
class TestCfg:
    flip: bool = True
    shift_heatmap: bool = True  # flip test: shift the flipped-back heatmaps one pixel right, as MMPose
    decode: Decode = Decode.STANDARD
    score_mode: ScoreMode = ScoreMode.BBOX_KEYPOINT
    keypoint_score_thr: float = 0.2
    nms: Nms = Nms.OKS
    nms_thr: float = 0.9
    output_keypoints: int | None = None  # keep the first N outputs (combine: COCO's 17)
    batch_size: int = 32


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelCfg
    data: DataCfg
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    test: TestCfg = field(default_factory=TestCfg)
    published: dict[str, float] = field(default_factory=dict)  # MMPose's COCO val2017 numbers

    def __post_init__(self):
        problem = _problem(self)
        if problem:
            raise UserError(f"preset {self.name}: {problem}")

    def to_dict(self) -> dict:
        """Plain YAML/JSON values: choices as their strings."""
        return dataclasses.asdict(self, dict_factory=lambda items: {k: _plain(v) for k, v in items})


STRIDE = 4  # HRNet's heatmaps are a quarter of its input
INPUT_MULTIPLE = 32  # its lowest-resolution branch is 1/32 of the input: other sizes do not fit together


def _problem(p: Preset) -> str | None:
    """The first value of ``p`` that is out of range or not a known choice, as "key value: what it must be"."""
    m, a, t, v, tr = p.model, p.augment, p.train, p.data.val, p.test
    layouts = [("model.layout", m.layout)] + [
        (f"data.train[{s.name}].layout", s.layout) for s in p.data.train]  # fmt: skip
    probs = {f"augment.{k}": getattr(a, k) for k in ("flip_prob", "half_body_prob", "half_body_upper_prob", "shift_prob",
                                                     "scale_prob", "rotate_prob")}  # fmt: skip
    checks = [
        ("model.arch", m.arch, m.arch in ARCHS, f"choose one of {', '.join(ARCHS)}"),
        *[(key, value, value in LAYOUTS, f"choose one of {', '.join(LAYOUTS)}") for key, value in layouts],
        ("model.input_size", m.input_size, all(s > 0 and s % INPUT_MULTIPLE == 0 for s in m.input_size),
         f"(w, h) must be positive multiples of {INPUT_MULTIPLE}"),
        ("model.heatmap_size", m.heatmap_size, tuple(m.heatmap_size) == tuple(s // STRIDE for s in m.input_size),
         f"must be model.input_size / {STRIDE}, {tuple(s // STRIDE for s in m.input_size)}"),
        ("model.sigma", m.sigma, m.sigma > 0, "must be > 0"),
        ("data.train", len(p.data.train), len(p.data.train) > 0, "needs at least one source"),
        ("data.val.interval", v.interval, v.interval >= 1, "must be >= 1 (epochs)"),
        *[(key, value, 0 <= value <= 1, "a probability must be in [0, 1]") for key, value in probs.items()],
        *[(f"augment.{k}", getattr(a, k), getattr(a, k) >= 0, "must be >= 0")
          for k in ("half_body_min_keypoints", "half_body_min_upper", "half_body_min_lower", "shift_factor", "rotate_factor")],
        ("augment.half_body_padding", a.half_body_padding, a.half_body_padding > 0, "must be > 0"),
        ("augment.scale_range", a.scale_range, 0 < a.scale_range[0] <= a.scale_range[1], "must be (low, high), 0 < low <= high"),
        ("train.epochs", t.epochs, t.epochs >= 1, "must be >= 1"),
        ("train.batch_size", t.batch_size, t.batch_size >= 1, "must be >= 1"),
        ("train.lr", t.lr, t.lr > 0, "must be > 0"),
        ("train.weight_decay", t.weight_decay, t.weight_decay >= 0, "must be >= 0"),
        ("train.warmup_iters", t.warmup_iters, t.warmup_iters >= 0, "must be >= 0"),
        ("train.warmup_factor", t.warmup_factor, 0 < t.warmup_factor <= 1, "must be in (0, 1]"),
        ("train.milestones", t.milestones, all(e >= 0 for e in t.milestones), "epochs must be >= 0"),
        ("train.gamma", t.gamma, t.gamma > 0, "must be > 0"),
        ("train.base_batch_size", t.base_batch_size, t.base_batch_size >= 1, "must be >= 1"),
        ("train.workers", t.workers, t.workers >= 0, "must be >= 0"),
        ("train.seed", t.seed, t.seed >= 0, "must be >= 0"),
        ("train.checkpoint_interval", t.checkpoint_interval, t.checkpoint_interval >= 1, "must be >= 1 (epochs)"),
        ("test.nms_thr", tr.nms_thr, 0 <= tr.nms_thr <= 1, "must be in [0, 1]"),
        ("test.keypoint_score_thr", tr.keypoint_score_thr, 0 <= tr.keypoint_score_thr <= 1, "must be in [0, 1]"),
        ("test.batch_size", tr.batch_size, tr.batch_size >= 1, "must be >= 1"),
    ]
    if m.layout in LAYOUTS and tr.output_keypoints is not None:
        k = LAYOUTS[m.layout].num_keypoints
        checks.append(("test.output_keypoints", tr.output_keypoints, 1 <= tr.output_keypoints <= k,
                       f"must be null or 1..{k} (the {m.layout} layout's keypoints)"))  # fmt: skip
    for key, value, ok, must in checks:
        if not ok:
            return f"{key} {_show(value)}: {must}"
    return None


def _plain(value):
    if isinstance(value, Choice):
        return value.value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _show(value) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def _convert(value, hint, where: str):
    """Check and convert a YAML value to the annotated type; errors name the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Choice):
        try:
            return hint.parse(value, where)
        except ValueError as e:
            raise UserError(str(e)) from None
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(hint, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(value, inner[0], where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{where}: expected a mapping")
        return {str(k): _convert(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise UserError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise UserError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    label = where or "preset"
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise UserError(f"{label}: unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(names))})")
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # fmt: skip
    if missing:
        raise UserError(f"{label}: missing key {missing[0]!r}")
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def preset_dirs() -> list[Path]:
    """Bundled presets: inside the installed wheel, or the repo's top-level folder in a checkout."""
    here = Path(__file__).parent
    return [d for d in (here / "_presets", here.parent / "presets") if d.is_dir()]


def available_presets() -> list[str]:
    return sorted({p.stem for d in preset_dirs() for p in d.glob("*.yaml")})


def find_preset(name_or_path: str) -> Path:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    for d in preset_dirs():
        candidate = d / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    raise UserError(f"no preset {name_or_path!r}; bundled presets: {', '.join(available_presets())}, or give a .yaml path")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """``["train.lr=1e-3", "model.arch=hrnet-w48"]`` -> a new dict; values parsed as YAML."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # deep copy
    for item in overrides:
        if "=" not in item:
            raise UserError(f"override {item!r}: expected key=value, e.g. train.lr=1e-3")
        key, text = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # a section the file leaves out is filled in here
            if not isinstance(node, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section of the preset")
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def load_preset(name_or_path: str, overrides: list[str] | None = None) -> Preset:
    path = find_preset(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a preset is a YAML mapping")
    raw = apply_overrides(raw, overrides or [])
    try:
        return _build(Preset, raw, "")
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def preset_from_dict(raw: dict) -> Preset:
    return _build(Preset, raw, "")
