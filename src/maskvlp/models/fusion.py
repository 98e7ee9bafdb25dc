"""Multimodal fusion encoders: how text and image tokens meet.

Modes (``FusionConfig.mode``):

* ``text_to_image`` (ALBEF): post-norm blocks over the text with cross-attention to the image
  tokens; only text states come out.
* ``cross`` (METER / SCL two-way co-attention): image tokens are projected to the text width; each
  layer has a text block (self-attn, cross-attn to image, MLP) and an image block (self-attn,
  cross-attn to text, MLP), both reading the *previous* layer's output of the other stream.
* ``two_stream`` (ours): the text stream is exactly ``text_to_image`` (it reads the image encoder's
  tokens, never the image stream), and an image stream (at the *vision* width: self-attention,
  cross-attention to the text stream's input of the same layer, MLP) runs only when an objective
  reads fused image states. ITM and MLM then cost what they cost in ALBEF, and only MIM-style
  objectives pay for image-side fusion; in ``cross`` mode every ITM pair pays for both streams
  (measured: the cross-fused recipes took 1.6-2.5x an ALBEF step, benchmarks/recipe_cost.py).
  The image stream keeps the vision encoder's width (as a ViT continued with cross-attention)
  rather than the text width: in ``tiny`` (ViT 192, text 384) that makes its blocks ~4x cheaper
  over the 65 image tokens; where both widths agree (``base``) nothing changes.
* ``merged`` (MLIM single stream): image tokens projected to the text width, a learned modality
  embedding added to each stream, [text; image] concatenated through self-attention blocks, split back.

In every mode ``self.blocks[i]`` is the text-stream (or single-stream) block that BERT layer
``text.depth + i`` initialises: its ``attn``/``norm1``/``mlp``/``norm2`` have the same names as in
the text encoder. Cross-attention, the image stream and the projections start fresh (as in ALBEF).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from maskvlp.config import FUSION_MODES
from maskvlp.models.transformer import Block, Packing, init_weights


IMAGE_STATE_MODES = ("two_stream", "cross", "merged")  # the modes whose output has fused image states


def fused_image_width(mode: str, text_width: int, image_width: int) -> int:
    """Width of the fused image states: the vision width in ``two_stream``, the text width otherwise."""
    return image_width if mode == "two_stream" else text_width


@dataclass
class FusionOutput:
    text: Tensor | None  # (B, Lt, text_width); None only when asked for image states alone (``need_text=False``)
    image: Tensor | None  # (B, Li, fused_image_width) in the IMAGE_STATE_MODES when asked for, else None
    # with ``return_attention``, the last text-stream block's weights (mean over heads):
    text_self_attention: Tensor | None = None  # (B, Lt, Lt)
    text_image_attention: Tensor | None = None  # (B, Lt, Li): how much each text token reads each image token
    text_cls_attention_heads: Tensor | None = None  # (B, heads, Lt): the [CLS] self-attention row per head


class FusionEncoder(nn.Module):
    """Fuses text states (B, Lt, text_width) with image tokens (B, Li, image_width); see the module docstring.

    Each mode is one method, ``_fuse_<mode>``; :meth:`forward` checks the request and hands it a
    :class:`_FusionCall` (the call's masks and options, which blocks keep a graph, the attention maps)."""

    def __init__(
        self,
        mode: str,
        depth: int,
        text_width: int,
        image_width: int,
        heads: int,
        intermediate: int,
        eps: float = 1e-12,
        dropout: float = 0.0,
        image_heads: int | None = None,
        image_intermediate: int | None = None,
    ):
        """``image_heads``/``image_intermediate`` size the ``two_stream`` image stream (vision width);
        they default to ``heads`` and 4x the image width."""
        super().__init__()
        if mode not in FUSION_MODES:
            raise ValueError(f"unknown fusion mode {mode!r}; valid: {', '.join(FUSION_MODES)}")
        self.mode = mode
        self.depth = depth
        self.text_width = text_width

        def block(cross_kv_dim: int | None) -> Block:
            return Block(text_width, heads, intermediate, cross_kv_dim=cross_kv_dim, pre_norm=False, eps=eps, dropout=dropout)

        self.image_proj: nn.Linear | None = None
        self.image_blocks: nn.ModuleList | None = None
        self.modality_embed: nn.Parameter | None = None
        if mode in ("text_to_image", "two_stream"):
            self.blocks = nn.ModuleList(block(image_width) for _ in range(depth))
            if mode == "two_stream":
                self.image_blocks = nn.ModuleList(
                    Block(image_width, image_heads or heads, image_intermediate or 4 * image_width,
                          cross_kv_dim=text_width, pre_norm=False, eps=eps, dropout=dropout)
                    for _ in range(depth))
        elif mode == "cross":
            self.image_proj = nn.Linear(image_width, text_width)
            self.blocks = nn.ModuleList(block(text_width) for _ in range(depth))
            self.image_blocks = nn.ModuleList(block(text_width) for _ in range(depth))
        else:  # merged
            self.image_proj = nn.Linear(image_width, text_width)
            self.modality_embed = nn.Parameter(torch.zeros(2, text_width))  # row 0: text, row 1: image
            self.blocks = nn.ModuleList(block(None) for _ in range(depth))
        self.apply(init_weights)
        if self.modality_embed is not None:
            nn.init.trunc_normal_(self.modality_embed, std=0.02, a=-0.04, b=0.04)

    def forward(self, text: Tensor, text_mask: Tensor, image: Tensor, image_mask: Tensor | None = None,
                return_attention: bool = False, need_image: bool = True, need_text: bool = True,
                text_grad: bool = True, image_grad: bool = True, image_index: Tensor | None = None,
                image_context: Tensor | None = None) -> FusionOutput:
        """text_mask (B, Lt) 1/True = real token; image_mask (B, Li) or None = every image token is real.

        ``image_index`` (B,): text row r is paired with image row ``image_index[r]`` of ``image`` (C, Li, D)
        (and of ``image_mask``); the text stream's cross-attention then projects each image once, not
        once per pair. Modes whose image stream runs take the per-pair images.

        ``return_attention`` adds the last text-stream block's self-attention and text-to-image
        weights, averaged over heads (teacher maps for guided masking and keyword selection).
        ``need_image=False`` skips the image stream (``two_stream``) or its last block (``cross``),
        which only the image side would read (ITM and MLM read text states only).
        ``need_text=False`` (``two_stream`` and ``cross``, without attention maps) skips the last
        text-stream block, which no image-stream block reads; ``text`` is then None.
        ``text_grad=False`` / ``image_grad=False`` say that stream's *output* is only a (detached)
        target: the blocks that only it depends on run without autograd, so their activations are not
        kept for backward (SCL's completion targets). Blocks the other stream reads keep their graph,
        so the gradient of everything that is trained is unchanged. ``merged`` cannot split its stream.
        ``image_context`` (``two_stream`` only; B, Lt, text width, masked by ``text_mask``): one fixed text
        context that every image-stream block reads instead of the text stream's layer inputs (SIMLA's
        image queries read the caption's embedding-layer output at every layer); with ``need_text=False``
        the text stream then does not run at all.
        """
        if image_context is not None and self.mode != "two_stream":
            raise ValueError(f"image_context is for the two_stream image stream; this fusion is {self.mode}")
        if not (need_text or need_image):
            raise ValueError("fusion asked for neither text nor image states")
        if image_index is not None:
            if image_mask is not None:
                image_mask = image_mask.index_select(0, image_index)
            if self.mode != "text_to_image" and not (self.mode == "two_stream" and not need_image):
                image, image_index = image.index_select(0, image_index), None
        call = _FusionCall(self.mode, len(self.blocks) - 1, text_mask, image_mask, image_index, return_attention,
                           need_image, need_text, text_grad, image_grad)
        call.image_context = image_context
        return getattr(self, f"_fuse_{self.mode}")(text, image, call)

    # ------------------------------------------------------------------ one method per mode
    def _text_stream(self, text: Tensor, image: Tensor, call: "_FusionCall") -> tuple[Tensor, list[Tensor]]:
        """ALBEF's text stream over ``image``: the last block's output and every block's input (the
        ``two_stream`` image stream reads them). The last block is skipped when no one reads it."""
        x = text
        layer_inputs = []
        for i, blk in enumerate(self.blocks):
            layer_inputs.append(x)
            if not (call.skip_last_text and i == call.last):
                with torch.set_grad_enabled(call.text_block_grad[i]):
                    x = call.text_block(i, blk, x, image)
        return x, layer_inputs

    def _fuse_text_to_image(self, text: Tensor, image: Tensor, call: "_FusionCall") -> FusionOutput:
        """ALBEF: the text stream alone; no image states come out."""
        x, _ = self._text_stream(text, image, call)
        return call.output(x, None)

    def _fuse_two_stream(self, text: Tensor, image: Tensor, call: "_FusionCall") -> FusionOutput:
        """The text stream as ``text_to_image``; the image stream (when needed) cross-attends to the
        text stream's input of the same layer, or to ``call.image_context`` at every layer."""
        fixed = call.image_context
        if fixed is not None and call.skip_last_text:
            x, layer_inputs = None, [fixed] * len(self.blocks)  # no block of the text stream is read
        else:
            x, layer_inputs = self._text_stream(text, image, call)
            if fixed is not None:
                layer_inputs = [fixed] * len(layer_inputs)
        img = None
        if call.need_image:
            assert self.image_blocks is not None
            img = image
            for i, (iblk, t_in) in enumerate(zip(self.image_blocks, layer_inputs)):
                with torch.set_grad_enabled(call.image_block_grad[i]):
                    img = iblk(img, mask=call.image_mask, context=t_in, context_mask=call.text_mask)
        return call.output(x, img)

    def _fuse_cross(self, text: Tensor, image: Tensor, call: "_FusionCall") -> FusionOutput:
        """Two-way co-attention: each layer's text and image blocks read the other stream's previous output."""
        assert self.image_proj is not None and self.image_blocks is not None
        img = self.image_proj(image)
        t = text
        for i, (tblk, iblk) in enumerate(zip(self.blocks, self.image_blocks)):
            with torch.set_grad_enabled(call.text_block_grad[i]):
                t_next = None if (call.skip_last_text and i == call.last) else call.text_block(i, tblk, t, img)
            if call.need_image or i < call.last:
                with torch.set_grad_enabled(call.image_block_grad[i]):
                    img = iblk(img, mask=call.image_mask, context=t, context_mask=call.text_mask)
            t = t_next
        return call.output(t, img if call.need_image else None)

    def _fuse_merged(self, text: Tensor, image: Tensor, call: "_FusionCall") -> FusionOutput:
        """One stream over [text; image] with modality embeddings; it keeps its graph when either output
        is trained (the grad flags cannot split it)."""
        assert self.image_proj is not None and self.modality_embed is not None
        img = self.image_proj(image)
        lt = text.shape[1]
        image_mask = call.image_mask
        if image_mask is None:
            image_mask = torch.ones(img.shape[:2], dtype=torch.bool, device=img.device)
        x = torch.cat([text + self.modality_embed[0], img + self.modality_embed[1]], dim=1)
        mask = torch.cat([call.text_mask, image_mask], dim=1)
        packing = Packing.for_mask(mask)
        for i, blk in enumerate(self.blocks):
            if call.return_attention and i == call.last:
                x, w = blk(x, mask=mask, return_attention=True, packing=packing)
                call.keep_merged_attention(w, lt)
            else:
                x = blk(x, mask=mask, packing=packing)
        return call.output(x[:, :lt], x[:, lt:])


class _FusionCall:
    """One :meth:`FusionEncoder.forward` call: its masks and options, which blocks keep a graph, and the
    last text-stream block's attention maps once a mode method has run it."""

    def __init__(self, mode: str, last: int, text_mask: Tensor, image_mask: Tensor | None, image_index: Tensor | None,
                 return_attention: bool, need_image: bool, need_text: bool, text_grad: bool, image_grad: bool):
        self.last = last
        self.text_mask = text_mask.to(torch.bool)
        self.image_mask = None if image_mask is None else image_mask.to(torch.bool)
        self.image_index = image_index
        self.return_attention = return_attention
        self.need_image = need_image
        self.skip_last_text = not need_text and not return_attention and mode != "merged"
        self.text_packing = Packing.for_mask(self.text_mask) if mode != "merged" else None  # once for every text block
        grad = torch.is_grad_enabled()
        image_stream = mode in ("two_stream", "cross") and need_image
        # a text block's output is read by the text output (all blocks) and, in the two-stream modes,
        # by the image stream (every block but the last); the same holds the other way round in `cross`
        self.text_block_grad = [grad and (text_grad or (image_stream and image_grad and i < last)) for i in range(last + 1)]
        self.image_block_grad = [grad and (image_grad or (mode == "cross" and text_grad and i < last))
                                 for i in range(last + 1)]
        self.image_context: Tensor | None = None
        self.w_self: Tensor | None = None
        self.w_image: Tensor | None = None
        self.w_cls: Tensor | None = None

    def text_block(self, i: int, blk: Block, x: Tensor, ctx: Tensor) -> Tensor:
        """Text-stream block ``i`` over ``x`` with cross-attention to ``ctx``; the last one keeps its
        attention maps when they were asked for."""
        if not (self.return_attention and i == self.last):
            return blk(x, mask=self.text_mask, context=ctx, context_mask=self.image_mask, packing=self.text_packing,
                       context_index=self.image_index)
        x, (ws, wc) = blk(x, mask=self.text_mask, context=ctx, context_mask=self.image_mask, return_attention="both",
                          packing=self.text_packing, context_index=self.image_index)
        self.w_cls, self.w_self, self.w_image = ws[:, :, 0], ws.mean(1), wc.mean(1)
        return x

    def keep_merged_attention(self, w: Tensor, lt: int) -> None:
        """The maps of ``merged``'s last block (B, heads, Lt + Li, Lt + Li): the text rows' parts."""
        self.w_cls = w[:, :, 0, :lt]
        w = w.mean(1)[:, :lt]
        self.w_self, self.w_image = w[:, :, :lt], w[:, :, lt:]

    def output(self, text: Tensor | None, image: Tensor | None) -> FusionOutput:
        """The fused states with the kept maps; text is None when its last block was skipped."""
        return FusionOutput(None if self.skip_last_text else text, image, self.w_self, self.w_image, self.w_cls)
