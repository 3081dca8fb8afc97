"""torchrun's environment, read in one place, and the process group that train and eval share.

torchrun (``torch.distributed.run``) starts one process per device and tells each, in its
environment: ``RANK`` and ``WORLD_SIZE`` (its place among all processes of all nodes),
``LOCAL_RANK`` (its device on this node) and ``TORCHELASTIC_RESTART_COUNT`` (how many times
the elastic agent has restarted the workers after one of them failed). Nothing else in
posecli reads those variables.

The backend follows the device a process runs on: NCCL for CUDA devices (where this torch
has it), gloo for the CPU. An eval on the CPU of a GPU machine therefore uses gloo.

Restarts. Since torch 2.5 the c10d rendezvous shares its agent's TCPStore with the workers,
and a restarted worker group finds the keys of the failed attempt still there: gloo then
connects to dead ports and NCCL can read the old unique id (pytorch/pytorch#135712; seen here
with torch 2.13). On one node, where the one agent's restart count is the same for every
worker, ``join`` keeps each attempt's keys apart under its own prefix. Across nodes the
counts differ (each agent counts its own restarts), so there torchrun must run with
``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``, which gives every attempt a fresh store.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist

from posecli.devices import parse_device
from posecli.errors import UserError, option


@dataclass(frozen=True)
class Launch:
    """What the launcher says about this process (all defaults: a plain ``python -m posecli``)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    restarts: int = 0  # TORCHELASTIC_RESTART_COUNT: this node's agent's restarts (other nodes may count fewer)
    torchrun: bool = False  # started by torchrun (LOCAL_RANK set), even with one process
    nodes: int = 1  # GROUP_WORLD_SIZE: torchrun agents (nodes) in the rendezvous
    max_restarts: int = 0  # TORCHELASTIC_MAX_RESTARTS
    agent_store: bool = False  # TORCHELASTIC_USE_AGENT_STORE: the workers share the rendezvous' TCPStore
    master: tuple[str, int] = ("", 0)  # MASTER_ADDR, MASTER_PORT: that store (or rank 0's)

    @property
    def restarts_collide(self) -> bool:
        """Whether a restart of this launch would meet the failed attempt's keys in a store shared across nodes."""
        return self.agent_store and self.nodes > 1 and self.max_restarts > 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def launch(env: Mapping[str, str] | None = None) -> Launch:
    """This process's place, from torchrun's variables (``env``: default ``os.environ``)."""
    env = os.environ if env is None else env

    def number(name: str, default: int) -> int:
        text = env.get(name, "")
        try:
            return int(text) if text else default
        except ValueError:
            raise UserError(f"environment variable {name}={text!r}: torchrun sets it to a whole number") from None

    return Launch(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0),
                  number("TORCHELASTIC_RESTART_COUNT", 0), "LOCAL_RANK" in env, number("GROUP_WORLD_SIZE", 1),
                  number("TORCHELASTIC_MAX_RESTARTS", 0), env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
                  (env.get("MASTER_ADDR", ""), number("MASTER_PORT", 0)))  # fmt: skip


def process_device(name: str | None, where: Launch | None = None) -> torch.device:
    """The device of this process: ``parse_device(name)``, except that under torchrun ``auto`` and
    ``cuda`` mean ``cuda:LOCAL_RANK`` (one GPU per process). ``cpu`` is kept; ``cuda:N`` is kept for
    one process and refused for several (they would share one GPU, which NCCL refuses)."""
    where = where or launch()
    device = parse_device(name)
    if device.type != "cuda" or not where.torchrun:
        return device
    if device.index is not None:
        if where.world > 1:
            raise UserError(f"device {name!r}: under torchrun each process takes the GPU of its LOCAL_RANK; "
                            f"give the device ({option('device')}) as cuda (or auto), or cpu")  # fmt: skip
        return device
    count = torch.cuda.device_count()
    if where.local_rank >= count:
        raise UserError(f"torchrun process {where.local_rank} of this node has no GPU of its own: this node has {count}; "
                        f"start at most {count} torchrun processes per node")  # fmt: skip
    return torch.device("cuda", where.local_rank)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices where this torch has it, else gloo (the CPU, or a torch built without NCCL)."""
    return "nccl" if device.type == "cuda" and dist.is_nccl_available() else "gloo"


def join(device: torch.device, where: Launch | None = None) -> tuple[int, int]:
    """Join torchrun's process group once, with ``device``'s backend; -> (rank, world size).

    One process (WORLD_SIZE 1) joins nothing: (0, 1). torchrun's variables give the rendezvous.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    where = where or launch()
    if where.world == 1:
        return 0, 1
    if device.type == "cuda":
        torch.cuda.set_device(device)  # before NCCL: its communicator binds to the current device
    backend, device_id = backend_for(device), device if device.type == "cuda" else None
    if where.agent_store and where.restarts and where.nodes > 1:
        raise UserError("torchrun restarted the workers, but the rendezvous store it shares across nodes still holds the "
                        "failed attempt's keys, so the process group cannot form again (pytorch/pytorch#135712): start "
                        "torchrun on every node with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1")  # fmt: skip
    if where.agent_store:  # one node: this attempt's keys under its own prefix (see the module's docstring)
        shared = dist.TCPStore(where.master[0], where.master[1], where.world, is_master=False)
        store = dist.PrefixStore(f"posecli/attempt_{where.restarts}", shared)
        dist.init_process_group(backend, store=store, rank=where.rank, world_size=where.world, device_id=device_id)
    else:
        dist.init_process_group(backend, device_id=device_id)  # torchrun's MASTER_ADDR/PORT, rank 0's store
    return dist.get_rank(), dist.get_world_size()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if active():
        dist.barrier()


def most(value: int, device: torch.device) -> int:
    """The largest ``value`` of any rank (e.g. restart counts, which each node's agent keeps for itself)."""
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device if backend_for(device) == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def from_main(value):
    """Rank 0's ``value`` on every rank (what rank 0 saw decides, e.g. whether a checkpoint exists)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
