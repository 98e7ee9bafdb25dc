"""Retrieval and probe metrics as percentages (0-100), pure functions on score tensors.

Conventions shared by every function here:

* ``sim`` is ``[N_img, N_txt]``: row ``i`` scores image ``i`` against every caption. It may be an
  ITC similarity matrix or a re-ranked ITM matrix (see :mod:`maskvlp.eval.rerank`), where items
  outside a query's shortlist hold ``-inf``.
* Ties are counted **pessimistically**: a query's rank is the number of *wrong* candidates that
  score greater than **or equal to** its best correct candidate, so a model that gives every
  candidate the same score gets no credit (ALBEF's ``argsort`` would break such ties by index
  order, which can flatter a collapsed model). Other correct candidates never count against a query.
* A query whose best correct candidate scores ``-inf`` was never retrieved (it fell outside the
  re-rank shortlist) and is a miss at every k, even when k exceeds the number of candidates.
* NaN scores are rejected: they would silently compare False and make ranks meaningless.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

_ROW_CHUNK = 1024  # rows ranked at a time: keeps the [rows, N] boolean temporaries small on 5k x 25k


def _check_sim(sim: Tensor) -> None:
    """Reject inputs that would give silently wrong ranks rather than an error."""
    if sim.dim() != 2:
        raise ValueError(f"sim must be 2-D [N_img, N_txt], got shape {tuple(sim.shape)}")
    if not sim.is_floating_point():
        raise ValueError(f"sim must be a floating-point tensor, got {sim.dtype}")
    if torch.isnan(sim).any():
        raise ValueError("sim contains NaN; ranks would be meaningless")


def _check_txt2img(txt2img: Tensor, n_img: int, n_txt: int) -> Tensor:
    """Validate the caption -> image map and return it as a long tensor."""
    if txt2img.dim() != 1 or txt2img.numel() != n_txt:
        raise ValueError(f"txt2img must be 1-D of length {n_txt}, got shape {tuple(txt2img.shape)}")
    txt2img = txt2img.long()
    if n_txt and (int(txt2img.min()) < 0 or int(txt2img.max()) >= n_img):
        raise ValueError(f"txt2img values must lie in [0, {n_img}), got [{int(txt2img.min())}, {int(txt2img.max())}]")
    return txt2img


def _own_caption_mask(txt2img: Tensor, n_img: int) -> Tensor:
    """``[N_img, N_txt]`` bool: caption j belongs to image i."""
    return torch.arange(n_img, device=txt2img.device)[:, None] == txt2img[None, :]


def pessimistic_ranks(scores: Tensor, correct: Tensor) -> Tensor:
    """0-based rank of each row's best correct candidate; ``inf`` when it is unreachable.

    The rank is the number of wrong candidates scoring >= the best correct score (ties lose).
    It is ``inf`` when a row has no correct candidate or its best correct score is ``-inf``.
    Returned as float so ``inf`` fits; compare with ``< k`` for recall@k.
    """
    if scores.shape != correct.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and correct {tuple(correct.shape)} differ in shape")
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    out = []
    for start in range(0, scores.shape[0], _ROW_CHUNK):
        s = scores[start : start + _ROW_CHUNK]
        c = correct[start : start + _ROW_CHUNK].to(device=s.device, dtype=torch.bool)
        if s.shape[1] == 0:
            out.append(torch.full((s.shape[0],), float("inf"), dtype=torch.float64, device=s.device))
            continue
        best = torch.where(c, s, neg_inf).amax(dim=1, keepdim=True)
        beaten_by = ((s >= best) & ~c).sum(dim=1).to(torch.float64)
        out.append(torch.where(best.squeeze(1) == float("-inf"), torch.full_like(beaten_by, float("inf")), beaten_by))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64, device=scores.device)


def _recalls(ranks: Tensor, ks: Sequence[int], prefix: str) -> dict[str, float]:
    """Percent of ranks below each k, plus their mean under ``{prefix}_r_mean``."""
    res = {f"{prefix}_r{k}": 100.0 * (ranks < k).double().mean().item() for k in ks}
    res[f"{prefix}_r_mean"] = sum(res.values()) / len(ks)
    res[f"{prefix}_medr"] = median_rank(ranks)
    return res


def median_rank(ranks: Tensor) -> float:
    """MSR-VTT's MdR: the median of the 1-based ranks (numpy's median: the mean of the two middle values
    for an even count), as CLIP4Clip's and Frozen-in-Time's ``compute_metrics``."""
    return float(np.median(ranks.double().cpu().numpy())) + 1.0 if ranks.numel() else float("nan")


def recall_at_k(sim: Tensor, txt2img: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """COCO/Flickr recall@k both ways, as ALBEF reports it but with pessimistic ties.

    * ``txt_r{k}`` (image -> text): an image scores a hit when ANY of its own captions is within
      its top k, i.e. its best own caption is beaten (>=) by fewer than k other captions.
    * ``img_r{k}`` (text -> image): a caption scores a hit when its image is within its top k.
    * ``txt_r_mean``/``img_r_mean``: mean over ``ks``; ``r_mean``: mean of the two (ALBEF's r_mean).

    Every image must own at least one caption: the image -> text protocol is undefined otherwise.
    """
    _check_sim(sim)
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {tuple(ks)}")
    n_img, n_txt = sim.shape
    txt2img = _check_txt2img(txt2img.to(sim.device), n_img, n_txt)
    own = _own_caption_mask(txt2img, n_img)
    captionless = (~own.any(dim=1)).nonzero().flatten()
    if captionless.numel():
        raise ValueError(f"{captionless.numel()} image(s) own no caption (first: {captionless[:5].tolist()})")
    res = _recalls(pessimistic_ranks(sim, own), ks, "txt")
    res.update(_recalls(pessimistic_ranks(sim.t(), own.t()), ks, "img"))
    res["r_mean"] = (res["txt_r_mean"] + res["img_r_mean"]) / 2
    return res


def _check_truth(truth: Tensor, n_txt: int, n_img: int) -> Tensor:
    """Validate a ``[N_txt, N_img]`` caption-is-true-of-image matrix."""
    if truth.shape != (n_txt, n_img):
        raise ValueError(f"truth must be [N_txt, N_img] = [{n_txt}, {n_img}], got {tuple(truth.shape)}")
    return truth.bool()


def semantic_recall_at_1(sim: Tensor, truth: Tensor) -> dict[str, float]:
    """Recall@1 that accepts any correct answer, not just the paired one.

    Under-specified captions ("a red circle") are true of several images, so COCO-style recall
    punishes a model for picking another image the caption also describes. Here:
    ``sem_img_r1`` (text -> image) is a hit when the top image is any image the caption is true of;
    ``sem_txt_r1`` (image -> text) is a hit when the top caption is true of the image.
    ``truth`` is ``[N_txt, N_img]``. Ties are pessimistic (a false item tied with the best true one
    wins); a query with no true item is a miss.
    """
    _check_sim(sim)
    truth = _check_truth(truth.to(sim.device), sim.shape[1], sim.shape[0])
    return {
        "sem_img_r1": 100.0 * (pessimistic_ranks(sim.t(), truth) < 1).double().mean().item(),
        "sem_txt_r1": 100.0 * (pessimistic_ranks(sim, truth.t()) < 1).double().mean().item(),
    }


def coco_ceiling(truth: Tensor, txt2img: Tensor) -> dict[str, float]:
    """Best recall@1 an oracle can expect under the COCO protocol when captions fit several images.

    The oracle knows exactly which captions are true of which images, but nothing tells it which
    of the fitting items is the *paired* one, so it picks uniformly among them:

    * ``ceiling_img_r1`` = mean over captions j of ``1 / |{i : truth[j, i]}|`` - it picks one of the
      images caption j fits, and exactly one of those is j's own image.
    * ``ceiling_txt_r1`` = mean over images i of ``|own(i)| / |{j : truth[j, i]}|`` - it picks one of
      the captions true of image i and scores a hit when that caption is one of i's own captions
      (own captions are always true of their image, so ``own(i)`` is a subset of the true set).

    Both in percent. Every caption must be true of its own image (``truth[j, txt2img[j]]``) and every
    image must own a caption; violations raise ``ValueError``. These are recall@1 ceilings; an
    oracle's recall@k is higher.
    """
    n_txt = txt2img.numel()
    n_img = truth.shape[1] if truth.dim() == 2 else -1
    truth = _check_truth(truth, n_txt, n_img)
    txt2img = _check_txt2img(txt2img.to(truth.device), n_img, n_txt)
    not_own_true = (~truth[torch.arange(n_txt, device=truth.device), txt2img]).nonzero().flatten()
    if not_own_true.numel():
        raise ValueError(f"truth says {not_own_true.numel()} caption(s) are false of their own image (first: {not_own_true[:5].tolist()})")
    n_own = torch.bincount(txt2img, minlength=n_img).double()
    if (n_own == 0).any():
        raise ValueError(f"{int((n_own == 0).sum())} image(s) own no caption")
    imgs_per_txt = truth.sum(dim=1).double()
    txts_per_img = truth.sum(dim=0).double()
    return {
        "ceiling_img_r1": 100.0 * (1.0 / imgs_per_txt).mean().item(),
        "ceiling_txt_r1": 100.0 * (n_own / txts_per_img).mean().item(),
    }


def binding_accuracy(true_scores: Tensor, false_scores: Tensor) -> float:
    """Percent of probes where the true caption beats its minimally edited false twin.

    Strictly higher counts 1, a tie counts 1/2, so a constant scorer sits exactly at chance (50%).
    """
    if true_scores.shape != false_scores.shape or true_scores.dim() != 1:
        raise ValueError(f"expected two 1-D tensors of equal length, got {tuple(true_scores.shape)} and {tuple(false_scores.shape)}")
    if true_scores.numel() == 0:
        raise ValueError("binding_accuracy needs at least one probe")
    if torch.isnan(true_scores).any() or torch.isnan(false_scores).any():
        raise ValueError("scores contain NaN")
    t, f = true_scores.double(), false_scores.to(true_scores.device).double()
    wins = (t > f).double() + 0.5 * (t == f).double()
    return 100.0 * wins.mean().item()
