"""Transformer parts shared by the vision, text and fusion encoders.

One attention module serves self- and cross-attention, and one block serves both the pre-norm
layout of ViT and the post-norm layout of BERT, so a single set of parameter names holds every
encoder and the BERT converter (:mod:`maskvlp.models.pretrained`) has one mapping to maintain.
"""
from __future__ import annotations

import math
from typing import Literal, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

AttentionRequest = Union[bool, Literal["self", "cross", "both"]]


def _key_mask(mask: Tensor | None) -> Tensor | None:
    """(B, Lk) key-padding mask (True/1 = attend) -> bool (B, 1, 1, Lk), broadcast over heads and queries;
    a (B, Lq, Lk) mask (which key each query may see: a video's frame pattern) -> (B, 1, Lq, Lk)."""
    if mask is None:
        return None
    if mask.dim() == 3:
        return mask.to(torch.bool)[:, None]
    return mask.to(torch.bool)[:, None, None, :]


class Packing:
    """Where the real tokens of a padded (B, L) batch sit, so position-wise layers skip the padding.

    Captions in a batch vary in length (on the synthetic world the mean is ~60% of the longest),
    and the linear layers of a text block cost in proportion to the tokens they see. Projections,
    MLPs and LayerNorms therefore run on the (N, D) real tokens only; attention alone needs the
    padded (B, L, D) layout and gets it through :meth:`unpack` (padding rows are zero there,
    and masked out as keys). The idea is BERT "unpadding" (as in MosaicBERT / FlashAttention's
    varlen kernels) without a custom kernel.
    """

    def __init__(self, mask: Tensor):
        self.shape = mask.shape
        self.index = mask.reshape(-1).nonzero().squeeze(1)

    @staticmethod
    def for_mask(mask: Tensor | None) -> "Packing | None":
        """A packing when ``mask`` (B, L) has padding, else None (nothing to skip, or a (B, L, L) pattern)."""
        if mask is None or mask.dim() != 2 or bool(mask.all()):
            return None
        return Packing(mask.to(torch.bool))

    def pack(self, x: Tensor) -> Tensor:
        """(B, L, D) -> (N, D): the real tokens, row-major."""
        return x.reshape(-1, x.shape[-1]).index_select(0, self.index)

    def unpack(self, x: Tensor) -> Tensor:
        """(N, D) -> (B, L, D) with zeros at the padding."""
        b, length = self.shape
        out = x.new_zeros(b * length, x.shape[-1]).index_copy(0, self.index, x)
        return out.view(b, length, x.shape[-1])


def _sdpa(q: Tensor, k: Tensor, v: Tensor, key_mask: Tensor | None, dropout_p: float) -> Tensor:
    """Scaled dot-product attention; on a CPU, half-precision inputs are attended in fp32.

    Under bf16 autocast PyTorch's CPU flash-attention kernel ran 4-7x slower than in fp32 (forward
    + backward, torch 2.13, a 2-core Xeon with AMX: 25 vs 6 ms for a tiny ViT layer's attention,
    200 vs 34 ms for a fusion layer's), which cost more than bf16 matmuls saved. The attention
    matmuls are a small share of a step, so fp32 here costs little and keeps softmax exact.
    """
    if q.device.type == "cpu" and q.dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs straight back to bf16
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=key_mask, dropout_p=dropout_p)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask, dropout_p=dropout_p)


