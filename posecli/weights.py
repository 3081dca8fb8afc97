"""Weights: safetensors files that carry their meaning; MMPose and official HRNet imports.

A posecli weights file is safetensors with string metadata: ``arch``, ``layout``,
``keypoint_names`` (JSON), ``input_size``/``heatmap_size`` (JSON (w, h)),
``mean``/``std`` (JSON), and optionally ``preset`` (the resolved preset, JSON). Reading checks
all of it, and that every weight is finite: a file that lies fails with its name, not with AP 0.
"""

from __future__ import annotations

import functools
import json
import math
import pickle
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from posecli.errors import UserError, option
from posecli.fileio import write_bytes
from posecli.layouts import LAYOUTS, layout_from_names
from posecli.models.hrnet import ARCHS, PoseHRNet, build_model
from posecli.models.topdown import MEAN_RGB, STD_RGB
from posecli.presets import INPUT_MULTIPLE, STRIDE
from posecli.safepickle import Inert, Refused, Unknown, read_torch_file


@dataclass(frozen=True)
class ModelInfo:
    arch: str
    layout: str
    input_size: tuple[int, int] = (192, 256)  # (w, h)
    heatmap_size: tuple[int, int] = (48, 64)  # (w, h)
    mean: tuple[float, float, float] = MEAN_RGB
    std: tuple[float, float, float] = STD_RGB
    preset: dict | None = field(default=None, compare=False)

    def to_metadata(self) -> dict[str, str]:
        d = asdict(self)
        meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in d.items() if v is not None}
        meta["keypoint_names"] = json.dumps(LAYOUTS[self.layout].keypoints)
        meta["format"] = "posecli"
        return meta

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> "ModelInfo":
        """Parse and check posecli's metadata; ``ValueError`` says which key is wrong and how."""

        def js(key, default):
            if key not in meta:
                return default
            try:
                return json.loads(meta[key])
            except json.JSONDecodeError:
                raise ValueError(f"{key} is not JSON ({meta[key][:40]!r})") from None

        arch, layout = meta["arch"], meta["layout"]
        if arch not in ARCHS:
            raise ValueError(f"arch {arch!r} is not one posecli knows ({', '.join(ARCHS)})")
        if layout not in LAYOUTS:
            raise ValueError(f"layout {layout!r} is not one posecli knows ({', '.join(LAYOUTS)})")
        input_size = _size(js("input_size", [192, 256]), "input_size")
        heatmap_size = _size(js("heatmap_size", [48, 64]), "heatmap_size")
        if any(s % INPUT_MULTIPLE for s in input_size):
            raise ValueError(f"input_size {list(input_size)}: HRNet needs multiples of {INPUT_MULTIPLE}")
        if heatmap_size != tuple(s // STRIDE for s in input_size):
            raise ValueError(f"heatmap_size {list(heatmap_size)} must be input_size / {STRIDE}, "
                             f"{[s // STRIDE for s in input_size]}")  # fmt: skip
        mean, std = _triple(js("mean", MEAN_RGB), "mean"), _triple(js("std", STD_RGB), "std")
        if min(std) <= 0:
            raise ValueError(f"std {list(std)}: every value must be > 0 (inputs are divided by it)")
        names = js("keypoint_names", None)
        if names is not None and (not isinstance(names, list) or tuple(names) != tuple(LAYOUTS[layout].keypoints)):
            raise ValueError(f"keypoint_names do not match layout {layout!r} ({LAYOUTS[layout].num_keypoints} keypoints: "
                             f"{', '.join(LAYOUTS[layout].keypoints[:3])}, ...)")  # fmt: skip
        preset = js("preset", None)
        if preset is not None and not isinstance(preset, dict):
            raise ValueError("preset is not a JSON object")
        return cls(arch, layout, input_size, heatmap_size, mean, std, preset)


def _size(value, key: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int and v > 0 for v in value)):
        raise ValueError(f"{key} {value!r} must be (w, h), two positive integers")
    return tuple(value)


def _triple(value, key: str) -> tuple[float, float, float]:
    ok = isinstance(value, (list, tuple)) and len(value) == 3
    if not (ok and all(type(v) in (int, float) and math.isfinite(v) for v in value)):
        raise ValueError(f"{key} {value!r} must be three finite numbers (R, G, B)")
    return tuple(float(v) for v in value)


