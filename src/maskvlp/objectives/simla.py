"""SIMLA's two objectives beyond ALBEF (Khan et al., ECCV 2022, arXiv 2203.14395).

``simla_mim``: the image half of XMM (cross-modality reconstruction, paper eq. 6-7)
-------------------------------------------------------------------------------------
* Mask: BEiT block-wise masking of ``ratio`` of the patches, exact count; SIMLA masks 75 of 256
  patches (16x16 grid at 256 px), so the default ratio is 75/256 [code: ``masking_generator.py``];
  the smallest block follows :func:`maskvlp.masking.default_min_block` (16 on 14x14 and larger grids
  [code: BEiT/SIMLA], scaled down on small grids [ours]).
* Masked patches are *replaced* by the ViT's learned mask token (positions stay aligned) [code].
* The masked image tokens are the queries and read the caption through cross-attention
  [paper + code]: SIMLA feeds the ViT output as ``inputs_embeds`` to its shared BERT, cross-attending
  to the caption's word embeddings. We use the fusion encoder's image stream (``two_stream`` in the
  recipe; ``cross`` also works with ``text_context: tower``), ``fuse(text, image).image[:, 1:]``; the
  text context is, as in SIMLA's code, the caption's embedding-layer output, read by every image
  block (``text_context: embeddings``, the default; the text stream does not run); ``tower`` gives
  the image blocks the text stream's layer inputs over the text tower's output instead,
  the same input the ITM/MLM passes give the fusion [ours: the nearest shared part, since our
  fusion is not one BERT with switchable modes]. The prediction head is one linear layer on the
  fused states at the masked positions only [code: ``mim_head = nn.Linear(768, 8192)``].
* Target [ours; SIMLA uses DALL-E dVAE codes, unavailable offline]: the EMA teacher's ViT patch
  features of the *same* image (``ctx.teacher_image.tokens[:, 1:]``), in one of two forms:

  - ``target: codes`` (default): a frozen random codebook stands in for the dVAE's (as in
    BEST-RQ's random-projection quantiser, Chiu et al., ICML 2022; here the random codes live
    directly in the standardised feature space, with no projection). Teacher features are standardised per channel
    over every patch of the global batch (so a component shared by all patches, common in a
    young ViT, cannot make one code win everywhere), and each masked patch's label is the
    nearest of ``codebook_size`` random unit vectors (cosine). The codebook is a buffer drawn
    from a fixed seed: saved in checkpoints, identical on every rank, never trained (a trained
    codebook of targets could collapse). Loss: cross-entropy over the codes, as SIMLA's over
    the dVAE's 8192 codes.
  - ``target: features``: regression of the per-token LayerNorm-ed (no affine) teacher features
    (data2vec / MAE's normalised targets); a linear head to the vision width; mean squared error.

* Momentum distillation [paper eq. 7 + code]: with ``alpha > 0`` the momentum model predicts the
  same masked patches (teacher ViT on the same mask, teacher fusion, an EMA copy of the head), and
  ``L = (1 - alpha) L(pred, target) + alpha L(pred, momentum prediction)`` with a soft
  cross-entropy over ``softmax(momentum logits)`` (codes) or MSE to the momentum regression
  (features). SIMLA's momentum pass reads the *online* BERT embeddings of the caption; ours reads
  the teacher text tower's output, already computed for ITC [ours]. ``alpha`` 0.4 ramped from 0
  [paper: over the first epoch; here over ``alpha_ramp_steps``, as ``itc``/``mlm``].
* Same crop: the student's masked view and the target view are the same tensor
  (``ctx.batch.images``), so every target is the teacher's feature of exactly the patch that was
  hidden. SIMLA's released data pipeline crops and flips the ViT view and the dVAE view
  independently, so its labels are generally not aligned with the masked patches [notes: found by
  reading the code]; sharing the crop fixes that, as BEiT does.

``simla_psl``: pseudo-keyword prediction (paper §2.4, eq. 8-9)
---------------------------------------------------------------
* Keywords [code]: the momentum model's fusion of the caption and the image; last fusion layer; the
  self-attention row of the [CLS] query. SIMLA lets each of 12 heads vote for its top-4 positions
  and keeps the 5 positions with most votes; the fusion returns the per-head [CLS] rows
  (``text_cls_attention_heads``, B x heads x Lt), so the same vote is used (``per_head`` = 4 [code]);
  from a head-mean row alone it falls back to the plain top ``k`` = 5 (the paper's appendix
  describes a plain top-k, with k = 4). Special tokens and padding never become keywords [ours; SIMLA only
  zeroes [CLS]]. SIMLA's momentum pass reads the *online* ViT; ours is the one teacher fusion of
  the clean pair shared with the other objectives (teacher ViT) [ours].
* Hard targets: a multi-hot vector over the vocabulary of the selected token ids [code].
* Student [code]: ``concept_head`` = Linear(embed_dim -> vocab) on the *unimodal* image's
  normalised ITC projection of [CLS] (``ctx.image.embed``; SIMLA's ``image_feat``), so PSL trains
  the ViT and its projection, not the fusion.
* Concept head bias starts at the log-odds of the keyword prior ``k / V`` (RetinaNet's prior
  initialisation, Lin et al. 2017) [ours; SIMLA keeps PyTorch's default init]. With a zero bias
  every one of the V outputs starts at sigmoid = 0.5, and so do the EMA head's soft targets, which
  then hold all V probabilities near ``alpha * 0.5`` until the EMA lag decays: a long early phase
  (Adam moves each bias by about the learning rate per step) would go into pushing ~30k logits
  down instead of learning keywords.
* Soft targets [code]: ``sigmoid(concept_head_ema(teacher image embed))``, the momentum model's own
  image-only guesses, which may name objects the caption leaves out. ``concept_head_ema`` is a
  frozen EMA copy owned by this objective, moved in :meth:`after_step` with ``model.momentum``.
* Loss [paper eq. 8 + code]: ``(1 - alpha) BCE(logits, hard) + alpha BCE(logits, soft)`` averaged over
  B x V (BCE is linear in its target, so this is one BCE against the mixed target).

Forward passes this module adds per step: ``simla_mim`` a masked student ViT pass and a student
fusion pass, plus (``alpha > 0``) a masked teacher ViT pass and a teacher fusion pass, all no-grad
for the teacher (the clean teacher ViT pass for the targets is ``ctx.teacher_image``, shared with
ITC); ``simla_psl`` only the per-step teacher fusion with attention, ``ctx.teacher_fused``, which is
computed once per step for every objective that reads it (it also reads the cached ``ctx.image`` and
``ctx.teacher_image``).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from maskvlp.config import ConfigError, ModelConfig, SimlaMIMParams, SimlaPSLParams
from maskvlp.distributed import all_gather_nograd, local_slice, mean_over_ranks_denominator
from maskvlp.masking import ImageMask, attention_votes, block_patch_mask, keyword_token_mask, multi_hot
from maskvlp.models.fusion import FusionOutput, fused_image_width
from maskvlp.models.transformer import init_weights
from maskvlp.models.vlp import FUSION, MASK_TOKEN, TEACHER, TEACHER_FUSION
from maskvlp.objectives.base import Objective, ObjectiveOutput, register, require_image_states, target_width
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads


@torch.no_grad()
def ema_update(ema: nn.Module, student: nn.Module, momentum: float) -> None:
    """``p_ema <- momentum * p_ema + (1 - momentum) * p_student`` for every parameter (same structure)."""
    for p_ema, p in zip(ema.parameters(), student.parameters(), strict=True):
        p_ema.lerp_(p.detach().to(p_ema.dtype), 1.0 - momentum)


def ramped_alpha(alpha: float, step: int, ramp_steps: int) -> float:
    """``alpha`` ramped linearly from 0 over the first ``ramp_steps`` steps (as ``itc``/``mlm``)."""
    return alpha * min(1.0, (step + 1) / max(1, ramp_steps))


def gather_patches(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """(B, N, D) patch states at (B, M) indices -> (B * M, D), row-major (sample, then position)."""
    return states.gather(1, index[..., None].expand(-1, -1, states.shape[-1])).flatten(0, 1)


# ---------------------------------------------------------------------------------------------- MIM
@register
class SimlaMIM(Objective):
    """Masked image modeling conditioned on the caption (the image half of SIMLA's XMM)."""

    name = "simla_mim"

    def __init__(self, model_cfg: ModelConfig, params: SimlaMIMParams | None = None):
        super().__init__(model_cfg, params)
        p: SimlaMIMParams = self.params
        require_image_states(self.name, model_cfg, "reads the fusion's image stream at masked patches")
        self.ratio: float = float(p.ratio)
        self.min_block: int | None = p.min_block
        self.target: str = p.target
        self.source: str = p.source
        self.text_context: str = p.text_context
        if self.text_context == "embeddings" and model_cfg.fusion.mode != "two_stream":
            raise ConfigError(f"objective 'simla_mim': text_context=embeddings gives the image stream of two_stream "
                              f"fusion a fixed context; model.fusion.mode is {model_cfg.fusion.mode} (use two_stream, "
                              "or text_context=tower)")
        self.alpha: float = float(p.alpha)
        self.alpha_ramp_steps: int = p.alpha_ramp_steps
        self.momentum: float = model_cfg.momentum
        self.mask_key = f"block-{self.ratio}" + ("" if self.min_block is None else f"-min{self.min_block}")
        vision_width = target_width(self.name, model_cfg, self.source)  # the coded or regressed features' width
        fused_width = fused_image_width(model_cfg.fusion.mode, model_cfg.text.width, model_cfg.vision.width)
        if self.target == "codes":
            g = torch.Generator().manual_seed(p.codebook_seed)
            codes = F.normalize(torch.randn(p.codebook_size, vision_width, generator=g), dim=-1)
            self.register_buffer("codebook", codes)
            self.head = nn.Linear(fused_width, p.codebook_size)
        else:
            self.codebook = None
            self.head = nn.Linear(fused_width, vision_width)
        init_weights(self.head)
        self.head_ema: nn.Linear | None = None
        if self.alpha > 0:
            self.head_ema = copy.deepcopy(self.head).requires_grad_(False)

    def reads(self) -> Reads:
        # the teacher's ViT: for teacher targets, and for the momentum prediction (distillation, alpha > 0)
        teacher = {TEACHER} if self.source == "teacher" or self.alpha > 0 else set()
        return Reads(parts={FUSION, MASK_TOKEN} | teacher | ({TEACHER_FUSION} if self.alpha > 0 else set()))

    @torch.no_grad()
    def after_step(self) -> None:
        if self.head_ema is not None:
            ema_update(self.head_ema, self.head, self.momentum)

    # ------------------------------------------------------------------ pieces
    def image_mask(self, ctx: StepContext) -> ImageMask:
        """This step's block mask (drawn for the global batch, this rank's rows), shared by key."""

        def make() -> ImageMask:
            grid = ctx.model.vision.grid
            full = block_patch_mask(grid, grid, self.ratio, generator=ctx.generator(self.mask_key),
                                    batch=ctx.batch.global_size, min_block=self.min_block,
                                    device=ctx.batch.images.device)
            return full.rows(local_slice(ctx.batch.global_size))

        return ctx.image_mask(self.mask_key, make)

    @torch.no_grad()
    def targets(self, teacher_patches: torch.Tensor, mask_idx: torch.Tensor) -> torch.Tensor:
        """Targets at the masked patches from the teacher's clean patch features (B, N, Dv):
        code ids (B*M,) or LayerNorm-ed features (B*M, Dv)."""
        x = teacher_patches.float()
        picked = gather_patches(x, mask_idx)
        if self.target == "features":
            return F.layer_norm(picked, picked.shape[-1:], eps=1e-6)
        assert self.codebook is not None
        flat = x.flatten(0, 1)
        d = flat.shape[1]
        stats = torch.cat([flat.sum(0), (flat * flat).sum(0), flat.new_tensor([flat.shape[0]])])
        stats = all_gather_nograd(stats[None]).sum(0)  # channel statistics of the global batch
        count = stats[-1].clamp(min=1)
        mean = stats[:d] / count
        var = (stats[d:2 * d] / count - mean * mean).clamp(min=0)
        z = (picked - mean) * torch.rsqrt(var + 1e-6)
        return (z @ self.codebook.T).argmax(-1)  # codebook rows are unit vectors: nearest by cosine

    def fuse_image(self, ctx: StepContext, image: torch.Tensor, side: str) -> torch.Tensor:
        """The fusion's image states of ``image`` (B, 1 + N, Dv) reading the caption: its embedding-layer
        output at every layer (``text_context: embeddings``, SIMLA's code) or the text stream's layer inputs
        over the text tower's output (``tower``); ``side``: the student's or the momentum model's fusion."""
        att = ctx.batch.attention_mask
        momentum = side == "momentum"
        fuse = ctx.teacher_fuse if momentum else ctx.model.fuse
        if self.text_context == "tower":
            text = ctx.teacher_text.tokens if momentum else ctx.text.tokens
            return fuse(text, att, image, need_text=False).image
        embedded = ctx.caption_embeddings(momentum)
        return fuse(embedded, att, image, need_text=False, image_context=embedded).image

    @torch.no_grad()
    def momentum_prediction(self, ctx: StepContext, mask: ImageMask) -> torch.Tensor:
        """The momentum model's prediction at the masked patches: code probabilities (B*M, K) or
        features (B*M, Dv). Teacher ViT on the same mask, teacher fusion, EMA head."""
        assert self.head_ema is not None
        image = ctx.teacher_masked_image(mask.masked).tokens
        fused = self.fuse_image(ctx, image, "momentum")
        out = self.head_ema(gather_patches(fused[:, 1:], mask.mask_idx)).float()
        return F.softmax(out, dim=-1) if self.target == "codes" else out

    # ------------------------------------------------------------------ loss
    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        mask = self.image_mask(ctx)
        masked = ctx.masked_image(self.mask_key, "replace")  # [CLS] + all N patches, masked ones = mask token
        fused = self.fuse_image(ctx, masked.tokens, "student")
        pred = self.head(gather_patches(fused[:, 1:], mask.mask_idx)).float()  # only the masked patches
        target = self.targets(ctx.teacher_image.tokens[:, 1:] if self.source == "teacher" else ctx.stem_patches,
                              mask.mask_idx)
        alpha = ramped_alpha(self.alpha, ctx.step, self.alpha_ramp_steps) if self.head_ema is not None else 0.0
        soft = self.momentum_prediction(ctx, mask) if alpha > 0 else None
        metrics: dict[str, float] = {}
        if self.target == "codes":
            per_patch = F.cross_entropy(pred, target, reduction="none")
            if soft is not None:
                per_patch = (1 - alpha) * per_patch - alpha * (soft * F.log_softmax(pred, dim=-1)).sum(-1)
            with torch.no_grad():
                freq = torch.bincount(target, minlength=pred.shape[1]).float() / max(1, target.numel())
                entropy = -(freq[freq > 0] * freq[freq > 0].log()).sum()
                metrics = {"mim_acc": float((pred.argmax(-1) == target).float().mean()),
                           "mim_code_perplexity": float(math.exp(float(entropy)))}
        else:
            per_patch = (pred - target).pow(2).mean(-1)
            if soft is not None:
                per_patch = (1 - alpha) * per_patch + alpha * (pred - soft).pow(2).mean(-1)
            with torch.no_grad():
                metrics = {"mim_cos": float(F.cosine_similarity(pred, target, dim=-1).mean())}
        # mean over the masked patches of the *global* batch
        loss = per_patch.sum() / mean_over_ranks_denominator(per_patch.numel())
        metrics["mim_alpha"] = alpha
        return ObjectiveOutput(loss, metrics)


# ---------------------------------------------------------------------------------------------- PSL
def keyword_eligible(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: real tokens that are not special ([CLS], [SEP], [PAD], [MASK], ...)."""
    return attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))


def select_keywords(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor,
                    fused: FusionOutput, k: int = 5, per_head: int = 4) -> torch.Tensor:
    """(B, L) bool: the caption positions the teacher's [CLS] attends to most, at most ``k`` per row.

    Scores: per-head votes (:func:`attention_votes`) when the fusion output carries per-head [CLS]
    rows as ``text_cls_attention_heads`` (B, heads, L) [code], else the head-mean [CLS] row of the
    last layer's self-attention (``text_self_attention[:, 0]``). Special tokens and padding are
    never chosen; ties go to the earlier position.
    """
    eligible = keyword_eligible(input_ids, attention_mask, special_ids)
    per_head_rows = getattr(fused, "text_cls_attention_heads", None)
    if per_head_rows is not None:
        scores = attention_votes(per_head_rows, eligible, per_head)
    else:
        if fused.text_self_attention is None:
            raise ValueError("keyword selection needs the teacher fusion's attention (return_attention=True)")
        scores = fused.text_self_attention[:, 0]
    return keyword_token_mask(scores, eligible, k)


@register
class SimlaPSL(Objective):
    """Pseudo-keyword prediction: the image alone predicts the caption's most attended words."""

    name = "simla_psl"

    def __init__(self, model_cfg: ModelConfig, params: SimlaPSLParams | None = None):
        super().__init__(model_cfg, params)
        p: SimlaPSLParams = self.params
        self.k: int = p.k
        self.per_head: int = p.per_head
        self.alpha: float = float(p.alpha)
        self.alpha_ramp_steps: int = p.alpha_ramp_steps
        self.momentum: float = model_cfg.momentum
        self.vocab_size: int = model_cfg.text.vocab_size
        self.concept_head = nn.Linear(model_cfg.embed_dim, self.vocab_size)
        init_weights(self.concept_head)
        with torch.no_grad():  # start every concept at the keyword prior k / V (see the module docstring)
            prior = min(self.k / self.vocab_size, 0.5)
            self.concept_head.bias.fill_(math.log(prior / (1 - prior)))
        self.concept_head_ema: nn.Linear | None = None
        if self.alpha > 0:
            self.concept_head_ema = copy.deepcopy(self.concept_head).requires_grad_(False)

    def reads(self) -> Reads:
        return Reads(parts={FUSION, TEACHER, TEACHER_FUSION})

    @torch.no_grad()
    def after_step(self) -> None:
        if self.concept_head_ema is not None:
            ema_update(self.concept_head_ema, self.concept_head, self.momentum)

    @torch.no_grad()
    def hard_targets(self, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """(selected (B, L) bool, multi-hot (B, V)) from the teacher fusion's [CLS] attention."""
        ids = ctx.batch.input_ids
        if ids.numel() and int(ids.max()) >= self.vocab_size:
            raise ValueError(f"token id {int(ids.max())} is outside model.text.vocab_size={self.vocab_size}")
        selected = select_keywords(ids, ctx.batch.attention_mask, ctx.specials.special_ids, ctx.teacher_fusion(need_image=False),
                                   self.k, self.per_head)
        return selected, multi_hot(ids, selected, self.vocab_size)

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        _, hard = self.hard_targets(ctx)
        alpha = ramped_alpha(self.alpha, ctx.step, self.alpha_ramp_steps) if self.concept_head_ema is not None else 0.0
        with torch.no_grad():
            target = hard
            if alpha > 0:
                assert self.concept_head_ema is not None
                soft = torch.sigmoid(self.concept_head_ema(ctx.teacher_image.embed).float())
                target = (1 - alpha) * hard + alpha * soft  # BCE is linear in its target
        logits = self.concept_head(ctx.image.embed).float()
        per_entry = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        loss = per_entry.sum() / mean_over_ranks_denominator(per_entry.numel())  # mean over B x V (eq. 8)
        with torch.no_grad():
            top = logits.topk(min(self.k, logits.shape[1]), dim=-1).indices
            precision = hard.gather(1, top).mean()
        return ObjectiveOutput(loss, {"psl_precision": float(precision),
                                      "psl_keywords": float(hard.sum(1).mean()), "psl_alpha": alpha})
