"""torch.distributed in one place: process-group setup from torchrun's environment and the gathers
the contrastive objectives need.

Every helper works unchanged in a single process (world size 1), so objectives never branch on
whether they run distributed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the process group torchrun describes in the environment; a no-op without torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


@torch.no_grad()
def all_gather_nograd(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order); no gradient flows back."""
    if world_size() == 1:
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank; gradients reach each rank's own slice (summed over ranks).

    With DDP averaging gradients, a loss that each rank computes over its local rows against these
    gathered columns gives the same update as one process over the whole batch (open_clip's
    ``local_loss`` + ``gather_with_grad``).
    """
    if world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), 0)


def local_slice(global_batch: int) -> slice:
    """Rows of a globally ordered batch that belong to this rank (contiguous blocks in rank order)."""
    size = global_batch // world_size()
    return slice(rank() * size, (rank() + 1) * size)


def mean_over_ranks_denominator(local_count: int) -> float:
    """Divide a rank's *sum* of per-item losses by this, so that DDP's gradient average equals the
    mean over every item of the global batch, even when ranks hold different numbers of items
    (masked tokens, valid negatives). In one process it is just ``local_count``."""
    if world_size() == 1:
        return float(max(local_count, 1))
    total = torch.tensor([float(local_count)])
    dist.all_reduce(total)
    return max(float(total) / world_size(), 1e-12)


def reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Average a scalar over ranks (for logging the global loss)."""
    if world_size() == 1:
        return x.detach()
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
