"""The learning rate as a pure function of where training is, so a resumed run needs only (epoch, iteration).

MMPose's HRNet recipe: ``LinearLR(start_factor=0.001, end=500, by_epoch=False)`` times
``MultiStepLR(milestones=[170, 200], gamma=0.1)`` by epoch, on Adam with lr 5e-4.
"""

from __future__ import annotations

from bisect import bisect_right

from posecli.presets import TrainCfg


def base_lr(cfg: TrainCfg, total_batch: int) -> float:
    """The preset's lr, scaled by total batch / base_batch_size when ``scale_lr`` is set (MMPose's auto_scale_lr)."""
    return cfg.lr * total_batch / cfg.base_batch_size if cfg.scale_lr else cfg.lr


def warmup_factor(iteration: int, cfg: TrainCfg) -> float:
    """Linear from ``warmup_factor`` at iteration 0 to 1 at ``warmup_iters`` (MMPose LinearLR, by iteration)."""
    if cfg.warmup_iters <= 0 or iteration >= cfg.warmup_iters:
        return 1.0
    return cfg.warmup_factor + (1.0 - cfg.warmup_factor) * iteration / cfg.warmup_iters


def step_factor(epoch: int, cfg: TrainCfg) -> float:
    """``gamma`` once for every milestone already reached; epochs count from 0, so epoch 170 is the 171st."""
    return cfg.gamma ** bisect_right(sorted(cfg.milestones), epoch)


def lr_at(iteration: int, epoch: int, cfg: TrainCfg, lr: float | None = None) -> float:
    """The lr of global iteration ``iteration`` (from 0) in epoch ``epoch`` (from 0); ``lr`` defaults to ``cfg.lr``."""
    return (cfg.lr if lr is None else lr) * warmup_factor(iteration, cfg) * step_factor(epoch, cfg)
