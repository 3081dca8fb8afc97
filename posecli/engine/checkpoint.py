"""Training checkpoints: ``NAME.safetensors`` (weights for eval/predict) + ``NAME.state.pt`` (everything to resume).

The two are written as one unit: both to temporary files first (a full disk leaves the
previous pair), then renamed, the state first. The state holds the model's tensors too, and
both files carry the same random checkpoint id, so a run killed between the two renames
resumes exactly from the state and rewrites the weights file that lags behind
(``repair_weights``); the weights file is never newer than the state. The state is a plain
dict of tensors, numbers, strings and containers, read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from posecli.errors import UserError, option
from posecli.fileio import atomic_paths, write_bytes
from posecli.weights import ModelInfo, read_pth

FORMAT = "posecli-train-state/1"

# Settings that change what a step computes; a resumed run must keep them.
RUN_KEYS = ("batch_size", "world_size", "micro_batches", "sample", "precision", "sync_bn")
ID_KEY = "checkpoint_id"  # in the weights file's metadata and in the state: the same for a pair


@dataclass
class TrainState:
    """Where a run is: ``step`` batches of ``epoch`` done, ``iteration`` optimiser steps in all."""

    epoch: int = 0
    step: int = 0  # sampler position within the epoch, in global batches
    iteration: int = 0
    best_ap: float = -1.0
    best_epoch: int = -1
    log_records: int = 0  # lines of metrics.jsonl written up to this state


def state_path(workdir: Path, name: str) -> Path:
    return Path(workdir) / f"{name}.state.pt"


def weights_path(state_file: Path) -> Path:
    """``W/NAME.state.pt`` -> ``W/NAME.safetensors``, its pair."""
    return Path(state_file).with_name(Path(state_file).name.removesuffix(".state.pt") + ".safetensors")


def _weights_bytes(weights: dict[str, torch.Tensor], info: ModelInfo, checkpoint_id: str) -> bytes:
    # serialised in memory, written by fileio: safetensors' own file writer hides a full disk's OSError
    return safetensors_bytes(weights, metadata={**info.to_metadata(), ID_KEY: checkpoint_id})


def save_checkpoint(workdir: Path, name: str, model: torch.nn.Module, info: ModelInfo, optimizer, scaler,
                    state: TrainState, preset: dict, run: dict) -> None:  # fmt: skip
    """Write ``NAME.state.pt`` and ``NAME.safetensors`` as a pair: both complete, or the previous pair."""
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    checkpoint_id = secrets.token_hex(8)
    blob = {
        "format": FORMAT,
        "model": weights,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": {"torch": torch.get_rng_state(), "cuda": _cuda_rng()},
        "state": vars(state).copy(),
        "preset": preset,
        "run": run,
        ID_KEY: checkpoint_id,
    }
    data = _weights_bytes(weights, info, checkpoint_id)
    path = state_path(workdir, name)
    # Renamed state first; written weights first, so that even by modification time the weights are never newer.
    with atomic_paths([path, weights_path(path)]) as (state_tmp, weights_tmp):
        with open(weights_tmp, "wb") as f:
            f.write(data)
        with open(state_tmp, "wb") as f:
            torch.save(blob, f)


def load_state(path: Path) -> dict:
    """A ``.state.pt`` file, read without running any code from it."""
    path = Path(path)
    if not path.is_file():
        started = (path.parent / "metrics.jsonl").is_file() and path.name == "last.state.pt"
        why = (f"{path.parent} holds a run that stopped before its first checkpoint (nothing to resume); start it "
               f"again without resuming ({option('resume')})" if started else f"start a new run without resuming "
               f"({option('resume')}), or give the .state.pt file of the run ({option('resume_from')})")  # fmt: skip
        raise UserError(f"{path}: no training state to resume from; {why}")
    blob = read_pth(path, stand_ins=False)  # weights_only's rules; refuses code, names a damaged file
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise UserError(f"{path}: not a posecli training state (format {FORMAT} expected)")
    return blob


def pair_matches(state_file: Path, blob: dict) -> bool:
    """Whether ``NAME.safetensors`` beside the state is the one saved with it (states before the id: assumed)."""
    if ID_KEY not in blob:
        return True
    try:
        with safe_open(str(weights_path(state_file)), framework="pt") as f:
            return (f.metadata() or {}).get(ID_KEY) == blob[ID_KEY]
    except (SafetensorError, OSError):
        return False


def repair_weights(state_file: Path, blob: dict, info: ModelInfo) -> Path:
    """Rewrite ``NAME.safetensors`` from the state's model tensors (a run killed between the pair's renames)."""
    path = weights_path(state_file)
    write_bytes(path, _weights_bytes(blob["model"], info, blob.get(ID_KEY, "")))
    return path


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    diffs = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, f"{prefix}{k}.")
        elif _plain(a) != _plain(b):
            diffs.append(f"{prefix}{k}: {a!r} in the checkpoint, {b!r} now")
    return diffs


def _plain(value):
    """Tuples and lists compare equal (the preset dict has tuples, YAML gives lists)."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


