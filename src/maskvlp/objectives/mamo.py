"""MAMO: masked multimodal modeling with explicit and implicit targets (Zhao et al., SIGIR 2023,
arXiv 2210.04183).

One jointly masked student pass per step (the same pair masked in both modalities at once) feeds
three losses:

* **MLM** (explicit text target): cross-entropy over the vocabulary at the masked text positions,
  read from the fused text states through the model's MLM head;
* **MIM** (explicit image target): at masked patches, regress the EMA teacher's image-encoder
  features of the *clean* image, through an objective-owned predictor head on the student's fused
  image states;
* **MRM** (implicit target): at the masked positions of both modalities, regress the EMA teacher's
  *fused* states of the clean pair, through separate predictor heads (one per modality: in
  ``two_stream`` the fused image states have the vision width, the text states the text width).

Provenance (tags as in docs/methods.md, "Sources"; the paper's method
section was only available through a secondary reading):

* [paper/notes] joint masking of one input, image 75% and text 25%; teacher sees the clean pair;
  MIM targets are momentum image features (Table 9: better than pixels or DALL-E tokens); MRM
  regresses teacher fused latents; equal weights (Eq. 6); MRM alone may collapse and the explicit
  targets anchor it (Sec 4.5); fusion must output image-side states.
* [notes, suggestion] random (not block) patches; BERT 80/10/10 text masking; regression on
  layer-normalised targets (data2vec style); an MLP predictor suffices (Table 10: decoders from an
  MLP to 6 blocks are within 0.8 points).
* [ours] MSE as the default regression (``regression: smooth_l1`` is offered): the targets are
  layer-normalised without affine, so every target token has zero mean and unit variance over its
  features and an L2 loss cannot be dominated by a few large-scale tokens (MAE, MaskFeat and
  data2vec 2.0 regress with L2 too). MRM pools the masked text and image positions into one mean
  (the paper's "unified" objective); per-modality values are logged, and the collapse gauge
  ``mamo_mrm_pred_std`` is that of the image-side predictions. MLM here has no momentum
  distillation (MAMO's MLM is the plain masked-word CE on the jointly masked pair). Predictor
  heads are two-layer MLPs (hidden = fusion width); ``mim_decoder_blocks > 0`` puts pre-norm
  transformer blocks over all fused image states before the MIM MLP.
* [ours] ``image_masking: drop`` (default): masked patches never enter the ViT (it encodes the 25%
  visible ones, roughly 4x fewer tokens, and like MAE it never sees mask tokens, which it will not
  see at test time either); before fusion a learned mask embedding plus the ViT position embedding
  of each masked patch is put back at its position (MAE's decoder input), so the fusion encoder
  has an image slot to fill at every masked position. ``replace`` puts the ViT's learned mask token
  in place of masked patches inside the ViT (SimMIM / BEiT; the notes' simplest reading), at full
  ViT cost.

Collapse guard: the explicit targets (MIM on teacher image features, MLM on word ids) anchor MRM
[paper]; targets are layer-normalised [notes]; the per-dimension standard deviation (over the
masked items of the step) of the predictions and of the targets is logged for MIM and MRM, so a
collapse (both falling towards 0) is visible in the logs; a recipe that keeps MRM but switches off
both explicit targets gets a warning.

Masks come from the step context (image key ``random-<ratio>``, text ``ctx.masked_text(ratio)``),
so a composed recipe that names the same ratios shares the masks and the masked ViT pass.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from maskvlp.config import ConfigError, MAMOParams, ModelConfig
from maskvlp.config.objective_params import REGRESSIONS
from maskvlp.distributed import mean_over_ranks_denominator
from maskvlp.masking import ImageMask, MaskedText, random_patch_mask
from maskvlp.models.fusion import FusionOutput, fused_image_width
from maskvlp.models.transformer import Block, init_weights
from maskvlp.models.vlp import FUSION, MASK_TOKEN, MLM as MLM_HEAD, TEACHER, TEACHER_FUSION
from maskvlp.objectives.base import Objective, ObjectiveOutput, register, require_image_states, target_width
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads, TextMaskKey

log = logging.getLogger(__name__)

TARGET_NORM_EPS = 1e-6


# ------------------------------------------------------------------------------------ pure helpers
def reinsert_mask_embedding(tokens: torch.Tensor, keep_idx: torch.Tensor, mask_idx: torch.Tensor,
                            mask_embed: torch.Tensor, patch_pos: torch.Tensor) -> torch.Tensor:
    """MAE-style re-insertion: (B, 1 + N, D) image tokens in raster order from a dropped pass.

    ``tokens`` (B, 1 + K, D) is [CLS] + the visible patches in ``keep_idx`` order (what the ViT's
    drop path returns); visible states go back to their positions, and masked position ``j`` gets
    ``mask_embed + patch_pos[:, j]`` (``patch_pos`` (1, N, D): the ViT's patch position embeddings,
    without the [CLS] row). ``keep_idx`` and ``mask_idx`` must partition 0..N-1.
    """
    b, _, d = tokens.shape
    n = keep_idx.shape[1] + mask_idx.shape[1]
    pos = patch_pos.to(tokens.dtype).expand(b, -1, -1)
    idx_m = mask_idx.unsqueeze(-1).expand(-1, -1, d)
    fill = mask_embed.to(tokens.dtype) + pos.gather(1, idx_m)
    out = tokens.new_zeros(b, n, d)
    out = out.scatter(1, keep_idx.unsqueeze(-1).expand(-1, -1, d), tokens[:, 1:])
    out = out.scatter(1, idx_m, fill)
    return torch.cat([tokens[:, :1], out], dim=1)


def gather_positions(states: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """(B, M, D) rows of ``states`` (B, L, D) at ``idx`` (B, M)."""
    return states.gather(1, idx.unsqueeze(-1).expand(-1, -1, states.shape[-1]))


def normalise_targets(targets: torch.Tensor) -> torch.Tensor:
    """Layer norm over the feature dimension, no affine (data2vec); float32, no gradient."""
    with torch.no_grad():
        t = targets.detach().float()
        return F.layer_norm(t, t.shape[-1:], eps=TARGET_NORM_EPS)


def regression_per_item(pred: torch.Tensor, target: torch.Tensor, kind: str = "mse",
                        beta: float = 1.0) -> torch.Tensor:
    """(M,) loss per predicted item: mean over features of squared error or smooth-L1 (``beta``).

    ``target`` is used as given (normalise it with :func:`normalise_targets` first).
    """
    pred = pred.float()
    if kind == "mse":
        per = F.mse_loss(pred, target, reduction="none")
    elif kind == "smooth_l1":
        per = F.smooth_l1_loss(pred, target, reduction="none", beta=beta)
    else:
        raise ValueError(f"regression must be one of {', '.join(REGRESSIONS)}, got {kind!r}")
    return per.mean(-1)


def per_dim_std(x: torch.Tensor) -> float:
    """Mean over features of the std over items (0 when fewer than 2 items): a collapse gauge."""
    if x.shape[0] < 2:
        return 0.0
    return float(x.detach().float().std(0).mean())


class PredictorHead(nn.Module):
    """Optional pre-norm transformer blocks over all tokens, then Linear-GELU-Linear per token."""

    def __init__(self, width: int, out_dim: int, blocks: int = 0, heads: int = 1, mlp_hidden: int = 0,
                 eps: float = 1e-6):
        super().__init__()
        self.blocks = nn.ModuleList(Block(width, heads, mlp_hidden or 4 * width, pre_norm=True, eps=eps)
                                    for _ in range(blocks))
        self.norm = nn.LayerNorm(width, eps=eps) if blocks else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, out_dim))
        self.apply(init_weights)

    def contextualise(self, x: torch.Tensor) -> torch.Tensor:
        """Run the decoder blocks (if any) over the whole sequence (B, L, width)."""
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


@dataclass
class MAMOPass:
    """What one jointly masked student pass produced (kept apart from the losses for tests)."""

    image_mask: ImageMask
    text_mask: MaskedText
    image_in: torch.Tensor  # (B, 1 + N, Dv) image tokens that entered the fusion encoder
    fused: FusionOutput  # student fusion of the jointly masked pair
    mlm_logits: torch.Tensor | None  # (Mt, V)
    mlm_labels: torch.Tensor | None  # (Mt,)
    mim_pred: torch.Tensor | None  # (B * Mv, Dv)
    mim_target: torch.Tensor | None  # (B * Mv, Dv), layer-normalised, no grad
    # MRM, per modality (the fused text and image states may differ in width): (masked text rows
    # (Mt, Dt), masked patch rows (B * Mv, Df)); targets layer-normalised, no grad
    mrm_pred: tuple[torch.Tensor, torch.Tensor] | None
    mrm_target: tuple[torch.Tensor, torch.Tensor] | None


@register
class MAMO(Objective):
    name = "mamo"

    def __init__(self, model_cfg: ModelConfig, params: MAMOParams | None = None):
        super().__init__(model_cfg, params)
        p: MAMOParams = self.params
        require_image_states(self.name, model_cfg, "needs fused image states at masked patches")
        if p.mrm_weight > 0 and p.mim_weight == 0 and p.mlm_weight == 0:
            log.warning("mamo: MRM without an explicit target (MIM, MLM) may collapse to a trivial solution "
                        "(MAMO Sec 4.5); watch mamo_mrm_pred_std / mamo_mrm_target_std")
        self.image_ratio: float = float(p.image_ratio)
        self.text_ratio: float = float(p.text_ratio)
        self.image_masking: str = p.image_masking
        self.mlm_weight: float = float(p.mlm_weight)
        self.mim_weight: float = float(p.mim_weight)
        self.mrm_weight: float = float(p.mrm_weight)
        self.regression: str = p.regression
        self.beta: float = float(p.smooth_l1_beta)
        self.mim_source: str = p.mim_source

        dt, dv = model_cfg.text.width, model_cfg.vision.width
        df = fused_image_width(model_cfg.fusion.mode, dt, dv)  # fused image states (two_stream: vision width)
        heads, hidden = ((model_cfg.text.heads, model_cfg.text.intermediate) if df == dt
                         else (model_cfg.vision.heads, int(dv * model_cfg.vision.mlp_ratio)))
        # the objective's own mask embedding (drop path only; replace uses the ViT's mask token)
        self.mask_embed: nn.Parameter | None = None
        if self.image_masking == "drop":
            self.mask_embed = nn.Parameter(torch.zeros(1, 1, dv))
            nn.init.trunc_normal_(self.mask_embed, std=0.02, a=-0.04, b=0.04)  # as the ViT's mask token
        # heads exist only for the losses that are on, so every parameter gets a gradient (DDP)
        self.mim_head = PredictorHead(df, target_width(self.name, model_cfg, p.mim_source), p.mim_decoder_blocks, heads, hidden,
                                      model_cfg.text.layer_norm_eps) if self.mim_weight > 0 else None
        # one MRM head per modality, each predicting its own stream's fused states
        self.mrm_head = PredictorHead(dt, dt) if self.mrm_weight > 0 else None
        self.mrm_image_head = PredictorHead(df, df) if self.mrm_weight > 0 else None

    def reads(self) -> Reads:
        parts = {FUSION}
        if self.mlm_weight > 0:
            parts.add(MLM_HEAD)
        if self.mim_weight > 0 and self.mim_source == "teacher":
            parts.add(TEACHER)
        if self.mrm_weight > 0:
            parts.add(TEACHER_FUSION)
        if self.image_masking == "replace":
            parts.add(MASK_TOKEN)
        return Reads(parts=parts)

    # ---------------------------------------------------------------- the masked pass
    @property
    def image_key(self) -> str:
        return f"random-{self.image_ratio}"

    def masks(self, ctx: StepContext) -> tuple[ImageMask, MaskedText]:
        """The step's joint mask, from the context so composed objectives share it."""
        key = self.image_key
        image = ctx.image_mask(key, lambda: random_patch_mask(ctx.patch_noise(key), self.image_ratio))
        return image, ctx.masked_text(TextMaskKey(self.text_ratio))

    def image_tokens(self, ctx: StepContext, image_mask: ImageMask) -> torch.Tensor:
        """(B, 1 + N, Dv) image tokens for the fusion encoder, masked patches at their positions."""
        if self.image_masking == "replace":
            return ctx.masked_image(self.image_key, "replace").tokens
        visible = ctx.masked_image(self.image_key, "drop").tokens
        vision = ctx.model.vision
        n = image_mask.masked.shape[1]
        if n != vision.num_patches:
            raise ValueError(f"mamo's drop path expects {vision.num_patches} patches per image, the mask has {n}")
        assert self.mask_embed is not None
        return reinsert_mask_embedding(visible, image_mask.keep_idx, image_mask.mask_idx, self.mask_embed,
                                       vision.pos_embed[:, 1:])

    def run(self, ctx: StepContext) -> MAMOPass:
        """The jointly masked student pass, predictions at masked positions and their targets."""
        model = ctx.model
        image_mask, text_mask = self.masks(ctx)
        att = ctx.batch.attention_mask
        image_in = self.image_tokens(ctx, image_mask)
        text = model.encode_text(text_mask.input_ids, att).tokens
        fused = model.fuse(text, att, image_in, need_image=self.mim_weight > 0 or self.mrm_weight > 0)
        where_t = text_mask.masked
        patch_idx = image_mask.mask_idx + 1  # fused image states keep [CLS] at 0

        mlm_logits = mlm_labels = None
        if self.mlm_weight > 0:
            mlm_logits = model.mlm_head(fused.text[where_t])
            mlm_labels = text_mask.labels[where_t]

        mim_pred = mim_target = None
        if self.mim_weight > 0:
            assert self.mim_head is not None
            states = self.mim_head.contextualise(fused.image) if len(self.mim_head.blocks) else fused.image
            mim_pred = self.mim_head(gather_positions(states, patch_idx)).flatten(0, 1)
            patches = ctx.teacher_image.tokens[:, 1:] if self.mim_source == "teacher" else ctx.stem_patches
            mim_target = normalise_targets(gather_positions(patches, image_mask.mask_idx)).flatten(0, 1)

        mrm_pred = mrm_target = None
        if self.mrm_weight > 0:
            assert self.mrm_head is not None and self.mrm_image_head is not None
            teacher = ctx.teacher_fused
            if teacher.image is None:
                raise ConfigError("objective 'mamo': the teacher's fusion returned no image states")
            mrm_pred = (self.mrm_head(fused.text[where_t]),
                        self.mrm_image_head(gather_positions(fused.image, patch_idx).flatten(0, 1)))
            mrm_target = (normalise_targets(teacher.text[where_t]),
                          normalise_targets(gather_positions(teacher.image, patch_idx).flatten(0, 1)))
        return MAMOPass(image_mask, text_mask, image_in, fused, mlm_logits, mlm_labels,
                        mim_pred, mim_target, mrm_pred, mrm_target)

    # ---------------------------------------------------------------- losses
    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        out = self.run(ctx)
        total = torch.zeros((), device=ctx.batch.input_ids.device)
        metrics: dict[str, float] = {}
        if out.mlm_logits is not None:
            per_token = F.cross_entropy(out.mlm_logits.float(), out.mlm_labels, reduction="none")
            mlm = per_token.sum() / mean_over_ranks_denominator(per_token.numel())
            total = total + self.mlm_weight * mlm
            metrics["mamo_mlm"] = float(mlm.detach())
            if per_token.numel():
                metrics["mamo_mlm_acc"] = float((out.mlm_logits.argmax(-1) == out.mlm_labels).float().mean())
        if out.mim_pred is not None:
            per = regression_per_item(out.mim_pred, out.mim_target, self.regression, self.beta)
            mim = per.sum() / mean_over_ranks_denominator(per.numel())
            total = total + self.mim_weight * mim
            metrics.update(mamo_mim=float(mim.detach()), mamo_mim_pred_std=per_dim_std(out.mim_pred),
                           mamo_mim_target_std=per_dim_std(out.mim_target))
        if out.mrm_pred is not None:
            per_text, per_image = (regression_per_item(p, t, self.regression, self.beta)
                                   for p, t in zip(out.mrm_pred, out.mrm_target))
            per = torch.cat([per_text, per_image])  # every masked position weighs alike, as in one head
            mrm = per.sum() / mean_over_ranks_denominator(per.numel())
            total = total + self.mrm_weight * mrm
            metrics.update(mamo_mrm=float(mrm.detach()), mamo_mrm_pred_std=per_dim_std(out.mrm_pred[1]),
                           mamo_mrm_target_std=per_dim_std(out.mrm_target[1]))
            if per_text.numel():
                metrics["mamo_mrm_text"] = float(per_text.detach().mean())
            if per_image.numel():
                metrics["mamo_mrm_image"] = float(per_image.detach().mean())
        return ObjectiveOutput(total, metrics)
