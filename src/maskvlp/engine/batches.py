"""Deterministic batches: micro-batch ``d`` of a run is a pure function of (seed, d).

The global order is a fresh permutation per epoch; each rank takes a contiguous block of every
global micro-batch. Because nothing depends on iterator state, resuming at step ``s`` needs only
``s`` (the data position in the checkpoint), and any number of DataLoader workers gives the same
batches. An unreadable sample is replaced by a deterministic stand-in and counted, so the batch
size (and with it every rank's share) never changes.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from maskvlp.engine.distributed import DistInfo

MAX_REPLACEMENT_TRIES = 64


class DataError(RuntimeError):
    """The data is too broken to train on; the message says what was found."""


class StepBatches(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, micro_batch: int, seed: int, dist: DistInfo,
                 collate: Callable[[list[dict]], dict]):
        if len(dataset) < micro_batch:
            raise DataError(f"the dataset has {len(dataset)} samples, fewer than one batch ({micro_batch})")
        if micro_batch % dist.world_size:
            raise DataError(f"batch {micro_batch} does not split evenly over {dist.world_size} processes")
        self.dataset = dataset
        self.micro_batch = micro_batch
        self.seed = seed
        self.dist = dist
        self.collate = collate
        self.steps_per_epoch = len(dataset) // micro_batch

    def __len__(self) -> int:  # effectively unbounded; the trainer decides when to stop
        return 2**62

    def epoch_of(self, d: int) -> int:
        return d // self.steps_per_epoch

    def global_indices(self, d: int) -> np.ndarray:
        epoch, offset = divmod(d, self.steps_per_epoch)
        order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.dataset))
        return order[offset * self.micro_batch:(offset + 1) * self.micro_batch]

    def local_indices(self, d: int) -> np.ndarray:
        per_rank = self.micro_batch // self.dist.world_size
        return self.global_indices(d)[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]

    def _fetch(self, index: int) -> tuple[dict, int]:
        """The sample at ``index``, or a deterministic stand-in when it is unreadable; (item, bad count)."""
        n = len(self.dataset)
        for attempt in range(MAX_REPLACEMENT_TRIES):
            item = self.dataset[(index + attempt * 7919) % n]
            if item is not None:
                return item, attempt
        raise DataError(f"{MAX_REPLACEMENT_TRIES} samples in a row were unreadable near index {index}; "
                        "check the image paths and files (maskvlp evaluate/pretrain skip single bad files)")

    def __getitem__(self, d: int) -> dict:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch_of(d))
        items, bad = [], 0
        for i in self.local_indices(d):
            item, b = self._fetch(int(i))
            items.append(item)
            bad += b
        batch = self.collate(items)
        batch["num_bad"] = batch.get("num_bad", 0) + bad
        batch["num_seen"] = len(items) + bad
        return batch


class StepSampler(torch.utils.data.Sampler):
    """Yields micro-batch indices from ``start`` on; the trainer stops consuming when done."""

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end

    def __iter__(self):
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