class Attention(nn.Module):
    """Multi-head attention; ``kv_dim`` set makes it cross-attention over a context of another width.

    ``query``/``key``/``value``/``out`` are separate Linear layers because BERT checkpoints store
    them separately. Dropout is applied to the attention probabilities and to the output
    projection (BERT's ``attention_probs_dropout_prob`` and ``hidden_dropout_prob``).
    """

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        kv_dim = dim if kv_dim is None else kv_dim
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim, bias=bias)
        self.key = nn.Linear(kv_dim, dim, bias=bias)
        self.value = nn.Linear(kv_dim, dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)
        self.out_drop = nn.Dropout(dropout)

    def _split(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        mask: Tensor | None = None,
        return_attention: bool = False,
        packing: Packing | None = None,
        context_index: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, Lq, dim); context: (B, Lk, kv_dim) or None for self-attention; mask: (B, Lk), True = attend.

        ``context_index`` (B,): query row r attends to context row ``context_index[r]`` of a (C, Lk, kv_dim)
        context, so keys and values are projected once per distinct context (ITM scores each image against
        several captions) instead of once per pair; ``mask`` is then per query row (B, Lk).

        Returns (B, Lq, dim), or ``(out, weights)`` with weights (B, heads, Lq, Lk) when
        ``return_attention`` (explicit softmax path, slower, used for teacher attention maps).
        With ``packing``, ``x`` and the output are the packed (N, dim) real query tokens; the
        context (cross-attention) stays padded.
        """
        unpack = packing.unpack if packing is not None else (lambda t: t)
        q = self._split(unpack(self.query(x)))
        if context is None:
            k, v = self._split(unpack(self.key(x))), self._split(unpack(self.value(x)))
        else:
            k, v = self.key(context), self.value(context)
            if context_index is not None:  # on contiguous rows: the backward is a cheap row-wise index_add
                k, v = k.index_select(0, context_index), v.index_select(0, context_index)
            k, v = self._split(k), self._split(v)
        key_mask = _key_mask(mask)
        p = self.dropout if self.training else 0.0
        weights = None
        if return_attention:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            if key_mask is not None:
                scores = scores.masked_fill(~key_mask, torch.finfo(scores.dtype).min)
            weights = scores.softmax(dim=-1)
            if key_mask is not None:  # a row with no key to attend gives zeros, as the SDPA path does
                weights = weights * key_mask
            y = F.dropout(weights, p=p, training=self.training) @ v
        else:
            y = _sdpa(q, k, v, key_mask, p)
        b, _, lq, _ = y.shape
        y = y.transpose(1, 2).reshape(b, lq, self.heads * self.head_dim)
        if packing is not None:
            y = packing.pack(y)
        y = self.out_drop(self.out(y))
        return (y, weights) if return_attention else y


class MLP(nn.Module):
    """Position-wise feed-forward: fc1 -> exact (erf) GELU, as BERT's "gelu" -> fc2 -> dropout."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Self-attention, optional cross-attention, MLP; pre-norm (ViT) or post-norm (BERT).

    Pre-norm:  x += attn(norm1(x)); x += cross(norm_cross(x), ctx); x += mlp(norm2(x)).
    Post-norm: x = norm1(x + attn(x)); x = norm_cross(x + cross(x, ctx)); x = norm2(x + mlp(x)).
    ``cross``/``norm_cross`` exist only when ``cross_kv_dim`` is given.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_hidden: int,
        cross_kv_dim: int | None = None,
        pre_norm: bool = True,
        eps: float = 1e-6,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, heads, dropout=dropout)
        self.cross: Attention | None = None
        self.norm_cross: nn.LayerNorm | None = None
        if cross_kv_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=eps)
            self.cross = Attention(dim, heads, kv_dim=cross_kv_dim, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MLP(dim, mlp_hidden, dropout=dropout)

    @staticmethod
    def _call(attn: Attention, x: Tensor, ctx: Tensor | None, mask: Tensor | None, want: bool,
              packing: Packing | None, ctx_index: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if want:
            return attn(x, ctx, mask, return_attention=True, packing=packing, context_index=ctx_index)
        return attn(x, ctx, mask, packing=packing, context_index=ctx_index), None

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        context: Tensor | None = None,
        context_mask: Tensor | None = None,
        return_attention: AttentionRequest = False,
        packing: Packing | None | bool = True,  # True: compute from mask
        context_index: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """x: (B, L, dim); mask: (B, L) over x's keys; context/context_mask: the cross-attention input.

        ``return_attention``: False -> the output tensor; True or ``"self"`` -> ``(out, self-attention
        weights (B, heads, L, L))``; ``"cross"`` -> ``(out, cross-attention weights (B, heads, L, Lc))``;
        ``"both"`` -> ``(out, (self weights, cross weights or None))``.

        When ``mask`` marks padding, every position-wise layer runs on the real tokens only
        (:class:`Packing`); the output is zero at the padding. ``packing``: True computes it from
        ``mask``; an encoder passes ``Packing.for_mask(mask)`` once for all its blocks instead (each
        computation is a host sync on a GPU); None runs padded. ``context_index``: row r of ``x`` reads
        context row ``context_index[r]`` (:meth:`Attention.forward`).
        """
        want_self, want_cross = self._requested(return_attention, context)
        if packing is True:
            packing = Packing.for_mask(mask)
        if packing is not None:
            x = packing.pack(x)
        layers = self._pre_norm_layers if self.pre_norm else self._post_norm_layers
        x, w_self, w_cross = layers(x, mask, context, context_mask, want_self, want_cross, packing, context_index)
        if packing is not None:
            x = packing.unpack(x)

        if return_attention == "both":
            return x, (w_self, w_cross)
        if want_cross:
            return x, w_cross
        if want_self:
            return x, w_self
        return x

    def _requested(self, return_attention: AttentionRequest, context: Tensor | None) -> tuple[bool, bool]:
        """Which weights ``return_attention`` asks for, ``(self, cross)``, after checking the call fits the block."""
        want_both = return_attention == "both"
        want_cross = return_attention == "cross" or want_both
        want_self = bool(return_attention) and (want_both or not want_cross)
        if self.cross is not None and context is None:
            raise ValueError("this block has cross-attention: pass `context`")
        if return_attention == "cross" and self.cross is None:
            raise ValueError("return_attention='cross' on a block without cross-attention")
        return want_self, want_cross

    def _pre_norm_layers(self, x: Tensor, mask: Tensor | None, context: Tensor | None, context_mask: Tensor | None,
                         want_self: bool, want_cross: bool, packing: Packing | None,
                         context_index: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """ViT layout: x += attn(norm1(x)); x += cross(norm_cross(x), ctx); x += mlp(norm2(x))."""
        a, w_self = self._call(self.attn, self.norm1(x), None, mask, want_self, packing)
        x = x + a
        w_cross = None
        if self.cross is not None:
            c, w_cross = self._call(self.cross, self.norm_cross(x), context, context_mask, want_cross, packing,
                                    context_index)
            x = x + c
        x = x + self.mlp(self.norm2(x))
        return x, w_self, w_cross

    def _post_norm_layers(self, x: Tensor, mask: Tensor | None, context: Tensor | None, context_mask: Tensor | None,
                          want_self: bool, want_cross: bool, packing: Packing | None,
                          context_index: Tensor | None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """BERT layout: x = norm1(x + attn(x)); x = norm_cross(x + cross(x, ctx)); x = norm2(x + mlp(x))."""
        a, w_self = self._call(self.attn, x, None, mask, want_self, packing)
        x = self.norm1(x + a)
        w_cross = None
        if self.cross is not None:
            c, w_cross = self._call(self.cross, x, context, context_mask, want_cross, packing, context_index)
            x = self.norm_cross(x + c)
        x = self.norm2(x + self.mlp(x))
        return x, w_self, w_cross


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """BERT/ViT initialisation for a freshly built encoder: truncated normal weights, zero biases.

    Use with ``model.apply(init_weights)``; LayerNorms get weight 1, bias 0.
    """
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
