"""Image-text matching (ITM) with hard negatives, as in ALBEF.

For every text a negative image, and for every image a negative text, is sampled from the global
batch with probability proportional to the softmax of their ITC similarity, so the fusion encoder
sees the pairs contrastive features confuse most. A candidate showing the same image as the
positive (the positive itself, or another caption of its image) is never drawn; a row with no valid
candidate contributes no negative.

``random_mix`` (ours; ALBEF: 0) draws that share of the probability uniformly over the other
images instead: measured on the synthetic world (docs/baselines.md), ITM trained on hard negatives
alone never sees an easy pair, stays at its class prior and even learns to call random pairs
matches, while random negatives from the same checkpoint lift it above the prior in 20 steps.
``hard_negatives: false`` is ``random_mix: 1``. Negatives are drawn across all ranks (BLIP's
``negative_all_rank``), with the same generator on every rank, so the draw does not depend on how
the batch is split over processes.

``text_negatives: swap`` (ours, after NegCLIP / SVLC; ALBEF: none) adds, for each image whose caption has
two attribute words of one kind or a spatial word, that caption with the words exchanged (or the spatial
word reversed) as one more negative pair (:mod:`maskvlp.negatives`): the only negatives that ask the
fusion *which* object has an attribute, which random and ITC-hard ones almost never do.

``rank`` (ours; ALBEF: 0) adds that weight of a ranking loss on the head's match log-odds: every image
must score its caption above the negative text drawn for it and above its caption's twin, every text its
image above the negative image drawn for it (a softmax over each anchor's candidates, as VSE++ ranks an
anchor's pair above its hard negatives). Classification alone leaves a head that answers "no match" to
every pair (three negatives per positive) with almost no gradient from a twin it already rejects; the
ranking term is blind to that prior and asks exactly what re-ranking and the binding test ask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvlp.config import ITMParams, ModelConfig
from maskvlp.distributed import all_gather_nograd, all_gather_with_grad, local_slice, mean_over_ranks_denominator
from maskvlp.models.vlp import FUSION, ITM as ITM_HEAD
from maskvlp.objectives.base import Objective, ObjectiveOutput, register
from maskvlp.objectives.context import CLEAN, NEGATIVES, StepContext, cat_rows_padded
from maskvlp.objectives.reads import Reads, TextPass


def sample_hard_negatives(similarity: torch.Tensor, row_keys: torch.Tensor, column_keys: torch.Tensor,
                          generator: torch.Generator, random_mix: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row, one column index among columns of another image, drawn with probability
    ``(1 - random_mix) * softmax(similarity) + random_mix * uniform`` (both restricted to those columns).

    Returns (index, valid): rows whose every column shows their own image get valid=False.
    """
    if not 0.0 <= random_mix <= 1.0:
        raise ValueError(f"random_mix must be in [0, 1], got {random_mix}")
    allowed = row_keys[:, None] != column_keys[None, :]
    hard = F.softmax(similarity.float().masked_fill(~allowed, float("-inf")), dim=1).nan_to_num(0.0)
    uniform = allowed.float() / allowed.sum(1, keepdim=True).clamp(min=1)
    weights = (1.0 - random_mix) * hard + random_mix * uniform
    weights = torch.where(allowed, weights + 1e-8, weights)  # keep underflowed candidates drawable
    valid = allowed.any(1)
    weights[~valid] = 1.0  # dummy row so multinomial accepts it; its draw is discarded
    index = torch.multinomial(weights.cpu(), 1, generator=generator).squeeze(1).to(similarity.device)
    return index, valid


NO_CANDIDATE = -1e4  # log-odds of a candidate an anchor does not have: finite, so its softmax share is 0


