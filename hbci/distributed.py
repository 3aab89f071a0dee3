"""Distributed training helpers: where a process sits, joining the process group, the autograd-aware gather of
packs and the gradient all-reduce (see `hbci.train` for why the result equals one process on the global batch)."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import os
from contextlib import contextmanager

import torch

from hbci.runtime.errors import ConfigError

__all__ = ["Distributed", "init_distributed", "local_rank_zero_first", "gather_packs", "sync_gradients",
           "broadcast_parameters", "DIST_TIMEOUT"]

# Generous: the other processes wait at a barrier while rank 0 evaluates a whole split.
DIST_TIMEOUT = datetime.timedelta(hours=2)


@dataclasses.dataclass(frozen=True)
class Distributed:
    """Where this process sits: rank and world size (1 without torchrun), and its device."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def _device(name: str, local_rank: int) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no GPU is available")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> Distributed:
    """Read torchrun's RANK / WORLD_SIZE / LOCAL_RANK and join the process group (NCCL on GPUs, gloo on CPUs).
    Without them (or with WORLD_SIZE 1) this is a single process and nothing is initialised."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = _device(device, local_rank)
    if world <= 1:
        return Distributed(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=DIST_TIMEOUT)
    return Distributed(rank, world, local_rank, dev)


@contextmanager
def local_rank_zero_first(dist: Distributed, enabled: bool = True):
    """Local rank 0 runs the block first (filling a download or frame cache), the other processes after it."""
    if enabled and dist.active and dist.local_rank != 0:
        dist.barrier()
    try:
        yield
    finally:
        if enabled and dist.active and dist.local_rank == 0:
            dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums the gradient of the gathered tensor over the processes and
    hands each process its own slice (a reduce-scatter), as torch.distributed.nn.functional.all_gather does."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        world, rank = td.get_world_size(), td.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        td.all_gather(parts, tensor.contiguous())
        ctx.rank, ctx.rows = rank, tensor.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        grad = grad.contiguous()
        if td.get_backend() == "nccl":
            out = grad.new_empty((ctx.rows, *grad.shape[1:]))
            td.reduce_scatter_tensor(out, grad)
            return out
        grad = grad.clone()  # gloo has no reduce-scatter: all-reduce, then keep this process's rows
        td.all_reduce(grad)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_packs(text: dict, video: dict, dist: Distributed) -> tuple[dict, dict]:
    """Every process's text and video packs, concatenated along the batch in rank order; the gradient of each
    slice goes back to the process that owns it (summed over the processes, see the module docstring).

    All pack tensors travel as one flat [b, F] tensor, so a step makes one collective call.
    """
    if not dist.active:
        return text, video
    tensors = list(text.values()) + list(video.values())
    b = tensors[0].shape[0]
    dtype = functools.reduce(torch.promote_types, [t.dtype for t in tensors])
    flat = torch.cat([t.reshape(b, -1).to(dtype) for t in tensors], 1)
    gathered = _GatherWithGrad.apply(flat)
    parts = gathered.split([t[0].numel() for t in tensors], 1)
    out = [part.reshape(-1, *t.shape[1:]).to(t.dtype) for part, t in zip(parts, tensors)]
    return dict(zip(text, out[:len(text)])), dict(zip(video, out[len(text):]))


def sync_gradients(model: torch.nn.Module, dist: Distributed, bucket_bytes: int = 32 << 20) -> None:
    """Average the gradients over the processes, in flat buckets (one all-reduce per bucket, not per tensor).

    A parameter without a gradient has none on every process (the processes run the same graph), so it is
    skipped everywhere and keeps None, as in a single process (AdamW then leaves it untouched).
    """
    if not dist.active:
        return
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    buckets: list[list[torch.Tensor]] = []
    size = 0
    for grad in grads:
        if not buckets or size + grad.numel() * grad.element_size() > bucket_bytes or buckets[-1][0].dtype != grad.dtype:
            buckets.append([])
            size = 0
        buckets[-1].append(grad)
        size += grad.numel() * grad.element_size()
    for bucket in buckets:
        flat = torch.cat([g.reshape(-1) for g in bucket])
        torch.distributed.all_reduce(flat)
        flat /= dist.world
        for grad, part in zip(bucket, flat.split([g.numel() for g in bucket])):
            grad.copy_(part.view_as(grad))


def broadcast_parameters(model: torch.nn.Module, dist: Distributed) -> None:
    """Start every process from rank 0's weights (seeded inits agree already; this makes it a fact)."""
    if dist.active:
        for tensor in model.state_dict().values():
            torch.distributed.broadcast(tensor, 0)
