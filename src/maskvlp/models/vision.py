"""Vision Transformer with the two masking paths masked-modeling methods need.

* ``mask``: masked patches are replaced by a learned ``mask_token`` before positions are added, so
  the encoder still sees every position and knows where the holes are (BEiT / MLIM / MAMO style).
* ``keep_idx``: only the kept patches enter the encoder, after positions are added (MAE / FLIP
  style); this is the cheap path since attention cost falls with the square of the kept count.

Video, SCL's flexible encoder (docs/methods.md, "SCL"): with ``cfg.max_frames > 1`` the input may be
(B, T, 3, H, W). Every frame is patch-embedded alone and gets its own CLS token; the spatial positions
are shared by the frames and a learned temporal embedding per frame index is added to every token of
the frame, its CLS included. In every block a frame's CLS attends to all tokens of all frames and a
patch token only to its own frame (its CLS and patches), so the frames talk through their CLS tokens
and the cost stays near T separate pictures. The output is ``[mean of the frame CLS, CLS_1..CLS_T,
patches of frame 1, ..., frame T]``: position 0 is the clip's global feature (SCL's ITC embedding and
pooler average the frame CLS), so everything that reads ``tokens[:, 0]`` works on clips. A (B, 3, H, W)
picture, or a one-frame clip, is the plain ViT: ``[CLS, patches]``, exactly the image path. ``mask``
and ``keep_idx`` index the concatenated patch sequence (T*N), so for pictures they index the N patches
directly.
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from maskvlp.config import OVERLAPPING_STEMS, STEMS, VisionConfig
from maskvlp.models.efficientnet import EfficientNetStem
from maskvlp.models.transformer import Block, init_weights


def sincos_1d(positions: Tensor, dim: int) -> Tensor:
    """(P,) positions -> (P, dim): half sines, half cosines at frequencies 1 / 10000^(2i/dim) (Transformer)."""
    if dim % 2:
        raise ValueError(f"a sine-cosine embedding needs an even width, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim // 2))
    angles = positions.to(torch.float64)[:, None] * freq[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def sincos_2d(grid: int, dim: int) -> Tensor:
    """(grid*grid, dim) for a row-major patch grid: the first half of the width encodes the row, the second
    the column (MAE's fixed embedding); every entry in [-1, 1], a token's norm sqrt(dim / 2)."""
    if dim % 4:
        raise ValueError(f"a 2D sine-cosine embedding needs a width divisible by 4, got {dim}")
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.cat([sincos_1d(rows.flatten(), dim // 2), sincos_1d(cols.flatten(), dim // 2)], dim=1)


@dataclass
class VisionOutput:
    tokens: Tensor  # (B, 1 [+ T] + K, D) with keep_idx, else (B, 1 [+ T] + T*N, D); global CLS first, final LayerNorm
    # applied; the T frame CLS tokens follow it for clips of T > 1 frames
    keep_idx: Tensor | None  # (B, K) indices of the kept patches, as given
    attention: Tensor | None = None  # last block's self-attention (B, heads, L, L) when asked for


def random_keep_indices(
    batch: int,
    num_patches: int,
    keep: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(batch, keep) indices of a uniformly random subset of patches per row, sorted ascending.

    Sorted so that kept tokens stay in raster order (harmless for attention, handy for debugging
    and for gathering targets in the same order).
    """
    if not 0 < keep <= num_patches:
        raise ValueError(f"keep must be in [1, {num_patches}], got {keep}")
    if device is None and generator is not None:
        device = generator.device
    noise = torch.rand(batch, num_patches, generator=generator, device=device)
    return noise.argsort(dim=1)[:, :keep].sort(dim=1).values


def stem_channels(patch_size: int, width: int) -> list[int]:
    """Channels of a conv stem's stride-2 layers, from RGB to ``width``: log2(patch_size) layers,
    each doubling the channels (at least 16)."""
    steps = int(math.log2(patch_size))
    if 2**steps != patch_size:
        raise ValueError(f"the conv stem needs a power-of-two patch size, got {patch_size}")
    return [3] + [max(16, width >> (steps - i)) for i in range(1, steps + 1)]


class ConvPatchEmbed(nn.Module):
    """A small CNN applied to each patch on its own, in place of the single linear patch projection.

    Early convolutions make ViTs from scratch learn much faster on small data (Xiao et al., 2021,
    "Early Convolutions Help Transformers See Better"). Unlike their overlapping stem, this one runs
    inside each patch (zero padding at the patch border), so a patch's embedding depends on that
    patch alone: masking a patch hides it completely, as masked image modeling needs.
    Output layout matches ``nn.Conv2d(3, D, p, p)``: (B, D, H/p, W/p).
    """

    def __init__(self, patch_size: int, width: int):
        super().__init__()
        channels = stem_channels(patch_size, width)
        steps = len(channels) - 1
        layers: list[nn.Module] = []
        for i in range(steps):
            layers.append(nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1))
            if i < steps - 1:
                layers += [nn.GroupNorm(1, channels[i + 1]), nn.GELU()]
        self.net = nn.Sequential(*layers)
        self.patch_size = patch_size

    def forward(self, images: Tensor) -> Tensor:
        b, c, h, w = images.shape
        p = self.patch_size
        gh, gw = h // p, w // p
        patches = images.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b * gh * gw, c, p, p)
        out = self.net(patches).reshape(b, gh, gw, -1)
        return out.permute(0, 3, 1, 2)


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of each pixel of a (B, C, H, W) map: unlike GroupNorm or BatchNorm it
    mixes no statistics across positions or images, so a token depends on its receptive field alone."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class OverlappingConvStem(nn.Module):
    """Xiao et al.'s early-convolution stem: 3x3 convolutions of stride 2 over the whole image, then a
    1x1 projection to the ViT width; one token per ``patch_size`` cell, as the linear embedding.

    Unlike :class:`ConvPatchEmbed` the kernels straddle patch borders, so a token sees its
    neighbours' pixels: shapes that span several patches are read in the stem rather than learned
    by attention from near-uniform weights. That same overlap would let a hidden patch leak into the
    tokens beside it, so :meth:`VisionTransformer.embed_patches` zeroes the pixels of masked and
    dropped patches before this stem runs (as masked-convolution MAE variants do).
    Output layout matches ``nn.Conv2d(3, D, p, p)``: (B, D, H/p, W/p).
    """

    def __init__(self, patch_size: int, width: int):
        super().__init__()
        channels = stem_channels(patch_size, width)
        steps = len(channels) - 1
        layers: list[nn.Module] = []
        for i in range(steps):
            layers += [nn.Conv2d(channels[i], channels[i + 1], 3, stride=2, padding=1, bias=False),
                       ChannelNorm(channels[i + 1]), nn.GELU()]
        layers.append(nn.Conv2d(channels[-1], width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)


class VisionTransformer(nn.Module):
    """ViT encoder: Conv2d patch embedding, CLS token, learned positions, pre-norm blocks, final LayerNorm."""

    def __init__(self, cfg: VisionConfig):
        super().__init__()
        if cfg.image_size % cfg.patch_size:
            raise ValueError("image_size must be a multiple of patch_size")
        self.cfg = cfg
        self.width = cfg.width
        self.grid = cfg.image_size // cfg.patch_size
        d = cfg.width
        if cfg.stem == "conv":
            self.patch_embed: nn.Module = ConvPatchEmbed(cfg.patch_size, d)
        elif cfg.stem == "overlap":
            self.patch_embed = OverlappingConvStem(cfg.patch_size, d)
        elif cfg.stem == "efficientnet_lite0":
            self.patch_embed = EfficientNetStem(cfg.patch_size, d, trainable=cfg.stem_trainable)
        elif cfg.stem == "patch":
            self.patch_embed = nn.Conv2d(3, d, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        else:
            raise ValueError(f"model.vision.stem must be one of {', '.join(STEMS)}, got {cfg.stem!r}")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.temporal_embed = nn.Parameter(torch.zeros(1, cfg.max_frames, d)) if cfg.max_frames > 1 else None
        hidden = int(d * cfg.mlp_ratio)
        self.blocks = nn.ModuleList(
            Block(d, cfg.heads, hidden, pre_norm=True, eps=cfg.layer_norm_eps) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(d, eps=cfg.layer_norm_eps)
        self.apply(init_weights)
        if isinstance(self.patch_embed, EfficientNetStem):
            self.patch_embed.init_trunk()
        inits = ((self.cls_token, 0.02), (self.pos_embed, cfg.pos_init_std), (self.mask_token, 0.02),
                 (self.temporal_embed, cfg.temporal_init_std))
        for p, std in inits:  # this order keeps the draws of earlier runs
            if p is not None:
                nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
        if cfg.pos_embed == "sincos":
            self._fix_sincos_positions()
        elif cfg.pos_embed != "learned":
            raise ValueError(f"model.vision.pos_embed must be learned or sincos, got {cfg.pos_embed!r}")

    def _fix_sincos_positions(self) -> None:
        """Fixed positions at the stem tokens' scale: the patches' 2D sine-cosine embedding (the CLS at
        zero), the frames' 1D one. A learned embedding starts at norm ~0.25 beside tokens of norm ~10 and
        barely grows in a few hundred steps, so where a token sits is ~2% of it (docs/design.md)."""
        with torch.no_grad():
            self.pos_embed.zero_()
            self.pos_embed[0, 1:] = sincos_2d(self.grid, self.width)
            if self.temporal_embed is not None:
                self.temporal_embed.copy_(sincos_1d(torch.arange(self.cfg.max_frames), self.width)[None])
        self.pos_embed.requires_grad_(False)
        if self.temporal_embed is not None:
            self.temporal_embed.requires_grad_(False)

    @property
    def num_patches(self) -> int:
        """Patches per frame (N); a T-frame input has T*N patch tokens."""
        return self.grid * self.grid

    def _frames(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) or (B, T, 3, H, W) -> (B, T, 3, H, W), with clear errors for wrong inputs."""
        if images.dim() == 4:
            images = images.unsqueeze(1)
        if images.dim() != 5 or images.shape[2] != 3:
            raise ValueError(f"expected images (B, 3, H, W) or (B, T, 3, H, W), got {tuple(images.shape)}")
        t, h, w = images.shape[1], images.shape[-2], images.shape[-1]
        if t > self.cfg.max_frames:
            raise ValueError(f"{t} frames given, model.vision.max_frames is {self.cfg.max_frames}")
        if h != self.cfg.image_size or w != self.cfg.image_size:
            raise ValueError(f"expected {self.cfg.image_size}x{self.cfg.image_size} images, got {h}x{w}")
        return images

    def frozen_stem_features(self, images: Tensor) -> Tensor | None:
        """The frozen part of the stem (a pretrained trunk that does not train) on whole images, or None
        when the stem has none. Its output is the same for the student and the EMA teacher (the teacher's
        copy of a frozen weight never moves), so a step computes it once for both clean-image passes."""
        if not (isinstance(self.patch_embed, EfficientNetStem) and self.patch_embed.trunk_frozen):
            return None
        with torch.no_grad():
            return self.patch_embed.trunk_features(self._frames(images).flatten(0, 1))

    def embed_patches(self, images: Tensor, mask: Tensor | None = None, hidden: Tensor | None = None,
                      stem_features: Tensor | None = None) -> Tensor:
        """Patch tokens with positions (and temporal embedding) added: (B, T*N, D); no CLS.

        ``mask`` (B, T*N) True = replace that patch by ``mask_token`` (before positions).
        ``hidden`` (B, T*N) True = that patch must not be seen at all (masked or dropped): with an
        overlapping stem its pixels are zeroed first, so its content cannot reach the kept tokens.
        ``stem_features``: :meth:`frozen_stem_features` of these (whole, unzeroed) images.
        """
        images = self._frames(images)
        b, t = images.shape[:2]
        n = t * self.num_patches
        for name, m in (("mask", mask), ("hidden", hidden)):
            if m is not None and m.shape != (b, n):
                raise ValueError(f"{name} must be (B, {n}), got {tuple(m.shape)}")
        if hidden is not None and self.cfg.stem in OVERLAPPING_STEMS:
            if stem_features is not None:
                raise ValueError("stem_features are of whole images; a pass that hides pixels computes its own")
            p = self.cfg.patch_size
            pixels = hidden.to(torch.bool).view(b, t, 1, self.grid, 1, self.grid, 1)
            pixels = pixels.expand(-1, -1, -1, -1, p, -1, p).reshape(b, t, 1, self.grid * p, self.grid * p)
            images = images.masked_fill(pixels, 0.0)
        shared = {} if stem_features is None else {"trunk_features": stem_features}
        x = self.patch_embed(images.flatten(0, 1), **shared).flatten(2).transpose(1, 2)  # (B*T, N, D)
        x = x.reshape(b, n, self.width)
        if mask is not None:
            x = torch.where(mask.to(torch.bool).unsqueeze(-1), self.mask_token.to(x.dtype), x)
        x = x.view(b, t, self.num_patches, self.width) + self.pos_embed[:, None, 1:]
        if self.temporal_embed is not None:
            x = x + self.temporal_embed[:, :t, None]
        return x.reshape(b, t * self.num_patches, self.width)

    def forward(
        self,
        images: Tensor,
        keep_idx: Tensor | None = None,
        mask: Tensor | None = None,
        return_attention: bool = False,
        stem_features: Tensor | None = None,
    ) -> VisionOutput:
        """Encode images; ``mask`` (B, T*N) bool and/or ``keep_idx`` (B, K) long; see the module docstring.

        ``return_attention`` also returns the last block's self-attention weights (e.g. CLS-to-patch
        maps for attention-guided masking).
        """
        hidden = mask
        if keep_idx is not None and self.cfg.stem in OVERLAPPING_STEMS:
            n = images.shape[1] * self.num_patches if images.dim() == 5 else self.num_patches
            dropped = torch.ones(images.shape[0], n, dtype=torch.bool, device=images.device)
            dropped = dropped.scatter(1, keep_idx, False)
            hidden = dropped if mask is None else dropped | mask.to(torch.bool)
        x = self.embed_patches(images, mask, hidden, stem_features)
        if keep_idx is not None:
            x = torch.gather(x, 1, keep_idx.unsqueeze(-1).expand(-1, -1, self.width))
        frames = images.shape[1] if images.dim() == 5 else 1
        cls = self.cls_token + self.pos_embed[:, :1]
        if self.temporal_embed is not None:
            cls = cls + self.temporal_embed[:, :frames]  # (1, T, D): one CLS per frame
        x = torch.cat([cls.expand(x.shape[0], -1, -1).to(x.dtype), x], dim=1)
        pattern = self.frame_pattern(x.shape[0], frames, keep_idx, x.device) if frames > 1 else None
        attention = None
        for i, block in enumerate(self.blocks):
            if return_attention and i == len(self.blocks) - 1:
                x, attention = block(x, mask=pattern, return_attention=True)
            else:
                x = block(x, mask=pattern)
        x = self.norm(x)
        if frames > 1:
            x = torch.cat([x[:, :frames].mean(1, keepdim=True), x], dim=1)
        return VisionOutput(tokens=x, keep_idx=keep_idx, attention=attention)

    def frame_pattern(self, batch: int, frames: int, keep_idx: Tensor | None, device: torch.device) -> Tensor:
        """(B, L, L) bool, True = may attend, over ``[CLS_1..CLS_T, patches]``: a CLS sees every token, a patch
        the tokens of its own frame (SCL's video attention) and, with ``cfg.patch_time_attention``, also the
        patches at its own position in the other frames (TimeSformer's time attention, folded into the one
        attention: a patch can then see what changed where it sits)."""
        n = self.num_patches
        patch_index = keep_idx if keep_idx is not None else torch.arange(frames * n, device=device).expand(batch, -1)
        token_frame = torch.cat([torch.arange(frames, device=device).expand(batch, -1), patch_index // n], dim=1)
        is_cls = torch.zeros_like(token_frame, dtype=torch.bool)
        is_cls[:, :frames] = True
        pattern = is_cls[:, :, None] | (token_frame[:, :, None] == token_frame[:, None, :])
        if self.cfg.patch_time_attention:
            # a CLS sits at place -1: it already sees everything, and no patch shares its place
            where = torch.cat([torch.full((batch, frames), -1, device=device), patch_index % n], dim=1)
            pattern = pattern | (where[:, :, None] == where[:, None, :])
        return pattern

    @staticmethod
    def frames_in(tokens: int, num_patches: int) -> int:
        """How many frames an encoded sequence of ``tokens`` holds with all patches kept: 1 for ``[CLS,
        patches]``, T for ``[global, CLS_1..CLS_T, T*N patches]``."""
        return (tokens - 1) // (num_patches + 1) if tokens > 1 + num_patches else 1
