"""ALBEF's ITC-shortlist + ITM re-rank, batched across queries and deduplicated across directions.

ALBEF runs one fusion forward per query (a batch of only k pairs), which leaves an accelerator
mostly idle for small k. Here all (query, candidate) pairs of the shortlists are flattened and scored in chunks
of ``batch_size``, and :func:`rerank_both` scores a pair that sits in both the image -> text and the
text -> image shortlist only once.

The caller supplies ``score_pairs(query_idx, cand_idx) -> Tensor[n]`` (one score per pair, e.g. the
ITM "match" logit); nothing here knows about models. Scores outside a query's shortlist are
``-inf``, which :func:`maskvlp.eval.metrics.recall_at_k` treats as "never retrieved".

ITC weight: the re-ranked score is ``score_pairs + itc_weight * sim``. ALBEF and BLIP (their
``Retrieval.py``) add the ITC cosine similarity to the ITM match logit: ``itc_weight=1`` with ``sim``
the cosine similarity. ``itc_weight=0`` ranks by the pair score alone; a small ``eps > 0`` only breaks
its ties by ITC order (candidates the fusion head cannot tell apart then keep their ITC order
instead of losing to the metric's pessimistic tie rule; pick ``eps`` above the score's float
resolution, about 1e-4 for logits of order 1-10 in float32).

Shortlist boundary: among candidates tied at the k-th place the lower index is kept, so the
shortlist is deterministic and does not depend on the batch size or the device's topk.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from maskvlp.eval.metrics import recall_at_k

ScorePairs = Callable[[Tensor, Tensor], Tensor]
Progress = Callable[[int], None]

_ROWS = 1024  # rows shortlisted at a time, to bound the [rows, N_c] temporaries


def _shortlist_rows(sim: Tensor, k: int) -> Tensor:
    """Top-k indices per row, best first; among values tied with the k-th, the lowest indices.

    ``torch.topk`` alone leaves the choice among boundary ties unspecified, and a stable sort of
    whole rows is several times slower, so: take the k-th value with topk, keep everything above it, fill the
    remaining places with the first indices equal to it, then order the k by value (stable).
    """
    kth = torch.topk(sim, k, dim=1).values[:, -1:]
    above = sim > kth
    tied = sim == kth
    room = k - above.sum(dim=1, keepdim=True)
    chosen = above | (tied & (tied.cumsum(dim=1) <= room))
    idx = chosen.nonzero()[:, 1].view(sim.shape[0], k)
    order = torch.sort(sim.gather(1, idx), dim=1, descending=True, stable=True).indices
    return idx.gather(1, order)


def shortlist(sim: Tensor, k: int) -> Tensor:
    """``[N_q, min(k, N_c)]`` candidate indices per row, best first, lower index wins ties."""
    if sim.dim() != 2:
        raise ValueError(f"sim must be 2-D [N_q, N_c], got shape {tuple(sim.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN; the shortlist would be arbitrary")
    k = min(k, sim.shape[1])
    if k == 0 or sim.shape[0] == 0:
        return torch.empty(sim.shape[0], k, dtype=torch.long, device=sim.device)
    return torch.cat([_shortlist_rows(sim[s : s + _ROWS], k) for s in range(0, sim.shape[0], _ROWS)])


def rerank_cost(n_q: int, n_c: int, k: int) -> int:
    """Fusion-pair evaluations :func:`rerank_topk` will make (for the caller to print up front)."""
    return n_q * min(k, n_c)


def _score_in_chunks(q_idx: Tensor, c_idx: Tensor, score_pairs: ScorePairs, batch_size: int, progress: Progress | None) -> Tensor:
    """Call ``score_pairs`` on consecutive chunks of at most ``batch_size`` pairs; float32 scores.

    ``progress`` receives the cumulative number of pairs scored after each chunk.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = q_idx.numel()
    out = torch.empty(n, dtype=torch.float32, device=q_idx.device)
    for start in range(0, n, batch_size):
        q, c = q_idx[start : start + batch_size], c_idx[start : start + batch_size]
        scores = torch.as_tensor(score_pairs(q, c)).detach()
        if scores.numel() != q.numel():
            raise ValueError(f"score_pairs returned {scores.numel()} scores for {q.numel()} pairs")
        out[start : start + q.numel()] = scores.reshape(-1).to(out.device, torch.float32)
        if progress is not None:
            progress(start + q.numel())
    return out


def _scatter_rows(cand: Tensor, scores: Tensor, n_c: int) -> Tensor:
    """``[N_q, n_c]`` matrix of -inf with each row's shortlist scores put in place."""
    out = torch.full((cand.shape[0], n_c), float("-inf"), dtype=torch.float32, device=cand.device)
    return out.scatter_(1, cand, scores.view_as(cand))


