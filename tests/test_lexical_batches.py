"""Lexical batch partners (data.batching=lexical): the similarity, the choice and the batch layout
against brute-force references, on any dataset that names its captions."""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maskvlp.config import ConfigError, WorldConfig, load_config
from maskvlp.data.datasets import AlbefJsonDataset, SyntheticPretrainDataset
from maskvlp.data.lexical import LexicalIndex, choose_partners
from maskvlp.data.synthetic import SyntheticWorld
from maskvlp.engine.batches import DataError, StepBatches
from maskvlp.distributed import DistInfo

CAPTIONS = [["a red circle and a blue square", "two objects"], ["a blue circle and a red square"],
            ["a green star"], ["", "a red circle"], ["a red circle and a blue square to its left", "a red circle"]]


def _tfidf_reference(texts: list[str]) -> np.ndarray:
    """Dense TF-IDF (binary tf, smoothed idf, L2 rows) written out plainly."""
    words = [set(re.findall(r"[a-z0-9]+", t.lower())) for t in texts]
    vocab = sorted(set().union(*words))
    df = Counter(w for ws in words for w in ws)
    out = np.zeros((len(texts), len(vocab)))
    for i, ws in enumerate(words):
        for w in ws:
            out[i, vocab.index(w)] = math.log((1 + len(texts)) / (1 + df[w])) + 1
        if ws:
            out[i] /= np.linalg.norm(out[i])
    return out


def test_similarity_equals_dense_tfidf_cosine():
    index = LexicalIndex(CAPTIONS)
    flat = [t for caps in CAPTIONS for t in caps]
    ref = _tfidf_reference(flat)
    rows = list(range(len(flat)))
    assert np.allclose(index.similarity(rows, rows), ref @ ref.T, atol=1e-6)
    assert index.row(3, 1) == 5 and index.row(4, 0) == 6
    # the colour swap shares every word with the original: the most similar caption of another item
    assert index.similarity([0], [2])[0, 0] == pytest.approx(1.0)


def test_partners_are_the_most_similar_pool_item_of_another_image():
    index = LexicalIndex(CAPTIONS)
    pool = np.array([1, 2, 3, 4])
    keys = [11, 12, 13, 10]  # item 4 shows item 0's image: never a partner of anchor 0
    partners = choose_partners(index, [index.row(0, 0)], [10], pool, [index.row(i, 0) for i in pool], keys)
    assert partners == [1]  # the colour swap, not item 4 (same image) nor the unrelated ones
    # two anchors never share a partner, and a partner's image is then taken
    two = choose_partners(index, [index.row(0, 0), index.row(4, 1)], [10, 10], pool,
                          [index.row(1, 0), index.row(2, 0), index.row(3, 1), index.row(4, 1)], [11, 12, 13, 10])
    assert len(set(two)) == 2 and 4 not in two
    with pytest.raises(ValueError, match="raise data.lexical_pool"):
        choose_partners(index, [index.row(0, 0)], [10], np.array([4]), [index.row(4, 0)], [10])


@pytest.fixture(scope="module")
def synthetic():
    return SyntheticPretrainDataset(SyntheticWorld(WorldConfig(seed=3, image_size=16, train_scenes=64)), "train")


def test_caption_index_names_the_caption_getitem_shows(synthetic, tmp_path):
    for epoch in (0, 5):
        synthetic.set_epoch(epoch)
        for i in range(10):
            assert synthetic[i]["text"] == synthetic.captions_of(i)[synthetic.caption_index(i)]
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "a.png")
    (tmp_path / "train.json").write_text(json.dumps([{"image": "a.png", "caption": ["one", "two", "three"]}] * 3))
    ds = AlbefJsonDataset([tmp_path / "train.json"], tmp_path, 8, crop_scale_min=0.5, hflip=False)
    for epoch in range(6):
        ds.set_epoch(epoch)
        assert ds[1]["text"] == ds.captions_of(1)[ds.caption_index(1)]


def test_lexical_batches_pair_every_anchor_with_its_best_partner(synthetic):
    batches = StepBatches(synthetic, 8, seed=1, dist=DistInfo(), collate=lambda x: x, lexical_pool=16)
    assert batches.steps_per_epoch == 64 // 4
    anchors_seen = []
    for d in range(batches.steps_per_epoch):
        idx = batches.global_indices(d)
        assert len(idx) == 8 and np.array_equal(idx, batches.global_indices(d))  # a pure function of d
        anchors, partners = idx[0::2], idx[1::2]
        anchors_seen += anchors.tolist()
        assert len(set(idx.tolist())) == 8, "an image appears twice in a batch"
        # brute force: each partner is the pool's best remaining item for its anchor, in anchor order
        pool = np.random.default_rng([1, d, 13]).choice(64, 16, replace=False)
        taken = set(anchors.tolist())
        for a, p in zip(anchors, partners):
            row = batches.lexical.row(int(a), synthetic.caption_index(int(a)))
            scores = {int(c): float(batches.lexical.similarity([row], [batches.lexical.row(int(c), synthetic.caption_index(int(c)))])[0, 0])
                      for c in pool if int(c) not in taken}
            assert scores[int(p)] == max(scores.values())
            taken.add(int(p))
    assert sorted(anchors_seen) == list(range(64)), "the anchors of an epoch are not a permutation"


def test_each_rank_gets_whole_pairs_and_odd_shares_are_refused(synthetic):
    one = StepBatches(synthetic, 8, 0, DistInfo(), lambda x: x, lexical_pool=32)
    ranks = [StepBatches(synthetic, 8, 0, DistInfo(rank=r, world_size=2), lambda x: x, lexical_pool=32) for r in (0, 1)]
    assert np.array_equal(np.concatenate([r.local_indices(3) for r in ranks]), one.global_indices(3))
    with pytest.raises(DataError, match="must be even"):
        StepBatches(synthetic, 6, 0, DistInfo(rank=0, world_size=2), lambda x: x, lexical_pool=32)


def test_random_batching_is_unchanged_by_the_option(synthetic):
    plain = StepBatches(synthetic, 8, 0, DistInfo(), lambda x: x)
    order = np.random.default_rng([0, 0, 7]).permutation(64)
    assert np.array_equal(plain.global_indices(1), order[8:16])


def test_batching_config_is_validated():
    assert load_config("clip", "tiny", ["data.batching=lexical"]).data.batching == "lexical"
    with pytest.raises(ConfigError, match="data.batching.*random, lexical"):
        load_config("clip", "tiny", ["data.batching=hard"])
    with pytest.raises(ConfigError, match="data.lexical_pool"):
        load_config("clip", "tiny", ["data.lexical_pool=0"])
