"""Zero-shot retrieval and binding evaluation of a model on a :class:`RetrievalSet`.

Each figure is given twice: by ITC ranking (the dual encoder alone) and by ITC shortlist + ITM
re-rank of the top k (ALBEF's protocol, batched across queries, each distinct pair scored once; the
re-ranked score is ALBEF's, the ITM match logit plus the ITC cosine similarity, unless
``eval.itm_score=itm`` asks for log p(match) alone).
On the synthetic world the set also carries the truth of every caption for every image, which adds
semantic R@1, the COCO-protocol ceiling, and the binding test; a model with an MLM head also gets
the binding test scored by its MLM head (row ``mlm``, :mod:`maskvlp.eval.mlm_binding`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from maskvlp.config import EvalConfig
from maskvlp.eval import metrics as M
from maskvlp.eval.mlm_binding import accuracy_by_kind, mlm_binding
from maskvlp.eval.rerank import recall_from_two, rerank_both, rerank_both_cost
from maskvlp.engine.logging import task_progress
from maskvlp.models.vlp import Encoded, VLPModel

RERANK_CHUNK = 4096  # pairs handed to the scorer at once; it sub-batches them image by image


@dataclass
class EncodedTexts:
    ids: torch.Tensor
    mask: torch.Tensor
    tokens: torch.Tensor
    embed: torch.Tensor


@dataclass
class EncodedImages:
    tokens: torch.Tensor
    embed: torch.Tensor


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _encode_in_batches(n: int, batch_size: int, encode: Callable[[int, int], Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encode(start, end)`` over [0, n) in batches, writing into tensors allocated once.

    Filling preallocated outputs instead of concatenating a list of batches halves the peak memory of
    the largest thing evaluation holds (every caption's token states: 5,000 x 38 x 384 floats here,
    ~3 GB for a base model on COCO's 25,000 test captions at 40 tokens).
    """
    tokens = embed = None
    for start in range(0, n, batch_size):
        end = min(n, start + batch_size)
        out = encode(start, end)
        if tokens is None:
            tokens = out.tokens.new_empty((n, *out.tokens.shape[1:]))
            embed = out.embed.new_empty((n, *out.embed.shape[1:]))
        tokens[start:end] = out.tokens
        embed[start:end] = out.embed
    if tokens is None:
        raise ValueError("nothing to encode: the evaluation set is empty")
    return tokens, embed


@torch.no_grad()
def encode_images(model: VLPModel, images: Callable[[list[int]], torch.Tensor], n: int, batch_size: int) -> EncodedImages:
    device = _device(model)
    return EncodedImages(*_encode_in_batches(
        n, batch_size, lambda start, end: model.encode_image(images(list(range(start, end))).to(device))))


@torch.no_grad()
def encode_texts(model: VLPModel, tokenizer, texts: list[str], max_len: int, batch_size: int) -> EncodedTexts:
    """Encode all texts, padded to the longest overall so ITM can index any subset."""
    batch = tokenizer.encode(texts, max_len)
    ids, mask = batch.input_ids.to(_device(model)), batch.attention_mask.to(_device(model))
    tokens, embed = _encode_in_batches(
        len(texts), batch_size, lambda start, end: model.encode_text(ids[start:end], mask[start:end]))
    return EncodedTexts(ids, mask, tokens, embed)


def itm_scorer(model: VLPModel, images: EncodedImages, texts: EncodedTexts, batch_size: int = 128,
               score: str = "log_p") -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """score(image_idx, text_idx) from the fusion encoder's ITM head, for pairs in bulk: ``log_p`` = log
    p(match), ``logit`` = the raw match logit (what ALBEF adds the ITC similarity to when re-ranking).

    Pairs are run in sub-batches of one image after another, each trimmed to its longest text: the fusion
    projects each image of a sub-batch to keys and values once (``image_index``), not once per pair, and
    its blocks skip the text padding (which cannot change a result: padded keys are masked out). A
    re-rank hands over pairs sorted by image (:func:`rerank_both`), ~40 per image here, so a sub-batch
    of 128 pairs shows ~4 images.
    """
    if score not in ("log_p", "logit"):
        raise ValueError(f"score must be log_p or logit, got {score!r}")
    lengths = texts.mask.sum(1)

    @torch.no_grad()
    def score_pairs(image_idx: torch.Tensor, text_idx: torch.Tensor) -> torch.Tensor:
        order = torch.argsort(image_idx, stable=True)
        out = torch.empty(len(text_idx), device=texts.tokens.device)
        for start in range(0, len(order), batch_size):
            sel = order[start:start + batch_size]
            t, (shown, index) = text_idx[sel], torch.unique(image_idx[sel], return_inverse=True)
            length = int(lengths[t].max())
            logits = model.itm_logits(texts.tokens[t, :length], texts.mask[t, :length], images.tokens[shown],
                                      image_index=index)
            out[sel] = F.log_softmax(logits.float(), dim=-1)[:, 1] if score == "log_p" else logits[:, 1].float()
        return out

    return score_pairs