def check_weights(path: Path, state_dict: dict[str, torch.Tensor], info: ModelInfo, fix: str) -> None:
    """UserError unless the head predicts the layout's keypoints and every floating tensor is finite."""
    head = state_dict.get("head.final_layer.weight")
    n = LAYOUTS[info.layout].num_keypoints
    if head is not None and head.shape[0] != n:
        fits = [name for name, lay in LAYOUTS.items() if lay.num_keypoints == head.shape[0]]
        raise UserError(f"{path}: the head predicts {head.shape[0]} keypoints but layout {info.layout!r} has {n}; "
                        + fix.format(fits=", ".join(fits) or "none known"))  # fmt: skip
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            raise UserError(f"{path}: tensor {key} holds {bad} NaN or infinite values of {value.numel()}; these weights "
                            "are damaged (a run that diverged?): use an earlier checkpoint")  # fmt: skip


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """Atomic safetensors write; tensors are made contiguous and detached first."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # serialised in memory and written by fileio: safetensors' own writer turns a full disk into a SafetensorError
    write_bytes(path, safetensors_bytes(tensors, metadata=info.to_metadata()))


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's go on for a paragraph)."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return line.split(". ")[0].rstrip(".")[:200]


def _check_not_empty(path: Path) -> None:
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file (0 bytes), it was never written completely; copy or write it again")


def read_pth(path: str | Path, stand_ins: bool = True) -> object:
    """A .pth file, read without importing or running anything it names (see ``posecli.safepickle``).

    With ``stand_ins``, classes outside weights_only's allow-list (MMPose's ``message_hub``,
    numpy scalars, ...) come back as inert ``Unknown``/``Inert`` objects; without, they are an error.
    """
    path = Path(path)
    _check_not_empty(path)
    try:
        return read_torch_file(path, stand_ins)
    except Refused as e:
        raise UserError(f"{path}: refused: it names {e.what}, which runs code, and no checkpoint needs that. "
                        "Nothing from it was run; delete it, or ask whoever made it") from None  # fmt: skip
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or _first_line(e)})") from None
    except pickle.UnpicklingError as e:
        raise UserError(f"{path}: cannot be read safely ({_first_line(e)}); posecli reads tensors, containers and "
                        "inert stand-ins, never arbitrary objects") from None  # fmt: skip
    except Exception as e:  # torch's reader and pickle on a cut-short or damaged file
        raise UserError(f"{path}: not a readable checkpoint, truncated or damaged ({type(e).__name__}: {_first_line(e)}); "
                        "copy or download it again") from None  # fmt: skip


def official_hrnet_to_mmpose(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official HRNet-repo pose checkpoint keys -> MMPose's: backbone prefix, head.final_layer."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^module\.", "", key)
        out["head." + key if key.startswith("final_layer.") else "backbone." + key] = value
    return out


def _describe(value) -> str:
    return f"a stand-in for {value.name}" if isinstance(value, (Unknown, Inert)) else f"a {type(value).__name__}"


def _unwrap(path: Path, ckpt) -> tuple[dict[str, torch.Tensor], dict]:
    """(state_dict, meta) of an MMPose checkpoint (``state_dict`` + ``meta``, maybe more) or a plain dict of tensors."""
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        state_dict, meta = ckpt["state_dict"], ckpt.get("meta")
    elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state_dict, meta = ckpt, None
    else:
        keys = f" (keys: {', '.join(map(str, list(ckpt)[:6]))})" if isinstance(ckpt, dict) else ""
        raise UserError(f"{path}: holds {_describe(ckpt)}{keys}, neither a 'state_dict' nor a plain dict of tensors; "
                        "is it a pose checkpoint?")  # fmt: skip
    if not isinstance(state_dict, dict):
        raise UserError(f"{path}: its 'state_dict' is {_describe(state_dict)}, not a dict of tensors")
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UserError(f"{path}: its state_dict holds {_describe(value)} at {key!r}, not a tensor")
    return state_dict, meta if isinstance(meta, dict) else {}


@functools.lru_cache(maxsize=None)
def _shapes(arch: str, num_keypoints: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an architecture's state_dict, from a model on the meta device (nothing allocated)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in PoseHRNet(ARCHS[arch], num_keypoints).state_dict().items()}


def guess_arch(path: Path, state_dict: dict[str, torch.Tensor]) -> str:
    """The ARCHS entry whose backbone the checkpoint fits best: no shape conflicts, most keys present."""
    have = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith("backbone.")}
    best, best_share = None, 0.9  # tolerate a few missing keys; they are reported later
    for name in ARCHS:
        wanted = {k: shape for k, shape in _shapes(name, 1).items() if k.startswith("backbone.")}
        if any(k in have and have[k] != shape for k, shape in wanted.items()):
            continue
        share = sum(k in have for k in wanted) / len(wanted)
        if share > best_share:
            best, best_share = name, share
    if best is None:
        raise UserError(f"{path}: the backbone matches none of the known architectures ({', '.join(ARCHS)})")
    return best


def guess_layout(path: Path, state_dict: dict[str, torch.Tensor], meta: dict) -> str:
    """The layout MMPose's ``meta['dataset_meta']`` names, else the one with as many keypoints as the head."""
    dataset = meta.get("dataset_meta")
    names = dataset.get("keypoint_id2name") if isinstance(dataset, dict) else None
    if isinstance(names, dict) and names and all(isinstance(names.get(i), str) for i in range(len(names))):
        try:
            return layout_from_names([names[i] for i in range(len(names))]).name
        except ValueError as e:
            raise UserError(f"{path}: {e}; say the layout ({option('layout')}) if they are the same keypoints under other names") from None
    k = state_dict["head.final_layer.weight"].shape[0]
    for name, layout in LAYOUTS.items():
        if layout.num_keypoints == k:
            return name
    raise UserError(f"{path}: the head predicts {k} keypoints, which fits no known layout ({', '.join(LAYOUTS)})")


