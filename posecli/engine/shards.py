"""What each of ``world * micro_batches`` shards computes: its samples of every batch, and its BatchNorm statistics.

One process with ``micro_batches`` k computes what k processes would, because shard j of a
batch is the same samples wherever it runs (``epoch_batches``), and each micro-batch keeps its
own BatchNorm running statistics, averaged at the same moments as ranks average theirs
(``RunningStats``). The loader (``make_loader``) is made once per run: its workers live through
every epoch and read each item as (epoch, index).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from posecli.data.dataset import fork_safe_opencv
from posecli.presets import Preset


def epoch_batches(n: int, seed: int, epoch: int, batch: int, shards: int) -> list[list[int]]:
    """The global batches of an epoch: a shuffle seeded by (seed, epoch), padded to a multiple of ``shards``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    order += order[: (-len(order)) % shards]  # every shard of every batch gets the same count (as MMPose's sampler)
    return [order[i : i + batch] for i in range(0, len(order), batch)]


def global_batch(preset: Preset, world: int) -> int:
    return preset.train.batch_size * world


class RunningStats:
    """BN running statistics as ``world * micro_batches`` ranks would keep them: one copy per micro-batch.

    Each micro-batch updates its own copy (as each rank updates its own); ``sync`` averages
    the copies and then the ranks (MMPose's SyncBuffersHook, at each epoch end). Averaging is
    linear in the statistics, so syncing also before each checkpoint changes nothing later.
    """

    def __init__(self, model: torch.nn.Module, micro_batches: int, world: int):
        self.buffers, self.world = list(model.buffers()), world
        self.copies = [[b.clone() for b in self.buffers] for _ in range(micro_batches)] if micro_batches > 1 else []

    def use(self, chunk: int) -> None:
        for b, saved in zip(self.buffers, self.copies[chunk] if self.copies else []):
            b.copy_(saved)

    def keep(self, chunk: int) -> None:
        for b, saved in zip(self.buffers, self.copies[chunk] if self.copies else []):
            saved.copy_(b)

    @torch.no_grad()
    def sync(self) -> None:
        for i, b in enumerate(self.buffers):
            if not b.is_floating_point():  # batch counters: equal everywhere
                continue
            if self.copies:
                b.copy_(torch.stack([c[i] for c in self.copies]).mean(0))
            if self.world > 1:
                dist.all_reduce(b, op=dist.ReduceOp.SUM)
                b.div_(self.world)
        for c in range(len(self.copies)):
            self.keep(c)


LOADER_PREFETCH = 2  # batches each worker keeps ready (torch's default); the worker count sets the rate (docs/scale.md)


class EpochChunks(torch.utils.data.Sampler):
    """The batch sampler of a run's one DataLoader: each pass yields the chunks set for it (``epoch_chunks``)
    as (epoch, index) keys, so workers that live through every epoch draw each sample's randomness from its own."""

    def __init__(self):
        self.chunks: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class EpochItems(torch.utils.data.Dataset):
    """``items[(epoch, i)]``: item i of the training set in that epoch, in whichever process reads it."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        self.dataset.set_epoch(epoch)
        return self.dataset[i]


def make_loader(dataset: torch.utils.data.Dataset, workers: int, device: torch.device) -> tuple[EpochChunks, torch.utils.data.DataLoader]:
    """The run's DataLoader: workers started once and kept (as MMPose's persistent_workers), pinned batches on CUDA."""
    chunks = EpochChunks()
    keep = {"persistent_workers": True, "prefetch_factor": LOADER_PREFETCH} if workers else {}
    if workers:
        fork_safe_opencv()
    loader = torch.utils.data.DataLoader(EpochItems(dataset), batch_sampler=chunks, num_workers=workers,
                                         pin_memory=device.type == "cuda", **keep)  # fmt: skip
    return chunks, loader
