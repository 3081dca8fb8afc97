"""Weights: safetensors files that carry their meaning; MMPose and official HRNet imports.

A posecli weights file is safetensors with string metadata: ``arch``, ``layout``,
``keypoint_names`` (JSON), ``input_size``/``heatmap_size`` (JSON (w, h)),
``mean``/``std`` (JSON), and optionally ``preset`` (the resolved preset, JSON).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as safetensors_bytes

from posecli.errors import UserError
from posecli.fileio import write_bytes
from posecli.layouts import LAYOUTS, layout_from_names
from posecli.models.hrnet import ARCHS, PoseHRNet, build_model
from posecli.models.topdown import MEAN_RGB, STD_RGB


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
        def js(key, default):
            return tuple(json.loads(meta[key])) if key in meta else default

        preset = json.loads(meta["preset"]) if "preset" in meta else None
        return cls(meta["arch"], meta["layout"], js("input_size", (192, 256)), js("heatmap_size", (48, 64)),
                   js("mean", MEAN_RGB), js("std", STD_RGB), preset)  # fmt: skip


def save_weights(path: str | Path, state_dict: dict[str, torch.Tensor], info: ModelInfo) -> None:
    """Atomic safetensors write; tensors are made contiguous and detached first."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    # serialised in memory and written by fileio: safetensors' own writer turns a full disk into a SafetensorError
    write_bytes(path, safetensors_bytes(tensors, metadata=info.to_metadata()))


# MMPose checkpoints keep numpy arrays in meta['dataset_meta']; allow exactly those types.
def _numpy_safe_globals() -> list:
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    dtypes = [type(np.dtype(t)) for t in ("uint8", "int64", "int32", "float32", "float64", "bool")]
    return [np.ndarray, np.dtype, _reconstruct, *dtypes]


def _numpy_aliases() -> list:
    # Checkpoints pickled with numpy 1.x name 'numpy.core.multiarray._reconstruct'.
    import numpy.core.multiarray as old  # noqa: F401  (the module path the pickle names)

    return [(old._reconstruct, "numpy.core.multiarray._reconstruct")]


def read_pth(path: str | Path) -> dict:
    """A .pth checkpoint with ``weights_only=True``: tensors, containers and plain numpy arrays only."""
    with torch.serialization.safe_globals(_numpy_safe_globals() + _numpy_aliases()):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # pickle refuses anything else; say so rather than run it
            raise UserError(f"{path}: cannot be read safely as a checkpoint ({str(e).splitlines()[0]}). "
                            "posecli never unpickles arbitrary objects; convert it with a trusted tool first.") from None  # fmt: skip


def official_hrnet_to_mmpose(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official HRNet-repo pose checkpoint keys -> MMPose's: backbone prefix, head.final_layer."""
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^module\.", "", key)
        out["head." + key if key.startswith("final_layer.") else "backbone." + key] = value
    return out


def _unwrap(ckpt) -> tuple[dict[str, torch.Tensor], dict]:
    if isinstance(ckpt, dict) and "state_dict" in ckpt:
        return ckpt["state_dict"], ckpt.get("meta") or {}
    if isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return ckpt, {}
    raise UserError("checkpoint holds neither a 'state_dict' nor a plain dict of tensors")


def guess_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """The ARCHS entry whose backbone the checkpoint fits best: no shape conflicts, most keys present."""
    have = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith("backbone.")}
    best, best_share = None, 0.9  # tolerate a few missing keys; they are reported later
    for name, cfg in ARCHS.items():
        with torch.device("meta"):
            wanted = {k: tuple(v.shape) for k, v in PoseHRNet(cfg, 1).state_dict().items() if k.startswith("backbone.")}
        if any(k in have and have[k] != shape for k, shape in wanted.items()):
            continue
        share = sum(k in have for k in wanted) / len(wanted)
        if share > best_share:
            best, best_share = name, share
    if best is None:
        raise UserError(f"the checkpoint's backbone matches none of the known architectures ({', '.join(ARCHS)})")
    return best


def guess_layout(state_dict: dict[str, torch.Tensor], meta: dict) -> str:
    names = (meta.get("dataset_meta") or {}).get("keypoint_id2name")
    if names:
        return layout_from_names([names[i] for i in range(len(names))]).name
    k = state_dict["head.final_layer.weight"].shape[0]
    for name, layout in LAYOUTS.items():
        if layout.num_keypoints == k:
            return name
    raise UserError(f"the head predicts {k} keypoints, which fits no known layout; pass --layout")


@dataclass
class Imported:
    state_dict: dict[str, torch.Tensor]
    info: ModelInfo
    missing: list[str]
    unexpected: list[str]


def import_checkpoint(path: str | Path, arch: str | None = None, layout: str | None = None) -> Imported:
    """Read a .pth (MMPose or official HRNet) or .safetensors file into posecli's key names."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    state_dict, meta = _unwrap(read_pth(path))
    if not any(k.startswith("backbone.") for k in state_dict):
        state_dict = official_hrnet_to_mmpose(state_dict)
    if "head.final_layer.weight" not in state_dict:
        raise UserError(f"{path}: no heatmap head (head.final_layer.weight); is this a pose checkpoint?")
    arch = arch or guess_arch(state_dict)
    layout = layout or guess_layout(state_dict, meta)
    info = ModelInfo(arch, layout)
    expected = build_model(arch, LAYOUTS[layout].num_keypoints).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    kept = {k: v for k, v in state_dict.items() if k in expected}
    return Imported(kept, info, missing, unexpected)


def _read_safetensors(path: Path) -> Imported:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UserError(f"{path}: not a readable safetensors file ({e})") from None
    if "arch" not in meta or "layout" not in meta:
        raise UserError(f"{path}: safetensors file without posecli metadata (arch, layout); "
                        "convert the original checkpoint with `posecli convert weights`")  # fmt: skip
    return Imported(state_dict, ModelInfo.from_metadata(meta), [], [])


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