@dataclass
class Imported:
    state_dict: dict[str, torch.Tensor]
    info: ModelInfo
    missing: list[str]
    unexpected: list[str]
    skipped: list[str] = field(default_factory=list)  # a training checkpoint's other parts: message_hub, optimizer, ...


def import_checkpoint(path: str | Path, arch: str | None = None, layout: str | None = None) -> Imported:
    """Read a .pth (MMPose, raw or published, or official HRNet) or .safetensors file into posecli's key names.

    Of a .pth only the tensors of ``state_dict`` are used; ``message_hub``, ``optimizer`` and the
    rest are read as inert stand-ins and dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    ckpt = read_pth(path)
    state_dict, meta = _unwrap(path, ckpt)
    skipped = sorted(str(k) for k in ckpt if k not in ("state_dict", "meta")) if "state_dict" in ckpt else []
    if not any(k.startswith("backbone.") for k in state_dict):
        state_dict = official_hrnet_to_mmpose(state_dict)
    if "head.final_layer.weight" not in state_dict:
        raise UserError(f"{path}: no heatmap head (head.final_layer.weight); is this a pose checkpoint?")
    if arch is not None and arch not in ARCHS:
        raise UserError(f"architecture ({option('arch')}) {arch}: not one posecli knows ({', '.join(ARCHS)})")
    if layout is not None and layout not in LAYOUTS:
        raise UserError(f"layout ({option('layout')}) {layout}: not one posecli knows ({', '.join(LAYOUTS)})")
    info = ModelInfo(arch or guess_arch(path, state_dict), layout or guess_layout(path, state_dict, meta))
    hint = f"give {option('layout')} {{fits}}" if layout else f"say the layout ({option('layout')}: {{fits}})"
    check_weights(path, state_dict, info, fix=f"{hint}; nothing written")
    expected = _shapes(info.arch, LAYOUTS[info.layout].num_keypoints)
    conflicts = [f"{k} {tuple(v.shape)} in the file, {expected[k]} in {info.arch}"
                 for k, v in state_dict.items() if k in expected and tuple(v.shape) != expected[k]]  # fmt: skip
    if conflicts:
        raise UserError(f"{path}: {len(conflicts)} tensors do not fit {info.arch}, e.g. {conflicts[0]}; "
                        f"leave the architecture ({option('arch')}) out or give the checkpoint's own")  # fmt: skip
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    kept = {k: v for k, v in state_dict.items() if k in expected}
    return Imported(kept, info, missing, unexpected, skipped)


def _read_safetensors(path: Path) -> Imported:
    _check_not_empty(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state_dict = load_file(str(path))
    except Exception as e:  # safetensors' own errors, and OSError, on a cut-short or damaged file
        raise UserError(f"{path}: not a readable safetensors file, truncated or damaged ({_first_line(e)}); "
                        "copy it again, or write it again with `posecli convert weights`") from None  # fmt: skip
    if "arch" not in meta or "layout" not in meta:
        raise UserError(f"{path}: safetensors file without posecli metadata (arch, layout); "
                        "convert the original checkpoint with `posecli convert weights`")  # fmt: skip
    try:
        info = ModelInfo.from_metadata(meta)
    except ValueError as e:
        raise UserError(f"{path}: bad metadata: {e}; write the file again with `posecli convert weights` "
                        "from the original checkpoint") from None  # fmt: skip
    check_weights(path, state_dict, info, fix="the file is inconsistent; convert the original checkpoint again")
    return Imported(state_dict, info, [], [])


def load_model(path: str | Path) -> tuple[PoseHRNet, ModelInfo]:
    """Any supported weights file -> an eval-mode model with strictly loaded weights, and its info."""
    imported = import_checkpoint(path)
    if imported.missing:
        raise UserError(f"{path}: {len(imported.missing)} weights missing, e.g. {imported.missing[:3]}")
    info = imported.info
    model = build_model(info.arch, LAYOUTS[info.layout].num_keypoints)
    try:
        model.load_state_dict(imported.state_dict, strict=True)
    except RuntimeError as e:
        raise UserError(f"{path}: weights do not fit {info.arch} with {info.layout} keypoints: {str(e)[:300]}") from None
    return model.eval(), info