def evaluate_retrieval(model: VLPModel, tokenizer, rset, cfg: EvalConfig, max_len: int, label: str = "",
                       show_progress: bool = True) -> dict[str, dict[str, float]]:
    """Rows ``{"itc": metrics, "itm k=<k>": metrics}`` (ITM only when the model has a fusion encoder)."""
    model.eval()
    images = encode_images(model, rset.image_batch, rset.num_images, cfg.batch_size)
    texts = encode_texts(model, tokenizer, rset.texts, max_len, cfg.batch_size)
    sim = images.embed @ texts.embed.T
    txt2img = torch.as_tensor(rset.txt2img, device=sim.device)
    truth = torch.as_tensor(rset.truth, device=sim.device) if rset.truth is not None else None
    rows: dict[str, dict[str, float]] = {"itc": _metrics(sim, sim, txt2img, truth)}
    probes = _encode_probes(model, tokenizer, rset, max_len, cfg.batch_size)
    probe_images = images if rset.probe_images is None or probes is None else encode_images(
        model, rset.probe_image_batch, rset.num_probe_images, cfg.batch_size)
    if probes is not None:
        rows["itc"].update(_binding(probes, lambda i, t: (probe_images.embed[i] * probes.embed[t]).sum(-1)))
    if model.has_fusion and cfg.itm_k > 0:
        albef = cfg.itm_score == "albef"  # ALBEF: match logit + ITC cosine similarity; else log p(match)
        score = itm_scorer(model, images, texts, cfg.batch_size, "logit" if albef else "log_p")
        pairs = rerank_both_cost(sim, cfg.itm_k)
        name = f"itm k={cfg.itm_k}"
        with task_progress( f"{label} ITM re-rank (k={cfg.itm_k}, {rset.num_images} images, "
                                      f"{len(rset.texts)} captions)", pairs, show_progress) as advance:
            i2t, t2i = rerank_both(sim, cfg.itm_k, score, RERANK_CHUNK, progress=advance, itc_weight=float(albef))
        rows[name] = _metrics(i2t, t2i, txt2img, truth)
        if probes is not None:
            rows[name].update(_binding(probes, itm_scorer(model, probe_images, probes, cfg.batch_size)))
    if probes is not None and model.mlm_head is not None:
        rows["mlm"] = mlm_binding(model, probe_images.tokens, probes.image_idx, *probes.twins(), probes.kinds,
                                  tokenizer.mask_id, cfg.batch_size)
    model.train()
    return rows


def _metrics(i2t: torch.Tensor, t2i: torch.Tensor, txt2img: torch.Tensor, truth: torch.Tensor | None) -> dict[str, float]:
    out = recall_from_two(i2t, t2i, txt2img)
    if truth is not None:
        sem_t = M.semantic_recall_at_1(t2i, truth)
        sem_i = M.semantic_recall_at_1(i2t, truth)
        out.update(sem_img_r1=sem_t["sem_img_r1"], sem_txt_r1=sem_i["sem_txt_r1"])
        out.update(M.coco_ceiling(truth, txt2img))
    return out


@dataclass
class _Probes(EncodedTexts):
    image_idx: torch.Tensor
    kinds: list[str]

    def twins(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(true ids, false ids, true mask, false mask): texts 0..n-1 are true, n..2n-1 their twins."""
        n = len(self.kinds)
        return self.ids[:n], self.ids[n:], self.mask[:n], self.mask[n:]


def _encode_probes(model, tokenizer, rset, max_len: int, batch_size: int) -> _Probes | None:
    if not rset.probes:
        return None
    texts = [p[2] for p in rset.probes] + [p[3] for p in rset.probes]
    enc = encode_texts(model, tokenizer, texts, max_len, batch_size)
    idx = torch.as_tensor([p[0] for p in rset.probes], device=enc.embed.device)
    return _Probes(enc.ids, enc.mask, enc.tokens, enc.embed, idx, [p[1] for p in rset.probes])


def _binding(probes: _Probes, score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> dict[str, float]:
    """Binding accuracy per probe kind: true caption scored above its swapped twin (chance 50%)."""
    n = len(probes.kinds)
    true_idx = torch.arange(n, device=probes.embed.device)
    true_s = score(probes.image_idx, true_idx)
    false_s = score(probes.image_idx, true_idx + n)
    return accuracy_by_kind(probes.kinds, true_s, false_s)