def _with_itc(scores: Tensor, sim: Tensor, q_idx: Tensor, c_idx: Tensor, itc_weight: float) -> Tensor:
    """Add ``itc_weight * sim[q, c]`` (ALBEF's fused score at 1; a tie-break when small)."""
    if itc_weight == 0:
        return scores
    return scores + itc_weight * sim[q_idx, c_idx].to(scores.device, torch.float32)


def rerank_topk(
    sim: Tensor,
    k: int,
    score_pairs: ScorePairs,
    batch_size: int,
    progress: Progress | None = None,
    itc_weight: float = 0.0,
) -> Tensor:
    """Re-score each row's top-k ITC candidates with ``score_pairs``; ``-inf`` elsewhere.

    Calls ``score_pairs(query_idx, cand_idx)`` with LongTensors (on ``sim``'s device) of at most
    ``batch_size`` pairs, ``rerank_cost(N_q, N_c, k)`` pairs in all, in row-major order.
    Returns a float32 ``[N_q, N_c]`` matrix; see the module docstring for ``itc_weight``.
    """
    cand = shortlist(sim, k)
    q_idx = torch.arange(cand.shape[0], device=sim.device).repeat_interleave(cand.shape[1])
    c_idx = cand.reshape(-1)
    scores = _score_in_chunks(q_idx, c_idx, score_pairs, batch_size, progress)
    return _scatter_rows(cand, _with_itc(scores, sim, q_idx, c_idx, itc_weight), sim.shape[1])


def _both_shortlists(sim_i2t: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Texts per image ``[N_img, k]`` and images per text ``[N_txt, k]``."""
    return shortlist(sim_i2t, k), shortlist(sim_i2t.t(), k)


def _pair_keys(sim_i2t: Tensor, cand_t: Tensor, cand_i: Tensor) -> tuple[Tensor, Tensor]:
    """Flat ``img * N_txt + txt`` keys of the i2t shortlist pairs, then of the t2i ones."""
    n_img, n_txt = sim_i2t.shape
    dev = sim_i2t.device
    img_rows = torch.arange(n_img, device=dev).repeat_interleave(cand_t.shape[1])
    txt_rows = torch.arange(n_txt, device=dev).repeat_interleave(cand_i.shape[1])
    return img_rows * n_txt + cand_t.reshape(-1), cand_i.reshape(-1) * n_txt + txt_rows


def rerank_both_cost(sim_i2t: Tensor, k: int) -> int:
    """Distinct (image, text) pairs :func:`rerank_both` will score (its ``progress`` total)."""
    keys_t, keys_i = _pair_keys(sim_i2t, *_both_shortlists(sim_i2t, k))
    return int(torch.unique(torch.cat([keys_t, keys_i])).numel())


def rerank_both(
    sim_i2t: Tensor,
    k: int,
    score_pairs_it: ScorePairs,
    batch_size: int,
    progress: Progress | None = None,
    itc_weight: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Re-rank image -> text and text -> image at once, scoring each distinct pair once.

    Returns ``(i2t, t2i)``, both float32 ``[N_img, N_txt]``: ``i2t`` holds scores for each image's
    top-k texts (feed it to recall_at_k for ``txt_*``), ``t2i`` for each text's top-k images (for
    ``img_*``); see :func:`recall_from_two`. ``score_pairs_it(img_idx, txt_idx)`` is called on the
    union of both shortlists, sorted by image then text (so consecutive calls share images).
    ``progress`` gets the cumulative count out of :func:`rerank_both_cost`.
    """
    n_img, n_txt = sim_i2t.shape
    cand_t, cand_i = _both_shortlists(sim_i2t, k)
    keys_t, keys_i = _pair_keys(sim_i2t, cand_t, cand_i)
    uniq, inverse = torch.unique(torch.cat([keys_t, keys_i]), return_inverse=True)
    img_idx, txt_idx = uniq // n_txt, uniq % n_txt
    scores = _score_in_chunks(img_idx, txt_idx, score_pairs_it, batch_size, progress)
    scores = _with_itc(scores, sim_i2t, img_idx, txt_idx, itc_weight)[inverse]
    i2t = _scatter_rows(cand_t, scores[: keys_t.numel()], n_txt)
    t2i = _scatter_rows(cand_i, scores[keys_t.numel() :], n_img).t().contiguous()
    return i2t, t2i


def recall_from_two(sim_i2t_matrix: Tensor, sim_t2i_matrix: Tensor, txt2img: Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k taking ``txt_*`` from the i2t matrix and ``img_*`` from the t2i one (both [N_img, N_txt])."""
    from_i2t = recall_at_k(sim_i2t_matrix, txt2img, ks)
    from_t2i = recall_at_k(sim_t2i_matrix, txt2img, ks)
    res = {key: v for key, v in from_i2t.items() if key.startswith("txt_")}
    res.update({key: v for key, v in from_t2i.items() if key.startswith("img_")})
    res["r_mean"] = (res["txt_r_mean"] + res["img_r_mean"]) / 2
    return res