# Preset keys that do not change the computation: they may differ when resuming.
FREE_KEYS = {"name", "description", "published", "test", "train.epochs", "train.workers", "train.checkpoint_interval",
             "data.val"}  # fmt: skip


def check_compatible(path: Path, blob: dict, preset: dict, run: dict) -> None:
    """UserError unless the checkpoint's preset and run settings are what this run would compute."""
    def strip(d: dict) -> dict:
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items() if k not in FREE_KEYS}
        for key in FREE_KEYS:
            section, _, field = key.partition(".")
            if field and isinstance(out.get(section), dict):
                out[section].pop(field, None)
        return out

    diffs = _differences(strip(blob["preset"]), strip(preset))
    diffs += _differences({k: blob["run"].get(k) for k in RUN_KEYS}, {k: run.get(k) for k in RUN_KEYS})
    if diffs:
        raise UserError(f"{path}: cannot resume this run with different settings: {'; '.join(diffs[:4])}. "
                        "Resume with the checkpoint's settings, or start a new run in a new folder")  # fmt: skip


def restore(blob: dict, model: torch.nn.Module, optimizer, scaler) -> TrainState:
    """Load weights, optimiser, scaler and RNG states from a state dict; -> where to continue."""
    model.load_state_dict(blob["model"], strict=True)
    optimizer.load_state_dict(blob["optimizer"])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])
    torch.set_rng_state(blob["rng"]["torch"])
    if blob["rng"]["cuda"] and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.set_rng_state(blob["rng"]["cuda"][0])  # this process's GPU (states of old runs list all, GPU 0 first)
    return TrainState(**blob["state"])


def _cuda_rng() -> list[torch.Tensor]:
    """The generator state of this process's current GPU, if it uses one. Never all GPUs': under torchrun
    that would open a CUDA context on every GPU of the node from every process."""
    return [torch.cuda.get_rng_state()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []


# Official ImageNet HRNet checkpoints (hrnet_w32-36af842e.pth) carry a classification head: not the pose backbone.
CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


@dataclass
class BackboneLoad:
    matched: int  # tensors copied into the backbone
    expected: int  # backbone tensors (without BN batch counters)
    ignored: list[str]  # checkpoint keys the backbone has no place for (classifier head, ...)
    mismatched: list[str]  # same key, different shape
    missing: list[str]  # backbone keys the checkpoint lacks


def load_backbone(model: torch.nn.Module, path: str | Path) -> BackboneLoad:
    """ImageNet HRNet weights (official key layout, or ``backbone.``/``module.`` prefixed) -> ``model.backbone``."""
    from posecli.weights import read_pth  # safe unpickling of .pth files

    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone weights ({option('init_backbone')}) {path}: no such file (posecli never downloads weights; give a local .pth)")
    raw = read_pth(path)
    tensors = raw.get("state_dict", raw) if isinstance(raw, dict) else None
    if not isinstance(tensors, dict) or not all(isinstance(v, torch.Tensor) for v in tensors.values()):
        raise UserError(f"backbone weights ({option('init_backbone')}) {path}: expected a dict of tensors (or one under 'state_dict')")
    own = model.backbone.state_dict()
    matched, ignored, mismatched = {}, [], []
    for key, value in tensors.items():
        name = key.removeprefix("module.").removeprefix("backbone.")
        if name.startswith(CLASSIFIER_PREFIXES) or name not in own:
            ignored.append(key)
        elif tuple(value.shape) != tuple(own[name].shape):
            mismatched.append(f"{name}: {tuple(value.shape)} in the file, {tuple(own[name].shape)} in the model")
        else:
            matched[name] = value
    wanted = [k for k in own if not k.endswith("num_batches_tracked")]
    missing = [k for k in wanted if k not in matched]
    if len([k for k in matched if k in wanted]) < 0.5 * len(wanted):
        example = mismatched[0] if mismatched else (ignored[0] if ignored else "the file is empty")
        raise UserError(f"backbone weights ({option('init_backbone')}) {path}: only {len(matched)} of the backbone's {len(wanted)} tensors match "
                        f"(e.g. {example}); is it an HRNet of the preset's width ({len(mismatched)} shape conflicts)?")  # fmt: skip
    model.backbone.load_state_dict(matched, strict=False)
    return BackboneLoad(len(matched), len(wanted), ignored, mismatched, missing)
