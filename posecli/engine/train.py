"""``posecli train``: one preset end to end, on CPU, one GPU, or many with torchrun (DDP).

    setup     preset (+ sample settings), workdir, model, optimiser, resume state
    epoch     deterministic shuffle of (seed, epoch) -> global batches -> this rank's shards
    step      micro-batches (forward, MSE loss, backward), one Adam step, lr from schedule.lr_at
    epoch end BN running statistics averaged over ranks (and micro-batches), validation (COCO AP), best / last checkpoints

A batch of the global order is split into ``world * micro_batches`` shards; shard j is
what rank j would get with that many ranks, so 1 process with micro_batches k computes
the same steps as k processes (with the same threads per process: docs/scale.md). Resuming
needs only (epoch, step, iteration): data randomness is (seed, epoch, i), the lr a pure
function, the sampler position the step. Under torchrun a restarted worker group resumes by
itself from the folder's last checkpoint (``restart_resume``); only rank 0 writes checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from posecli.data.dataset import build_train_dataset
from posecli.choices import Precision
from posecli.engine import distributed
from posecli.engine.checkpoint import (
    TrainState,
    check_compatible,
    load_backbone,
    load_state,
    pair_matches,
    repair_weights,
    restore,
    save_checkpoint,
    state_path,
)
from posecli.engine.curves import MetricsLog
from posecli.data.images import describe_bad
from posecli.engine.evaluate import eval_data, evaluate, image_problems
from posecli.engine.inference import InferenceSettings, Predictor
from posecli.engine.schedule import base_lr, lr_at
from posecli.engine.shards import EpochChunks, RunningStats, epoch_batches, global_batch, make_loader
from posecli.errors import UserError, option
from posecli.fileio import check_folder, write_text
from posecli.layouts import get_layout
from posecli.models.hrnet import build_model
from posecli.models.topdown import normalise
from posecli.presets import Preset, apply_overrides, load_preset, preset_from_dict
from posecli.weights import ModelInfo

Event = Callable[[dict], None]  # every record of metrics.jsonl, plus "start", "epoch", "note" and "done" events

# The bundled sample: a narrow HRNet on 64x96 crops, no rotation or half-body crops, 900 steps, in which
# the 4 validation images (also training images) go from AP 0 to about 0.4 (its time: README, docs/pictures.md).
SAMPLE_SETTINGS = ["model.arch=hrnet-small", "model.input_size=[64,96]", "model.heatmap_size=[16,24]",
                   "train.epochs=300", "train.batch_size=8", "train.lr=2e-3", "train.warmup_iters=20",
                   "train.warmup_factor=0.1", "train.milestones=[240,280]", "train.gamma=0.3", "train.workers=0",
                   "augment.rotate_prob=0", "augment.half_body_prob=0", "data.val.interval=50"]  # fmt: skip


@dataclass(frozen=True)
class RunOptions:
    """What the command line says; when resuming, what it leaves out comes from the checkpoint (``resumed``)."""

    workdir: Path
    data_root: Path | None = None
    sample: bool = False
    resume: Path | None = None  # a .state.pt file (the CLI turns a bare resume into workdir/last.state.pt)
    init_backbone: Path | None = None
    amp: bool = False  # mixed precision in the device's usual type: float16 on CUDA, bfloat16 on CPU
    device: str | None = None  # cpu, cuda, cuda:N; default cuda if available (under torchrun: cuda:LOCAL_RANK)
    micro_batches: int | None = None  # gradient accumulation: each batch in this many forward/backward passes (1)
    checkpoint_iters: int | None = None  # also save `last` every this many iterations (0: only at epoch ends)
    skip_bad_images: bool = False  # leave out images that fail the check before epoch 1 (else stop there)
    channels_last: bool = True  # faster convolutions on CPU, same training (docs/scale.md)
    precision: Precision | None = None  # autocast type of the forward pass (fp32: none); None: fp32, or amp's
    compile: bool | None = None  # torch.compile the network for training (default off: docs/scale.md)
    sync_bn: bool | None = None  # SyncBatchNorm across ranks (CUDA); off as in MMPose's HRNet configs

    def resumed(self, run: dict | None, device: torch.device) -> "RunOptions":
        """Unset options from the checkpoint's run settings (``run``; None for a new run: the defaults)."""
        run = run or {}
        root = self.data_root or (Path(run["data_root"]) if run.get("data_root") else None)
        precision = self.precision or (amp_precision(device) if self.amp else None) or run_precision(run, device)
        return dataclasses.replace(
            self, data_root=root, sample=self.sample or bool(run.get("sample")), precision=Precision(precision),
            micro_batches=self.micro_batches or run.get("micro_batches", 1),
            checkpoint_iters=run.get("checkpoint_iters", 0) if self.checkpoint_iters is None else self.checkpoint_iters,
            skip_bad_images=self.skip_bad_images or bool(run.get("skip_bad_images")),
            compile=bool(run.get("compile")) if self.compile is None else self.compile,
            sync_bn=bool(run.get("sync_bn")) if self.sync_bn is None else self.sync_bn,
        )  # fmt: skip