def ranking_loss(logits: torch.Tensor, n_pos: int, ok_t: torch.Tensor, ok_i: torch.Tensor,
                 ok_n: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
    """Softmax ranking of each anchor's positive above its negatives, on the match log-odds.

    ``logits`` rows are laid out as :meth:`ITM.forward` builds them: the ``n_pos`` positives, then one
    negative image per text with ``ok_t``, one negative text per image with ``ok_i``, and (``ok_n`` given)
    one caption twin per image with ``ok_n``. Image anchors rank [own caption, negative text, twin], text
    anchors [own image, negative image]; anchors without any negative add nothing. Returns the loss
    (mean over the global batch's anchors) and the share of twins scored below their caption.
    """
    score = (logits[:, 1] - logits[:, 0]).float()
    pos = score[:n_pos]
    blocks = [ok_t, ok_i] + ([] if ok_n is None else [ok_n])
    starts = torch.tensor([n_pos] + [int(b.sum()) for b in blocks]).cumsum(0).tolist()

    def spread(block: int) -> torch.Tensor:  # block's scores, one slot per anchor, NO_CANDIDATE where none
        out = torch.full_like(pos, NO_CANDIDATE)
        return out.masked_scatter(blocks[block], score[starts[block]:starts[block + 1]])

    text_anchor = torch.stack([pos, spread(0)], 1)
    image_cols = [pos, spread(1)] + ([] if ok_n is None else [spread(2)])
    image_anchor = torch.stack(image_cols, 1)
    has_t, has_i = ok_t, ok_i if ok_n is None else ok_i | ok_n
    zero = torch.zeros(n_pos, dtype=torch.long, device=logits.device)
    per_text = F.cross_entropy(text_anchor, zero, reduction="none")[has_t]
    per_image = F.cross_entropy(image_anchor, zero, reduction="none")[has_i]
    loss = (per_text.sum() + per_image.sum()) / mean_over_ranks_denominator(int(has_t.sum() + has_i.sum()))
    metrics = {}
    if ok_n is not None and ok_n.any():  # the binding test's question, on training pairs
        metrics["itm_swap_rank_acc"] = float((pos[ok_n] > image_anchor[ok_n, -1]).float().mean())
    return loss, metrics


@register
class ITM(Objective):
    name = "itm"

    def __init__(self, model_cfg: ModelConfig, params: ITMParams | None = None):
        super().__init__(model_cfg, params)
        p: ITMParams = self.params
        self.hard_negatives: bool = p.hard_negatives
        self.random_mix = float(p.random_mix) if self.hard_negatives else 1.0
        self.random_steps: int = p.random_steps
        self.random_ramp_steps: int = p.random_ramp_steps
        self.text_negatives: bool = p.text_negatives != "none"
        self.balance: bool = p.balance
        self.rank = float(p.rank)

    def reads(self) -> Reads:
        passes = {TextPass(False, CLEAN)} | ({TextPass(False, NEGATIVES)} if self.text_negatives else set())
        return Reads(parts={FUSION, ITM_HEAD}, text_passes=passes)

    def random_share(self, step: int) -> float:
        """The share of uniformly drawn negatives at ``step``: 1 for ``random_steps`` steps, then a linear
        fall to ``random_mix`` over ``random_ramp_steps``."""
        if step < self.random_steps:
            return 1.0
        if step < self.random_steps + self.random_ramp_steps:
            done = (step - self.random_steps + 1) / self.random_ramp_steps
            return 1.0 + (self.random_mix - 1.0) * done
        return self.random_mix

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        model = ctx.model
        image, text, mask = ctx.image.tokens, ctx.text.tokens, ctx.batch.attention_mask
        keys = ctx.global_image_keys
        sim = ctx.global_similarity  # with random_mix 1 its share is zero
        g = ctx.generator("itm-negatives")
        mix = self.random_share(ctx.step)
        neg_image_of_text, ok_t = sample_hard_negatives(sim.T, keys, keys, g, mix)  # text rows -> image columns
        neg_text_of_image, ok_i = sample_hard_negatives(sim, keys, keys, g, mix)  # image rows -> text columns
        rows = local_slice(ctx.batch.global_size)
        neg_image_of_text, ok_t = neg_image_of_text[rows], ok_t[rows]
        neg_text_of_image, ok_i = neg_text_of_image[rows], ok_i[rows]
        all_image, all_text, all_mask = all_gather_with_grad(image), all_gather_with_grad(text), all_gather_nograd(mask)

        # each pair's image as a row of the gathered batch: the fusion projects every image once, not per pair
        own = torch.arange(rows.start, rows.stop, device=image.device)
        texts = [text, text[ok_t], all_text[neg_text_of_image[ok_i]]]
        masks = [mask, mask[ok_t], all_mask[neg_text_of_image[ok_i]]]
        images = [own, neg_image_of_text[ok_t], own[ok_i]]
        ok_n = None
        if self.text_negatives:
            _, negative_mask, ok_n = ctx.negative_captions
            if ok_n.any():
                texts.append(ctx.negative_text.tokens)
                masks.append(negative_mask)
                images.append(own[ok_n])
        text_in, mask_in = cat_rows_padded(texts), cat_rows_padded(masks)
        logits = model.itm_logits(text_in, mask_in, all_image, image_index=torch.cat(images))
        n_pos = image.shape[0]  # the positives come first
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        labels[:n_pos] = 1
        per_pair = F.cross_entropy(logits.float(), labels, reduction="none")
        if self.balance:  # each class its own global mean, then halved: positives weigh what negatives do
            loss = 0.5 * (per_pair[:n_pos].sum() / mean_over_ranks_denominator(n_pos)
                          + per_pair[n_pos:].sum() / mean_over_ranks_denominator(len(labels) - n_pos))
        else:
            loss = per_pair.sum() / mean_over_ranks_denominator(len(labels))
        metrics: dict[str, float] = {}
        if self.rank > 0:
            ranking, metrics = ranking_loss(logits, n_pos, ok_t, ok_i, ok_n)
            loss = loss + self.rank * ranking
        hit = logits.argmax(1) == labels
        # accuracy on positives apart: answering "no match" to every pair scores 1 - n_pos / n overall
        metrics.update({"itm_acc": float(hit.float().mean()), "itm_pos_acc": float(hit[:n_pos].float().mean()),
                        "itm_random_share": mix})
        if ok_n is not None and ok_n.any():  # how often the swapped captions are already told apart
            metrics["itm_swap_acc"] = float(hit[-int(ok_n.sum()):].float().mean())
        return ObjectiveOutput(loss, metrics)
