"""Pair batching: a data set that declares pairs (the world's motion twins) is batched pair by pair, so
each item meets its twin in the same process's share of every micro-batch."""
from __future__ import annotations

import numpy as np
import pytest

from maskvlp.data.datasets import PretrainDataset
from maskvlp.distributed import DistInfo
from maskvlp.engine.batches import DataError, StepBatches


class _Paired(PretrainDataset):
    def __init__(self, n: int, pairs: np.ndarray | None):
        super().__init__(seed=0)
        self.n, self._pairs = n, pairs

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> dict:
        return {"index": index}

    def captions_of(self, index: int):
        return [f"item {index}"]

    def image_key_of(self, index: int) -> int:
        return index

    def pairs(self):
        return self._pairs


def _collate(items: list[dict]) -> dict:
    return {"index": [i["index"] for i in items]}


def _dist(rank: int, world: int) -> DistInfo:
    return DistInfo(rank=rank, world_size=world, local_rank=rank)


def test_every_micro_batch_holds_whole_pairs_and_an_epoch_shows_each_pair_once():
    rng = np.random.default_rng(0)
    order = rng.permutation(24)
    pairs = order.reshape(-1, 2)  # twins that are not neighbours in the data set
    partner = {int(a): int(b) for a, b in pairs} | {int(b): int(a) for a, b in pairs}
    batches = StepBatches(_Paired(24, pairs), 4, seed=3, dist=_dist(0, 1), collate=_collate)
    assert batches.steps_per_epoch == 6
    seen = []
    for d in range(6):
        idx = batches[d]["index"]
        assert len(idx) == 4
        assert idx[1] == partner[idx[0]] and idx[3] == partner[idx[2]]
        seen += idx
    assert sorted(seen) == list(range(24))  # one epoch: every item once
    assert not np.array_equal(batches.global_indices(6), batches.global_indices(0))  # the next epoch re-permutes


def test_each_process_share_holds_whole_pairs():
    pairs = np.arange(16).reshape(-1, 2)
    whole = StepBatches(_Paired(16, pairs), 8, seed=1, dist=_dist(0, 1), collate=_collate)
    shares = [StepBatches(_Paired(16, pairs), 8, seed=1, dist=_dist(r, 2), collate=_collate) for r in range(2)]
    for d in range(3):
        parts = [s[d]["index"] for s in shares]
        assert parts[0] + parts[1] == whole[d]["index"]
        for part in parts:
            assert all(part[k] // 2 == part[k + 1] // 2 for k in range(0, len(part), 2))


def test_pairs_that_cannot_split_or_fill_a_batch_are_refused():
    pairs = np.arange(16).reshape(-1, 2)
    with pytest.raises(DataError, match="must be even"):
        StepBatches(_Paired(16, pairs), 6, seed=0, dist=_dist(0, 2), collate=_collate)  # 3 per process
    with pytest.raises(DataError, match="fewer than one batch"):
        StepBatches(_Paired(20, pairs[:2]), 8, seed=0, dist=_dist(0, 1), collate=_collate)


def test_a_data_set_without_pairs_is_batched_as_before():
    plain = StepBatches(_Paired(12, None), 4, seed=5, dist=_dist(0, 1), collate=_collate)
    order = np.random.default_rng([5, 0, 7]).permutation(12)
    assert plain[0]["index"] == order[:4].tolist()
