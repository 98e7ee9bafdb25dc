"""Deterministic batches: micro-batch ``d`` of a run is a pure function of (seed, d).

The global order is a fresh permutation per epoch; each rank takes a contiguous block of every
global micro-batch. Because nothing depends on iterator state, resuming at step ``s`` needs only
``s`` (the data position in the checkpoint), and any number of DataLoader workers gives the same
batches. An unreadable sample is replaced by a deterministic stand-in and counted, so the batch
size (and with it every rank's share) never changes; the count is of sampled entries, so
``num_bad / num_seen`` estimates the share of unreadable entries, retries excluded.

With ``lexical_pool > 0`` (``data.batching=lexical``) half of each micro-batch are anchors from the
epoch's permutation and the other half their lexical partners (:mod:`maskvlp.data.lexical`): for
each anchor, the caption of another image most similar to its own among a random pool, drawn from
(seed, d) as well. Anchors and partners alternate, so every rank's share holds whole pairs.

A data set that declares pairs of items to be shown together (``pairs()``: the world's motion twins,
two clips with one first frame and opposite motions) is batched pair by pair: the epoch permutes the
pairs and each micro-batch holds whole pairs, so every item meets its twin as an in-batch negative.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from maskvlp.data.lexical import LexicalIndex, choose_partners
from maskvlp.distributed import DistInfo

MAX_REPLACEMENT_TRIES = 64


class DataError(RuntimeError):
    """The data is too broken to train on; the message says what was found."""


class StepBatches(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, micro_batch: int, seed: int, dist: DistInfo,
                 collate: Callable[[list[dict]], dict], lexical_pool: int = 0):
        if len(dataset) < micro_batch:
            raise DataError(f"the dataset has {len(dataset)} samples, fewer than one batch ({micro_batch})")
        if micro_batch % dist.world_size:
            raise DataError(f"batch {micro_batch} does not split evenly over {dist.world_size} processes")
        self.dataset = dataset
        self.micro_batch = micro_batch
        self.seed = seed
        self.dist = dist
        self.collate = collate
        self.lexical_pool = int(lexical_pool)
        self.lexical: LexicalIndex | None = None
        self.anchors_per_batch = micro_batch
        declared = dataset.pairs() if self.lexical_pool == 0 and hasattr(dataset, "pairs") else None
        self.pairs: np.ndarray | None = None if declared is None else np.asarray(declared, dtype=np.int64).reshape(-1, 2)
        if self.lexical_pool > 0 or self.pairs is not None:  # whole pairs in every process's share
            if micro_batch % (2 * dist.world_size):
                why = ("data.batching=lexical pairs every caption with a partner in the same process's share"
                       if self.lexical_pool > 0 else "the data set is batched in pairs")
                raise DataError(f"{why}: the batch per process ({micro_batch // dist.world_size}) must be even")
            self.anchors_per_batch = micro_batch // 2
        if self.pairs is not None and 2 * len(self.pairs) < micro_batch:
            raise DataError(f"the data set has {len(self.pairs)} pairs, fewer than one batch ({micro_batch // 2})")
        if self.lexical_pool > 0:
            self.lexical = LexicalIndex([dataset.captions_of(i) for i in range(len(dataset))])
        units = len(dataset) if self.pairs is None else len(self.pairs)
        self.steps_per_epoch = units // self.anchors_per_batch

    def __len__(self) -> int:  # effectively unbounded; the trainer decides when to stop
        return 2**62

    def epoch_of(self, d: int) -> int:
        return d // self.steps_per_epoch

    def global_indices(self, d: int) -> np.ndarray:
        epoch, offset = divmod(d, self.steps_per_epoch)
        k = self.anchors_per_batch
        if self.pairs is not None:  # [a0, b0, a1, b1, ...]: whole pairs, so every rank's share holds them
            order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.pairs))
            return self.pairs[order[offset * k:(offset + 1) * k]].reshape(-1)
        order = np.random.default_rng([self.seed, epoch, 7]).permutation(len(self.dataset))
        anchors = order[offset * k:(offset + 1) * k]
        return anchors if self.lexical is None else self._with_partners(d, epoch, anchors)

    def _with_partners(self, d: int, epoch: int, anchors: np.ndarray) -> np.ndarray:
        """[a0, p0, a1, p1, ...]: each anchor followed by its lexical partner (see the module docstring)."""
        assert self.lexical is not None
        data = self.dataset
        data.set_epoch(epoch)  # partners are chosen on the captions this epoch shows
        n = len(data)
        pool = np.random.default_rng([self.seed, d, 13]).choice(n, min(self.lexical_pool, n), replace=False)

        def rows(items: np.ndarray) -> list[int]:
            return [self.lexical.row(int(i), data.caption_index(int(i))) for i in items]

        try:
            partners = choose_partners(self.lexical, rows(anchors), [data.image_key_of(int(i)) for i in anchors],
                                       pool, rows(pool), [data.image_key_of(int(i)) for i in pool])
        except ValueError as err:
            raise DataError(str(err)) from None
        out = np.empty(2 * len(anchors), dtype=np.int64)
        out[0::2], out[1::2] = anchors, partners
        return out

    def local_indices(self, d: int) -> np.ndarray:
        per_rank = self.micro_batch // self.dist.world_size
        return self.global_indices(d)[self.dist.rank * per_rank:(self.dist.rank + 1) * per_rank]

    def _fetch(self, index: int) -> tuple[dict, int]:
        """The sample at ``index``, or a deterministic stand-in when it is unreadable; (item, failed reads)."""
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
            item, failed = self._fetch(int(i))
            items.append(item)
            bad += failed > 0
        batch = self.collate(items)
        # num_bad / num_seen: of the entries the sampler chose, how many were unreadable (an unbiased
        # estimate of the data's bad fraction); stand-ins that were unreadable too are not counted again
        batch["num_bad"] = batch.get("num_bad", 0) + bad
        batch["num_seen"] = len(items)
        return batch


class StepSampler(torch.utils.data.Sampler):
    """Yields micro-batch indices from ``start`` on; the trainer stops consuming when done."""

    def __init__(self, start: int, end: int):
        self.start, self.end = start, end

    def __iter__(self):
        return iter(range(self.start, self.end))

    def __len__(self) -> int:
        return self.end - self.start
