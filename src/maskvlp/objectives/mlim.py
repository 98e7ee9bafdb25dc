"""MLIM: masked language and image modeling with Modality Aware Masking (arXiv 2109.12178).

One student pass per step computes both of MLIM's losses:

1. **Modality Aware Masking** (MAM) per sample: a mode is drawn (heavy image 0.8/0, heavy text
   0/0.8, light 0.15/0.15, equal probability) and each modality is masked at that mode's ratio,
   with exact counts (:func:`maskvlp.masking.modality_aware_mask`). Image counts differ per row, so
   masked patches are *replaced* by the ViT's learned mask token (never dropped: every position
   must come out of the fusion for RECON). Text uses BERT's 80/10/10 split.
2. The masked caption goes through the text tower, the masked image through the vision tower, and
   both through the ``merged`` (single-stream) fusion encoder.
3. **MLM**: the tied MLM head predicts the original token at every masked text position.
4. **RECON**: an objective-owned pixel decoder maps the fused image states at the patch positions,
   laid out on the patch grid, back to 3 x H x W pixels in [0, 1] (transposed convolutions +
   sigmoid), compared with the un-normalised input image by squared error.

Provenance ([P] paper abstract, [S] secondary summaries of the paper, [I]/[ours] our choice; see
docs/methods.md, "Sources"):

- two losses only, MLM + RECON, and MAM [P]; no ITC, no ITM, no teacher [P]/[S].
- modes, 0.8 heavy ratio, equal mode probability [S]; light ratio 0.15, the other modality left
  intact in the heavy modes, 80/10/10 text replacement [I] (notes' suggestions, unverified).
- replace-not-drop masking [S]; the paper reuses BERT's ``[MASK]`` embedding for image slots, we use
  the ViT's own learned mask token (the image is embedded at another width before fusion) [ours].
- image embedder: the paper uses a shallow kernel=stride CNN; we use the project's ViT tower (with
  ``stem: patch`` its kernel=stride patch projection has the same no-leak property) [ours].
- decoder: transposed convolutions back to full resolution, 3 channels, sigmoid [S]. Ours uses
  kernel = stride = 2 deconvolutions (each output pixel depends on its own patch's fused state
  only; a non-power-of-two factor is one last deconvolution), channels halving from
  ``decoder_width``, and 1x1 convolutions in and out [ours]; the paper's is 10 layers / 2.8M
  parameters [S], ours is far smaller at tiny size.
- RECON region: the summaries conflict (masked areas only vs the whole image) [S]; ``recon_region``
  switches, default ``masked`` (MIM practice) [I].
- RECON scale: the paper averages over images the per-image *sum* of squared pixel errors [S]
  (``recon_reduction: sum``). At 384 px that sum is ~10^3 x the MLM cross-entropy, so the default is
  ``mean``: per image the mean squared error over the region's values (pixels x channels), averaged
  over images, times ``recon_weight = 10``. 10 is about 1 / IMAGE_STD^2 (= 13.7), i.e. it puts the
  term on the scale of an MSE in the model's normalised input units, the scale at which MAE-style
  pixel losses are used with weight 1 [ours]. Caveat, measured at init on the tiny recipe (MiniLM
  text, 64 px, one batch): the MLM gradient into the ViT blocks is ~3e4 x that of the unweighted
  mean MSE (~550 x with a scratch text tower), so early on RECON barely moves the shared towers at
  weight 10; the paper's ``sum`` is ~4e3 x the mean at 64 px. ``recon_weight`` is the knob to tune.
- MLM is the mean over the global batch's masked tokens (as ``mlm.py``; the paper writes a sum) [ours].
- A sample with no masked text adds no MLM term; a sample with an empty RECON region (heavy text
  under ``masked``) adds no RECON term; RECON is the mean over images with a non-empty region of
  the global batch. Empty batches give a zero loss, never NaN.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from maskvlp.config import MLIMParams, ModelConfig
from maskvlp.config.objective_params import RECON_REDUCTIONS
from maskvlp.data.transforms import IMAGE_MEAN, IMAGE_STD
from maskvlp.distributed import mean_over_ranks_denominator
from maskvlp.masking import MaskingMode, ModalityAwareMask, modality_aware_mask
from maskvlp.models.vlp import FUSION, MASK_TOKEN, MLM as MLM_HEAD
from maskvlp.objectives.base import Objective, ObjectiveOutput, register, require_image_states, target_width
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.reads import Reads


# ------------------------------------------------------------------------------------ pieces
@dataclass
class MAMStepMask:
    """The step's modality-aware mask, shaped for ``ctx.image_mask``/``ctx.masked_image("replace")``
    (which read ``.masked``); the text half rides along so that anything naming the same key shares it."""

    mam: ModalityAwareMask

    @property
    def masked(self) -> torch.Tensor:
        """(B, N) bool, True = patch replaced by the mask token."""
        return self.mam.image_masked


def upsample_factors(patch_size: int) -> list[int]:
    """Per-layer upsampling factors whose product is ``patch_size``: 2s, then one odd remainder."""
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    factors = []
    rest = patch_size
    while rest % 2 == 0:
        factors.append(2)
        rest //= 2
    if rest > 1:
        factors.append(rest)
    return factors


class PixelDecoder(nn.Module):
    """Fused patch states (B, N, D) on a g x g grid -> pixels (B, 3, g*p, g*p) in [0, 1].

    1x1 conv D -> width, then per factor of ``patch_size`` a GELU and a kernel = stride transposed
    convolution (channels halve, at least 16), then GELU, 1x1 conv to 3 channels, sigmoid. Kernel =
    stride means an output pixel reads only the fused state of the patch it lies in.
    """

    def __init__(self, in_dim: int, patch_size: int, width: int = 128, min_width: int = 16):
        super().__init__()
        self.patch_size = patch_size
        layers: list[nn.Module] = [nn.Conv2d(in_dim, width, 1)]
        c = width
        for f in upsample_factors(patch_size):
            out = max(min_width, c // 2)
            layers += [nn.GELU(), nn.ConvTranspose2d(c, out, f, stride=f)]
            c = out
        layers += [nn.GELU(), nn.Conv2d(c, 3, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        b, n, d = states.shape
        g = math.isqrt(n)
        if g * g != n:
            raise ValueError(f"the pixel decoder needs a square patch grid, got {n} patches")
        grid = states.transpose(1, 2).reshape(b, d, g, g)
        return torch.sigmoid(self.net(grid))


def pixel_region(masked: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, N) patch mask in raster order -> (B, 1, g*p, g*p) bool pixel mask."""
    b, n = masked.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"expected a square patch grid, got {n} patches")
    grid = masked.bool().reshape(b, 1, g, g)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def unnormalise(images: torch.Tensor) -> torch.Tensor:
    """The model's normalised input back to pixels in [0, 1] (clamped), without gradient."""
    mean = torch.tensor(IMAGE_MEAN, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    with torch.no_grad():
        return (images.detach().float() * std + mean).clamp_(0.0, 1.0)


def per_image_recon_error(pred: torch.Tensor, target: torch.Tensor, region: torch.Tensor,
                          reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error of each image over its region: ((B,) error, (B,) bool region non-empty).

    ``region`` (B, 1, H, W) bool selects pixels (all channels). ``sum``: the sum of squared errors
    over the region's values (the paper's per-image SSE); ``mean``: that sum divided by the number
    of values (region pixels x channels). Images with an empty region get error 0 and False.
    """
    if reduction not in RECON_REDUCTIONS:
        raise ValueError(f"reduction must be one of {RECON_REDUCTIONS}, got {reduction!r}")
    weight = region.to(pred.dtype)
    sse = ((pred.float() - target.float()) ** 2 * weight).flatten(1).sum(1)
    values = weight.flatten(1).sum(1) * pred.shape[1]
    present = values > 0
    if reduction == "mean":
        sse = sse / values.clamp(min=1)
    return sse, present


@dataclass
class MLIMStep:
    """Everything one MLIM step computed (the losses read it; tests inspect it)."""

    mask: ModalityAwareMask
    mlm_positions: torch.Tensor  # (B, L) bool: text positions whose token the MLM head predicted
    mlm_logits: torch.Tensor  # (M, V) at those positions, row-major order
    mlm_labels: torch.Tensor  # (M,) original ids
    recon: torch.Tensor  # (B, 3, H, W) decoder output in [0, 1]; stem target: (B, C, g, g) features
    target: torch.Tensor  # (B, 3, H, W) original pixels in [0, 1], or the stem's (B, C, g, g); no gradient
    region: torch.Tensor  # (B, 1, H, W) bool (or (B, 1, g, g) for the stem): what RECON is computed over


# ------------------------------------------------------------------------------------ objective
@register
class MLIM(Objective):
    """MLM + RECON from one modality-aware-masked single-stream pass (see the module docstring).

    One class rather than ``mlm``-like + ``recon`` objectives: MAM couples the text and image masks
    of a sample (the mode decides both), and both losses read the same fused pass, which the step
    context does not cache; split objectives would have to redo or smuggle that pass.
    """

    name = "mlim"

    def __init__(self, model_cfg: ModelConfig, params: MLIMParams | None = None):
        super().__init__(model_cfg, params)
        p: MLIMParams = self.params
        require_image_states(self.name, model_cfg, "reconstructs pixels from image-side fused states")
        weights = p.mode_weights
        total = float(sum(weights))
        heavy, light = float(p.heavy_ratio), float(p.light_ratio)
        self.modes: tuple[MaskingMode, ...] = (
            MaskingMode("heavy_image", heavy, 0.0, weights[0] / total),
            MaskingMode("heavy_text", 0.0, heavy, weights[1] / total),
            MaskingMode("light", light, light, weights[2] / total),
        )
        self.recon_region: str = p.recon_region
        self.recon_reduction: str = p.recon_reduction
        self.recon_weight: float = float(p.recon_weight)
        self.patch_size = model_cfg.vision.patch_size
        self.recon_target: str = p.recon_target
        if self.recon_target == "pixels":
            self.decoder: nn.Module = PixelDecoder(model_cfg.text.width, self.patch_size, p.decoder_width)
        else:  # one linear map per patch: what a patch's fused state says about its stem features
            self.decoder = nn.Linear(model_cfg.text.width, target_width(self.name, model_cfg, "stem"))
        self.mask_key = "mam/" + "/".join(f"{m.image_ratio:g}-{m.text_ratio:g}-{m.probability:.6f}" for m in self.modes)

    def reads(self) -> Reads:
        return Reads(parts={FUSION, MLM_HEAD, MASK_TOKEN})

    # -------------------------------------------------------------- pieces of a step
    def draw_mask(self, ctx: StepContext) -> MAMStepMask:
        """This step's MAM draw for the local rows, from noise drawn for the global batch."""
        ids, att = ctx.batch.input_ids, ctx.batch.attention_mask
        sp = ctx.specials
        mam = modality_aware_mask(
            ids, att, sp.special_ids, sp.mask_id, sp.vocab_size, ctx.num_patches, modes=self.modes,
            mode_noise=ctx.global_rand("mam-mode"), image_noise=ctx.patch_noise("mam-image"),
            text_noise=ctx.global_rand("mam-text", ids.shape[1], 3),
        )
        return MAMStepMask(mam)

    def compute(self, ctx: StepContext) -> MLIMStep:
        """The masked single-stream pass and both heads' outputs."""
        model = ctx.model
        images = ctx.batch.images
        if images.dim() == 5:
            if images.shape[1] != 1:
                raise ValueError("mlim reconstructs pictures; got a multi-frame video batch")
            images = images[:, 0]
        step_mask = ctx.image_mask(self.mask_key, lambda: self.draw_mask(ctx))
        mam = step_mask.mam
        image_tokens = ctx.masked_image(self.mask_key, "replace").tokens  # [CLS] + all N patches
        att = ctx.batch.attention_mask
        text_tokens = model.encode_text(mam.text.input_ids, att).tokens
        fused = model.fuse(text_tokens, att, image_tokens, need_image=True)
        positions = mam.text.masked
        logits = model.mlm_head(fused.text[positions])
        if self.recon_target == "pixels":
            recon, target, unit = self.decoder(fused.image[:, 1:]), unnormalise(images), self.patch_size
        else:
            recon, target, unit = self._feature_maps(ctx, fused.image[:, 1:]), self._feature_maps(ctx, None), 1
        if recon.shape != target.shape:
            raise ValueError(f"decoder output {tuple(recon.shape)} does not match the target {tuple(target.shape)}")
        if self.recon_region == "masked":
            region = pixel_region(mam.image_masked, unit)
        else:
            region = torch.ones(target.shape[0], 1, *target.shape[2:], dtype=torch.bool, device=target.device)
        return MLIMStep(mam, positions, logits, mam.text.labels[positions], recon, target, region)

    def _feature_maps(self, ctx: StepContext, states: torch.Tensor | None) -> torch.Tensor:
        """(B, C, g, g): the head's prediction from fused patch states, or (``states`` None) the target, the
        frozen stem's features of the clean patches, layer-normalised per patch, without gradient."""
        if states is None:
            with torch.no_grad():
                x = ctx.stem_patches.float()
                x = F.layer_norm(x, x.shape[-1:], eps=1e-6)
        else:
            x = self.decoder(states)
        b, n, c = x.shape
        g = math.isqrt(n)
        return x.transpose(1, 2).reshape(b, c, g, g)

    def forward(self, ctx: StepContext) -> ObjectiveOutput:
        out = self.compute(ctx)
        per_token = F.cross_entropy(out.mlm_logits.float(), out.mlm_labels, reduction="none")
        mlm = per_token.sum() / mean_over_ranks_denominator(per_token.numel())
        err, present = per_image_recon_error(out.recon, out.target, out.region, self.recon_reduction)
        recon = err.sum() / mean_over_ranks_denominator(int(present.sum()))
        loss = mlm + self.recon_weight * recon
        metrics = {"mlim_mlm": float(mlm.detach()), "mlim_recon": float(recon.detach())}
        with torch.no_grad():  # no accuracy or error where nothing was masked (not a 0 that reads as "all wrong")
            if per_token.numel():
                metrics["mlim_mlm_acc"] = float((out.mlm_logits.argmax(-1) == out.mlm_labels).float().mean())
            if int(present.sum()):
                mse, _ = per_image_recon_error(out.recon, out.target, out.region, "mean")
                metrics["mlim_recon_mse"] = float(mse.sum() / int(present.sum()))
        return ObjectiveOutput(loss, metrics)