def amp_precision(device: torch.device) -> Precision:
    """What ``amp`` means on ``device``: float16 with a GradScaler on CUDA (MMPose's AmpOptimWrapper), bfloat16 elsewhere."""
    return Precision.FP16 if device.type == "cuda" else Precision.BF16


def run_precision(run: dict, device: torch.device) -> Precision:
    """A checkpoint's precision; states written before ``precision`` say only ``amp`` (the device's type)."""
    if run.get("precision"):
        return Precision(run["precision"])
    return amp_precision(device) if run.get("amp") else Precision.FP32


@dataclass
class TrainResult:
    workdir: Path
    state: TrainState
    last_metrics: dict = field(default_factory=dict)


def make_adam(params, lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """Adam, as MMPose's recipe, fused into one kernel for all parameters (docs/benchmarks.md)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)


def keypoint_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """MMPose's KeypointMSELoss: mean of (pred - target)^2 * w_k; (B, K, H, W), (B, K) or None (use_target_weight off)."""
    if weights is None:
        return ((pred - target) ** 2).mean()
    return ((pred - target) ** 2 * weights[:, :, None, None]).mean()


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    restarts: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str | None) -> Dist:
    """One process, or one of torchrun's (WORLD_SIZE > 1): one GPU per process (NCCL), or the CPU (gloo)."""
    where = distributed.launch()
    dev = distributed.process_device(device, where)
    rank, world = distributed.join(dev, where)
    return Dist(rank, world, dev, where.restarts)


def run_preset(name: str | None, overrides: list[str], sample: bool = False, resume: Path | None = None) -> Preset:
    """The preset a run trains, from what its user names: a preset, overrides, the sample.

    A new run: the named preset (bundled, or a .yaml), the bundled sample's settings first when ``sample``
    (``SAMPLE_SETTINGS``), then ``overrides``. Resuming (``resume``: a .state.pt) without a name: the
    checkpoint's preset with ``overrides`` (``train.epochs=N`` extends the run); with a name, sample mode is
    also the checkpoint's. ``train`` refuses a preset that would change what the checkpoint computes."""
    blob = load_state(resume) if resume is not None else None
    if blob is not None:
        if name is None:
            return preset_from_dict(apply_overrides(_lists(blob["preset"]), list(overrides)))
        sample = sample or bool(blob["run"].get("sample"))
    if name is None:
        raise UserError(f"no preset ({option('preset')}): name one of the bundled presets (coco, coco-aic-merge, coco-aic-combine) or a .yaml")
    return load_preset(name, (SAMPLE_SETTINGS if sample else []) + list(overrides))


