"""Lexical batch partners: pair captions with captions of *other* images that use the same words.

Why: with random batches of a few dozen pairs, most captions are told apart from every other
caption in the batch by one easy attribute. On the synthetic world, a caption's scene shares its
colours (but not its shapes) with another scene of a random batch of 32 only 21% of the time, of a
pool of 1,000 test images 87% (docs/baselines.md): contrastive training learns colours and barely
shapes, and ITM's hard negatives (drawn from the batch) are rarely a real contrast. Filling half
of each batch with the lexically nearest caption of another image, from a random pool, gives every
anchor a negative that differs in little but the words that matter, for ITC's in-batch columns and
ITM's hard negatives. This is model-free (TF-IDF over words): ~17 ms per batch of 32 with a pool of
1,024, no trained text tower needed, any caption data.

It is off by default (``data.batching=random``, as ALBEF and CLIP sample): at 180 s it did not lift
``clip``'s R@1 (docs/data.md, "Batch composition").
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

WORD = re.compile(r"[a-z0-9]+")


class LexicalIndex:
    """TF-IDF vectors (binary term frequency, smoothed idf, L2-normalised) of every caption of every
    item, stored as CSR arrays; ``row(item, j)`` is caption ``j`` of ``item``."""

    def __init__(self, captions: Sequence[Sequence[str]]):
        vocab: dict[str, int] = {}
        rows: list[list[int]] = []
        self.item_offset = np.zeros(len(captions) + 1, dtype=np.int64)
        for i, caps in enumerate(captions):
            for text in caps:
                rows.append(sorted({vocab.setdefault(w, len(vocab)) for w in WORD.findall(text.lower())}))
            self.item_offset[i + 1] = len(rows)
        df = np.zeros(len(vocab), dtype=np.float64)
        for words in rows:
            df[words] += 1
        idf = np.log((1 + len(rows)) / (1 + df)) + 1.0
        self.indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        self.indptr[1:] = np.cumsum([len(w) for w in rows])
        self.indices = np.fromiter((w for words in rows for w in words), dtype=np.int64, count=int(self.indptr[-1]))
        data = idf[self.indices]
        norms = np.sqrt(np.add.reduceat(data**2, self.indptr[:-1])) if len(data) else np.zeros(0)
        norms[np.diff(self.indptr) == 0] = 1.0  # a caption without words: an all-zero row
        self.data = (data / np.repeat(norms, np.diff(self.indptr))).astype(np.float32)
        self.vocab_size = len(vocab)

    def row(self, item: int, caption: int) -> int:
        return int(self.item_offset[item] + caption)

    def similarity(self, anchors: Sequence[int], candidates: Sequence[int]) -> np.ndarray:
        """Cosine similarity [len(anchors), len(candidates)] between caption rows."""
        dense = np.zeros((len(anchors), self.vocab_size), dtype=np.float32)
        for a, r in enumerate(anchors):
            dense[a, self.indices[self.indptr[r]:self.indptr[r + 1]]] = self.data[self.indptr[r]:self.indptr[r + 1]]
        candidates = np.asarray(candidates, dtype=np.int64)
        starts, ends = self.indptr[candidates], self.indptr[candidates + 1]
        lengths = ends - starts
        flat = np.concatenate([np.arange(s, e) for s, e in zip(starts, ends)]) if lengths.sum() else np.zeros(0, np.int64)
        products = dense[:, self.indices[flat]] * self.data[flat]  # [A, total words of the candidates]
        out = np.zeros((len(anchors), len(candidates)), dtype=np.float32)
        nonempty = lengths > 0
        if nonempty.any():
            bounds = np.concatenate([[0], np.cumsum(lengths)[:-1]])[nonempty]
            out[:, nonempty] = np.add.reduceat(products, bounds, axis=1)
        return out


def choose_partners(index: LexicalIndex, anchor_rows: Sequence[int], anchor_keys: Sequence[int],
                    pool: Sequence[int], pool_rows: Sequence[int], pool_keys: Sequence[int]) -> list[int]:
    """For each anchor, the pool item whose caption is most similar, never one showing the anchor's
    image or any image already in the batch, and never the same pool item twice."""
    sim = index.similarity(anchor_rows, pool_rows)
    pool_keys = np.asarray(pool_keys)
    taken = np.isin(pool_keys, np.asarray(anchor_keys))
    partners: list[int] = []
    for a in range(len(anchor_rows)):
        scores = np.where(taken, -np.inf, sim[a])
        best = int(np.argmax(scores))
        if not np.isfinite(scores[best]):
            raise ValueError("the lexical pool has no item whose image is not already in the batch; "
                             "raise data.lexical_pool or use data.batching=random")
        partners.append(int(pool[best]))
        taken |= pool_keys == pool_keys[best]
    return partners