def _lists(value):
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    return [_lists(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_workdir(workdir: Path, resuming: bool) -> None:
    """A new run needs a folder without another run's checkpoint or log (one that stopped before training
    its first step, with an empty log, may be started again)."""
    log = workdir / "metrics.jsonl"
    if not resuming and (state_path(workdir, "last").exists() or (log.is_file() and log.stat().st_size > 0)):
        raise UserError(f"{workdir} holds another run (last.state.pt / metrics.jsonl); continue it ({option('resume')}), "
                        f"or give a new run folder ({option('workdir')})")  # fmt: skip


def restart_resume(opts: RunOptions, d: Dist, log: Event) -> RunOptions:
    """After torchrun's agent restarted the workers (TORCHELASTIC_RESTART_COUNT > 0), the same command
    line continues the run from the last checkpoint in its folder: nothing to add on restart, and a
    preset or setting that differs from the checkpoint's is refused as on any resume. Rank 0's view of
    the folder decides for every rank (the folder must be one that every node sees)."""
    last, restarts = state_path(opts.workdir, "last"), distributed.most(d.restarts, d.device)
    if opts.resume is not None or restarts == 0 or not distributed.from_main(last.is_file()):
        return opts  # a first attempt, a resume asked for, or an attempt that died before its step-0 checkpoint
    log({"kind": "note", "text": f"torchrun restarted the workers ({restarts}): continuing from {last}"})
    return dataclasses.replace(opts, resume=last)


def validate(model: torch.nn.Module, info: ModelInfo, preset: Preset, opts: RunOptions, d: Dist, progress=None) -> dict:
    """COCO AP of a copy of the model (the training model stays in train mode); all ranks take part."""
    data = eval_data(preset, opts.data_root, sample=opts.sample)
    ann, images, boxes, t = data.ann, data.images, data.boxes, preset.test
    settings = InferenceSettings(device=str(d.device), flip=t.flip, decode=t.decode, batch_size=t.batch_size,
                                 shift_heatmap=t.shift_heatmap)  # fmt: skip
    predictor = Predictor.from_model(copy.deepcopy(model), info, settings, keep=t.output_keypoints)
    # An image that turns bad after the check at setup is left out with a warning, not the end of the run.
    result = evaluate(predictor, ann, images, boxes, nms=t.nms, nms_thr=t.nms_thr, keypoint_score_thr=t.keypoint_score_thr,
                      score_mode=t.score_mode, skip_bad_images=True, progress=progress)  # fmt: skip
    warnings = {"warnings": result.warnings} if result.warnings else {}
    return dict(result.metrics, boxes="detector" if boxes else "ground truth", **warnings)


def check_validation_images(preset: Preset, opts: RunOptions, log: Event) -> None:
    """The validation images, checked before epoch 1 as eval checks them: bad ones stop the run, or are noted."""
    data = eval_data(preset, opts.data_root, sample=opts.sample)  # also: a missing detection file stops the run here
    bad, total = image_problems(data.ann, data.images, data.boxes)
    if bad:
        message = describe_bad(bad, total, "validation images")
        if not opts.skip_bad_images:
            raise UserError(f"{message}. Replace them, or skip them ({option('skip_bad_images')}) to train and validate without them")
        log({"kind": "note", "text": f"{message}; validation leaves them out, with their ground truth"})


AUTOCAST = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def _autocast(precision: Precision, device: torch.device):
    """The forward pass in ``precision`` (autocast keeps reductions and the loss in float32), or as it is."""
    if precision == Precision.FP32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=AUTOCAST[precision])


def check_speed_options(opts: RunOptions, d: Dist, log: Event) -> None:
    """Precision and SyncBN against the device, before anything is built."""
    if opts.precision == Precision.FP16 and d.device.type != "cuda":
        raise UserError(f"fp16 training needs a CUDA device (float16 with a GradScaler); on {d.device} use bf16 or fp32")
    if opts.precision == Precision.BF16 and d.device.type == "cpu":
        log({"kind": "note", "text": "bf16 on CPU: fast only with AMX or AVX512-BF16 (the training benchmark measures it)"})
    if opts.sync_bn and d.world > 1 and d.device.type != "cuda":
        raise UserError(f"synchronised BatchNorm ({option('sync_bn')}) synchronises BatchNorm across GPUs (torch's SyncBatchNorm runs on CUDA only); on CPU "
                        "train without it: BatchNorm statistics are averaged across ranks at each epoch end, as MMPose does")  # fmt: skip
    if opts.sync_bn and d.world == 1:
        log({"kind": "note", "text": f"synchronised BatchNorm ({option('sync_bn')}) in one process: nothing to synchronise, plain BatchNorm"})


@dataclass
class Run:
    """Everything a run holds between steps."""

    preset: Preset
    opts: RunOptions
    d: Dist
    dataset: torch.utils.data.Dataset
    info: ModelInfo
    model: torch.nn.Module  # the module itself; ``net`` is it or its DDP wrapper
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    state: TrainState
    stats: RunningStats
    metrics: MetricsLog
    lr0: float
    settings: dict  # what a resumed run must keep (checkpoint.RUN_KEYS)
    chunks: EpochChunks = field(default_factory=EpochChunks)
    loader: torch.utils.data.DataLoader | None = None

    def save(self, name: str, sync: bool = True) -> None:
        if sync:
            self.stats.sync()
        if self.d.main:  # only rank 0 writes; the others wait, so a rank that fails later never loses this one
            self.state.log_records = self.metrics.count
            save_checkpoint(self.opts.workdir, name, self.model, self.info, self.optimizer, self.scaler, self.state,
                            self.preset.to_dict(), self.settings)  # fmt: skip
        distributed.barrier()


def setup(preset: Preset, opts: RunOptions, log: Event) -> Run:
    """Preset, data, model (seeded init, or ImageNet backbone), optimiser; restored when resuming.

    Everything that can be checked is checked here, before the first step: device, values, the run folder.
    """
    if opts.micro_batches is not None and opts.micro_batches < 1:
        raise UserError(f"micro-batches {opts.micro_batches}: must be >= 1")
    if opts.checkpoint_iters is not None and opts.checkpoint_iters < 0:
        raise UserError(f"checkpoint every {opts.checkpoint_iters} iterations: must be >= 0 (0: at epoch ends only)")
    d = setup_distributed(opts.device)
    workdir = Path(opts.workdir)
    check_folder(workdir)
    if distributed.launch().restarts_collide:
        log({"kind": "note", "text": "torchrun shares its rendezvous store across nodes: a restart would find the failed "
             "attempt's keys (pytorch/pytorch#135712); set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for restarts to work"})  # fmt: skip
    opts = restart_resume(opts, d, log)
    blob = load_state(opts.resume) if opts.resume else None
    if blob is not None:
        blob["run"].setdefault("precision", str(run_precision(blob["run"], d.device)))  # states from before these keys
        blob["run"].setdefault("sync_bn", False)
    opts = opts.resumed(blob["run"] if blob is not None else None, d.device)
    check_speed_options(opts, d, log)
    cfg = preset.train
    if cfg.batch_size % opts.micro_batches:
        raise UserError(f"batch size {cfg.batch_size} does not split into {opts.micro_batches} equal micro-batches")
    settings = {"batch_size": cfg.batch_size, "world_size": d.world, "micro_batches": opts.micro_batches,
                "sample": opts.sample, "precision": str(opts.precision), "sync_bn": opts.sync_bn, "compile": opts.compile,
                "data_root": str(opts.data_root) if opts.data_root else None, "checkpoint_iters": opts.checkpoint_iters,
                "skip_bad_images": opts.skip_bad_images}  # fmt: skip
    if blob is not None:
        check_compatible(opts.resume, blob, preset.to_dict(), settings)
        done = blob["state"]["epoch"]
        if cfg.epochs < done:
            raise UserError(f"{opts.resume}: the run has done {done} epochs; it cannot be cut to {cfg.epochs} "
                            f"(resume it to {done} or more epochs, or evaluate its weights)")  # fmt: skip
    check_workdir(workdir, blob is not None)
    distributed.barrier()  # every rank has looked at the folder before rank 0 writes into it
    dataset = build_train_dataset(preset, opts.data_root, cfg.seed, sample=opts.sample, skip_bad_images=opts.skip_bad_images,
                                  note=lambda text: log({"kind": "note", "text": text}))  # fmt: skip
    check_validation_images(preset, opts, log)
    layout = get_layout(preset.model.layout)
    info = ModelInfo(preset.model.arch, layout.name, tuple(preset.model.input_size), tuple(preset.model.heatmap_size),
                     preset=preset.to_dict())  # fmt: skip

    torch.manual_seed(cfg.seed)
    model = build_model(preset.model.arch, layout.num_keypoints)
    init = opts.init_backbone or (Path(preset.model.init_backbone) if preset.model.init_backbone else None)
    if init and blob is None:
        loaded = load_backbone(model, init)
        log({"kind": "note", "text": f"backbone from {init}: {loaded.matched}/{loaded.expected} tensors, "
             f"{len(loaded.ignored)} ignored (classifier), {len(loaded.mismatched)} shape conflicts"})  # fmt: skip
    model = model.to(d.device)
    if opts.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if opts.sync_bn and d.world > 1:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)  # same parameters and buffers, same keys
    optimizer = make_adam(model.parameters(), cfg.lr, cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda") if opts.precision == Precision.FP16 else None
    state = restore(blob, model, optimizer, scaler) if blob is not None else TrainState()
    if blob is not None and d.main and not pair_matches(opts.resume, blob):
        repaired = repair_weights(opts.resume, blob, info)
        log({"kind": "note", "text": f"{repaired} was not the one saved with {opts.resume.name} (a run stopped "
             "while saving): rewritten from it"})  # fmt: skip
    # Each rank keeps its own BN statistics between syncs (RunningStats), as MMPose's DDP wrapper does.
    net = DistributedDataParallel(model, forward_sync_buffers=False) if d.world > 1 else model
    net = torch.compile(net) if opts.compile else net  # DDP first: dynamo then splits the graph at its buckets
    metrics = MetricsLog(workdir / "metrics.jsonl", enabled=d.main, keep=state.log_records if blob else 0,
                         purge_step=state.iteration + 1 if blob else None)  # the first iteration this run logs
    if d.main:
        write_text(workdir / "preset.yaml", yaml.safe_dump(_lists(preset.to_dict()), sort_keys=False))
    lr0 = base_lr(cfg, global_batch(preset, d.world))
    log({"kind": "start", "preset": preset.name, "arch": preset.model.arch, "instances": len(dataset),
         "world": d.world, "device": str(d.device), "global_batch": global_batch(preset, d.world), "lr": lr0,
         "epoch": state.epoch, "epochs": cfg.epochs, "step": state.step, "resumed": blob is not None})  # fmt: skip
    stats = RunningStats(model, opts.micro_batches, d.world)
    chunks, loader = make_loader(dataset, cfg.workers, d.device)
    r = Run(preset, opts, d, dataset, info, model, net, optimizer, scaler, state, stats, metrics, lr0, settings, chunks, loader)
    if blob is None:
        # A checkpoint of step 0: a full disk or an unwritable folder shows now, not after the first
        # epoch, and a run killed at any point can be resumed. The BN copies are all equal yet: no sync.
        r.save("last", sync=False)
    return r


def train_step(r: Run, parts: list[dict], lr: float) -> float:
    """One optimiser step over this rank's micro-batches -> the loss, averaged over micro-batches and ranks."""
    for group in r.optimizer.param_groups:
        group["lr"] = lr
    loss_sum, device = torch.zeros((), device=r.d.device), r.d.device
    for c, part in enumerate(parts):
        r.stats.use(c)
        reduce_now = r.d.world == 1 or c == len(parts) - 1  # DDP all-reduces gradients on the last backward only
        with contextlib.nullcontext() if reduce_now else r.net.no_sync():
            # From pinned memory (the loader's, on CUDA) the copies overlap with the work queued before them.
            x = normalise(part["image"].to(device, non_blocking=True), r.info.mean, r.info.std)
            if r.opts.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(r.opts.precision, device):
                pred = r.net(x)
            weights = part["weights"].to(device, non_blocking=True) if r.preset.train.use_target_weight else None
            target = part["heatmaps"].to(device, non_blocking=True)
            loss = keypoint_mse(pred.float(), target, weights) / len(parts)
            (r.scaler.scale(loss) if r.scaler else loss).backward()
        r.stats.keep(c)
        loss_sum += loss.detach()
    if r.scaler:
        r.scaler.step(r.optimizer)
        r.scaler.update()
    else:
        r.optimizer.step()
    r.optimizer.zero_grad(set_to_none=True)
    if r.d.world > 1:
        dist.all_reduce(loss_sum)
        loss_sum /= r.d.world
    return loss_sum.item()


def first_step(r: Run, parts: list[dict], lr: float) -> float:
    """``train_step``, the first of a compiled run's process: where inductor compiles, and may fail to."""
    try:
        return train_step(r, parts, lr)
    except Exception as e:  # inductor raises many kinds (no C++ compiler, an op it cannot lower): all mean "stay eager"
        if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
            raise
        raise UserError(f"torch.compile could not build the training step ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:200]}); train without compiling ({option('compile')})") from e  # fmt: skip


def epoch_chunks(r: Run, epoch: int) -> int:
    """Set the loader's next pass to this rank's micro-batches of ``epoch`` from the current step on; -> steps in the epoch."""
    world, micro = r.d.world, r.opts.micro_batches
    shards = world * micro
    batches = epoch_batches(len(r.dataset), r.preset.train.seed, epoch, global_batch(r.preset, world), shards)
    mine = range(r.d.rank * micro, (r.d.rank + 1) * micro)  # shard j = what rank j of `shards` ranks would get
    r.chunks.chunks = [[(epoch, i) for i in batch[j::shards]] for batch in batches[r.state.step :] for j in mine]
    return len(batches)


def train(preset: Preset, opts: RunOptions, log: Event = lambda e: None) -> TrainResult:
    """Train ``preset`` (``run_preset`` resolves a name, overrides and the sample; resuming, it must be the
    checkpoint's); writes the run folder (see the CLI's help); -> the final state."""
    log = log if distributed.launch().main else (lambda e: None)  # only rank 0 reports
    r = setup(preset, opts, log)
    opts = r.opts  # with what a resumed run took from its checkpoint
    state, cfg, micro = r.state, r.preset.train, opts.micro_batches
    step_fn = first_step if opts.compile else train_step
    while state.epoch < cfg.epochs:
        epoch = state.epoch
        steps = epoch_chunks(r, epoch)
        log({"kind": "epoch", "epoch": epoch, "epochs": cfg.epochs, "steps": steps, "step": state.step})
        it, tick = iter(r.loader), time.perf_counter()
        for step in range(state.step, steps):
            parts = [next(it) for _ in range(micro)]
            for text in (t for part in parts for t in r.dataset.bad_image_notes(part)):
                log({"kind": "note", "text": text})  # an image that turned bad: its samples are replaced
            data_time = time.perf_counter() - tick
            lr = lr_at(state.iteration, epoch, cfg, r.lr0)
            loss = step_fn(r, parts, lr)
            step_fn = train_step
            state.step, state.iteration = step + 1, state.iteration + 1
            r.metrics.write({"kind": "train", "epoch": epoch, "step": step, "iteration": state.iteration, "loss": loss,
                             "lr": lr, "data_time": round(data_time, 4), "time": round(time.perf_counter() - tick, 4)}, log)  # fmt: skip
            if opts.checkpoint_iters and state.iteration % opts.checkpoint_iters == 0:
                r.metrics.write({"kind": "checkpoint", "name": "last", "epoch": epoch, "step": state.step,
                                 "iteration": state.iteration}, log)  # fmt: skip
                r.save("last")
            tick = time.perf_counter()
        end_epoch(r, epoch, log)
    log({"kind": "done", "workdir": str(opts.workdir), "best_ap": state.best_ap, "best_epoch": state.best_epoch})
    return TrainResult(Path(opts.workdir), state, r.metrics.last_val)


def plain_copy(r: Run) -> torch.nn.Module:
    """The model with plain BatchNorm layers (for validation of a SyncBatchNorm run: folding finds only those)."""
    net = build_model(r.preset.model.arch, get_layout(r.info.layout).num_keypoints)
    net.load_state_dict(r.model.state_dict())
    return net.to(r.d.device).train()


def end_epoch(r: Run, epoch: int, log: Event) -> None:
    """BN statistics synced, validation when due, then best / last checkpoints."""
    state, cfg, last_epoch = r.state, r.preset.train, epoch + 1 == r.preset.train.epochs
    r.stats.sync()
    state.epoch, state.step = epoch + 1, 0
    if (epoch + 1) % r.preset.data.val.interval == 0 or last_epoch:
        log({"kind": "validating", "epoch": epoch})
        result = validate(plain_copy(r) if r.opts.sync_bn and r.d.world > 1 else r.model, r.info, r.preset, r.opts, r.d)
        for text in result.pop("warnings", []):
            log({"kind": "note", "text": text})
        improved = result["AP"] > state.best_ap
        if improved:
            state.best_ap, state.best_epoch = result["AP"], epoch
        r.metrics.write(dict(kind="val", epoch=epoch, iteration=state.iteration, best=improved, **result), log)
        if improved:
            r.save("best")
        r.metrics.draw()
    if (epoch + 1) % cfg.checkpoint_interval == 0 or last_epoch or r.opts.checkpoint_iters:
        r.metrics.write({"kind": "checkpoint", "name": "last", "epoch": epoch, "step": 0, "iteration": state.iteration}, log)
        r.save("last")
