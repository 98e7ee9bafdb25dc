"""The shared step context: every pass an objective might need, computed at most once per step.

Objectives ask the context for unimodal features, teacher features or masked inputs; the first
request computes and caches them, later requests (from other objectives) reuse them. This is what
makes a composed recipe cost one teacher pass per step and one masked forward per masking policy.

All randomness of a step comes from generators seeded by (seed, step, purpose) and is drawn for the
whole global batch, each rank keeping its rows: a 2-process run draws exactly what a 1-process run
with the same global batch draws, and a resumed run draws what an uninterrupted one would.
"""
from __future__ import annotations

import zlib
from functools import cached_property
from typing import Callable

import torch
import torch.nn.functional as F

from maskvlp.config import ConfigError
from maskvlp.data.batch import Batch, TextSpecials
from maskvlp.distributed import all_gather_nograd, local_slice
from maskvlp.masking import MaskedText, bert_text_mask
from maskvlp.models.fusion import FusionOutput
from maskvlp.models.vlp import Encoded, VLPModel
from maskvlp.negatives import perturb_batch
from maskvlp.objectives.reads import Reads, TextInput, TextMaskKey, TextPass, TextSource

CLEAN, NEGATIVES = TextInput.CLEAN, TextInput.NEGATIVES  # text passes besides masked captions


def cat_rows_padded(tensors: list[torch.Tensor], value: float = 0) -> torch.Tensor:
    """Concatenate (B_i, L_i, ...) tensors along the batch, padding dim 1 with ``value`` to the longest L."""
    width = max(t.shape[1] for t in tensors)
    return torch.cat([F.pad(t.movedim(1, -1), (0, width - t.shape[1]), value=value).movedim(-1, 1) for t in tensors])


def _mask_key(ratio: float | TextMaskKey, mask_fraction: float, random_fraction: float) -> TextMaskKey:
    return ratio if isinstance(ratio, TextMaskKey) else TextMaskKey(ratio, mask_fraction, random_fraction)


def step_generator(seed: int, step: int, micro: int, purpose: str) -> torch.Generator:
    """The generator of one purpose at one (micro-)step: a pure function of its key, so a resumed run and
    every rank draw the same numbers."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{seed}/{step}/{micro}/{purpose}".encode()))
    return g


class StepContext:
    """The passes of one step, computed at most once. ``reads`` is what the step's objectives declared
    (:meth:`~maskvlp.objectives.base.Objective.reads`): its text passes and masked-caption image states."""

    def __init__(self, model: VLPModel, batch: Batch, step: int, seed: int, specials: TextSpecials, micro: int = 0,
                 reads: Reads = Reads()):
        self.model = model
        self.micro = micro  # micro-batch index under gradient accumulation
        self.batch = batch
        self.step = step
        self.seed = seed
        self.specials = specials
        self._masked: dict[TextMaskKey, MaskedText] = {}
        self._image_masks: dict[str, object] = {}
        self._masked_images: dict[tuple[str, str], Encoded] = {}
        self._teacher_full: FusionOutput | None = None
        self._teacher_text_only: FusionOutput | None = None
        # text masks whose masked-caption fusion some objective reads image states from (declared up front,
        # so the one pass computes them even when a text-only reader asks first)
        self._masked_text_image_states = reads.masked_text_image_states
        self._fused_masked_text: dict[TextMaskKey, FusionOutput] = {}
        # text-tower passes the step's objectives declared: the first request runs each tower's declared
        # passes as one batch; an undeclared request runs alone
        self._text_passes = reads.text_passes
        self._text: dict[TextPass, Encoded] = {}

    # ------------------------------------------------------------------ randomness
    def generator(self, purpose: str) -> torch.Generator:
        return step_generator(self.seed, self.step, self.micro, purpose)

    def global_rand(self, purpose: str, *tail: int) -> torch.Tensor:
        """Uniform noise drawn for the whole global batch; this rank's rows."""
        noise = torch.rand(self.batch.global_size, *tail, generator=self.generator(purpose))
        return noise[local_slice(self.batch.global_size)].to(self.batch.images.device)

    # ------------------------------------------------------------------ unimodal passes
    @cached_property
    def stem_features(self) -> torch.Tensor | None:
        """The frozen part of the image stem on the clean images, once per step for the student's and the
        teacher's clean passes (a frozen pretrained trunk: ~40% of the tiny ViT's forward); None without one."""
        return self.model.vision.frozen_stem_features(self.batch.images)

    @cached_property
    def stem_patches(self) -> torch.Tensor:
        """(B, N, C) the frozen pretrained stem's features of each clean patch: image-side targets with
        ImageNet semantics from the first step (``target_source=stem``), at no extra cost when the step's
        clean passes computed them anyway."""
        features = self.stem_features
        if features is None:
            raise ConfigError("a masked objective asks for stem targets (source=stem), but the image stem has no "
                              "frozen pretrained part: use model.vision.stem=efficientnet_lite0 with "
                              "stem_init=pretrained and stem_trainable=false")
        b = self.batch.images.shape[0]
        return features.flatten(2).transpose(1, 2).reshape(b, -1, features.shape[1])

    @cached_property
    def image(self) -> Encoded:
        return self.model.encode_image(self.batch.images, stem_features=self.stem_features)

    @property
    def text(self) -> Encoded:
        return self.encoded_text(False, CLEAN)

    @cached_property
    def teacher_image(self) -> Encoded:
        with torch.no_grad():
            return self.model.encode_image(self.batch.images, teacher=True, stem_features=self.stem_features)

    @property
    def teacher_text(self) -> Encoded:
        return self.encoded_text(True, CLEAN)

    def _text_input(self, what: TextSource) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(ids, attention mask) of one text pass: the captions, their twins (None when no row has one),
        or the captions under a text mask."""
        if what is CLEAN:
            return self.batch.input_ids, self.batch.attention_mask
        if what is NEGATIVES:
            ids, mask, has = self.negative_captions
            return (ids, mask) if bool(has.any()) else None
        if not isinstance(what, TextMaskKey):
            raise TypeError(f"a text pass reads a TextInput or a TextMaskKey, got {what!r}")
        ids = self.masked_text(what).input_ids
        return ids, self.batch.attention_mask[:ids.shape[0]]

    def encoded_text(self, teacher: bool, what: TextSource) -> Encoded:
        """One text-tower pass (student or EMA teacher), once per step: ``CLEAN`` captions, their
        ``NEGATIVES`` (ask only when a row has one), or the captions under a :class:`TextMaskKey`.

        When the pass was declared, every declared pass of that tower runs with it as one batch
        (padded to the longest; the padding is skipped by the blocks and masked as keys): one embedding
        gradient of the vocabulary's size instead of one per pass, and fewer, larger matmuls.
        """
        key = TextPass(teacher, what)
        if key not in self._text:
            group = [key]
            if key in self._text_passes:
                group = sorted((p for p in self._text_passes if p.teacher == teacher and p not in self._text),
                               key=lambda p: p.order)
            inputs = [(p, self._text_input(p.what)) for p in group]
            inputs = [(p, x) for p, x in inputs if x is not None]
            ids, masks = [x[0] for _, x in inputs], [x[1] for _, x in inputs]
            ids_all, mask_all = cat_rows_padded(ids, self.specials.pad_id), cat_rows_padded(masks)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not teacher):
                out = self.model.encode_text(ids_all, mask_all, teacher=teacher)
            start = 0
            for (p, _), i in zip(inputs, ids):
                rows = slice(start, start + i.shape[0])
                self._text[p] = Encoded(out.tokens[rows, :i.shape[1]], out.embed[rows])
                start += i.shape[0]
        return self._text[key]

    @cached_property
    def negative_captions(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rule-based negatives of the batch's captions (:mod:`maskvlp.negatives`): (ids, attention mask,
        bool rows of the batch they negate); rows with nothing to perturb have none. Once per step."""
        if self.specials.lexicon is None:
            raise ValueError("negative captions need TextSpecials.lexicon (built by engine.trainer.text_specials)")
        first = local_slice(self.batch.global_size).start
        return perturb_batch(self.batch.input_ids, self.batch.attention_mask, self.specials.lexicon,
                             lambda r: self.generator(f"text-negatives/{first + r}"), self.specials.pad_id)

    @property
    def negative_text(self) -> Encoded:
        """The student's text pass over :attr:`negative_captions` (ask only when there is at least one)."""
        return self.encoded_text(False, NEGATIVES)

    @property
    def teacher_negative_text(self) -> Encoded:
        """The EMA teacher's text pass over :attr:`negative_captions` (ask only when there is at least one)."""
        return self.encoded_text(True, NEGATIVES)

    @cached_property
    def global_image_keys(self) -> torch.Tensor:
        return all_gather_nograd(self.batch.image_keys)

    @cached_property
    def global_similarity(self) -> torch.Tensor:
        """[B_global, B_global] image-text similarity (no grad), for sampling ITM hard negatives.

        As in ALBEF: student image features against teacher text features when a teacher exists.
        """
        with torch.no_grad():
            text = self.teacher_text.embed if self.has_teacher else self.text.embed
            image = all_gather_nograd(self.image.embed)
            return image @ all_gather_nograd(text).T / self.model.temp.detach()

    # ------------------------------------------------------------------ masked inputs
    def masked_text(self, ratio: float | TextMaskKey = 0.15, mask_fraction: float = 0.8,
                    random_fraction: float = 0.1) -> MaskedText:
        """BERT-style text masking of the batch, made once per step per setting: a :class:`TextMaskKey`, or
        its three values.

        ``mask_fraction=1, random_fraction=0`` is plain all-[MASK] masking (SCL's completion pass).
        """
        key = _mask_key(ratio, mask_fraction, random_fraction)
        if key.rows < 1.0 and key not in self._masked:  # the whole batch's mask, on the key's first rows
            whole, n = self.masked_text(key.whole_batch), key.row_count(self.batch.input_ids.shape[0])
            self._masked[key] = MaskedText(whole.input_ids[:n], whole.labels[:n], whole.masked[:n])
        ratio, mask_fraction, random_fraction = key.ratio, key.mask_fraction, key.random_fraction
        if key not in self._masked:
            ids = self.batch.input_ids
            split = "" if (mask_fraction, random_fraction) == (0.8, 0.1) else f"-{mask_fraction}-{random_fraction}"
            self._masked[key] = bert_text_mask(
                ids, self.batch.attention_mask, self.specials.special_ids, self.specials.mask_id,
                self.specials.vocab_size, None, ratio=ratio, mask_fraction=mask_fraction,
                random_fraction=random_fraction,
                noise=self.global_rand(f"text-mask-{ratio}{split}", ids.shape[1], 3),
            )
        return self._masked[key]

    def fused_masked_text(self, ratio: float | TextMaskKey = 0.15, mask_fraction: float = 0.8,
                          random_fraction: float = 0.1, need_image: bool = False) -> tuple[MaskedText, FusionOutput]:
        """The student's masked caption (:meth:`masked_text`, on the key's rows) through the text tower and the
        fusion with the clean image, once per step per mask: MLM's pass, and SCL's completion pass B when both
        name one mask.

        Image states (``need_image``) are targets, so that stream keeps no graph (``image_grad=False``; the
        text states and their gradient are those of a text-only pass). They are computed on the first
        request when an objective declared it reads them for this mask
        (``Reads.masked_text_image_states``), so a text-only reader that asks first shares the pass;
        undeclared, a later image request re-runs the fusion (correct, slower).
        """
        key = _mask_key(ratio, mask_fraction, random_fraction)
        masked = self.masked_text(key)
        cached = self._fused_masked_text.get(key)
        if cached is None or (need_image and cached.image is None):
            with_image = need_image or key in self._masked_text_image_states
            n = masked.input_ids.shape[0]  # the key's rows share
            cached = self.model.fuse(self.encoded_text(False, key).tokens, self.batch.attention_mask[:n],
                                     self.image.tokens[:n], need_image=with_image, image_grad=False)
            self._fused_masked_text[key] = cached
        return masked, cached

    # ------------------------------------------------------------------ masked images
    @property
    def num_patches(self) -> int:
        return self.model.vision.num_patches

    def patch_noise(self, purpose: str) -> torch.Tensor:
        """Uniform (B_local, num_patches) noise drawn for the global batch, for patch masking."""
        return self.global_rand(purpose, self.num_patches)

    def image_mask(self, key: str, make: Callable[[], object]):
        """The image mask registered under ``key`` (e.g. ``"random-0.75"``), made once per step.

        Objectives that name the same key share the mask, and with it the masked forward pass.
        """
        if key not in self._image_masks:
            self._image_masks[key] = make()
        return self._image_masks[key]

    def masked_image(self, key: str, mode: str = "drop") -> Encoded:
        """The student's image pass under the mask registered as ``key``, computed once per step.

        ``drop``: only visible patches enter the encoder (tokens = [CLS] + visible, in keep_idx
        order; cheap, for objectives that need no output at masked positions). ``replace``: masked
        patches become the learned mask token (tokens = [CLS] + every patch, positions aligned).
        """
        if (key, mode) not in self._masked_images:
            mask = self._image_masks[key]
            if mode == "drop":
                enc = self.model.encode_image(self.batch.images, keep_idx=mask.keep_idx)
            elif mode == "replace":
                enc = self.model.encode_image(self.batch.images, mask=mask.masked)
            else:
                raise ValueError(f"masked image mode must be drop or replace, got {mode!r}")
            self._masked_images[(key, mode)] = enc
        return self._masked_images[(key, mode)]

    # ------------------------------------------------------------------ fused passes
    def teacher_fusion(self, need_image: bool = True) -> FusionOutput:
        """The EMA teacher's fusion of the clean pair, with its last-layer attention, once per step.

        Targets for MAMO's implicit modeling and SemMIM's patch targets (``need_image=True``), and
        the maps for text-guided masking and SIMLA's keyword votes (text stream only), come from it.
        A text-only request is served by a full pass already made; an objective that will read image
        states should ask first, so the text stream is not run twice.
        """
        if self._teacher_full is not None:
            return self._teacher_full
        if not need_image and self._teacher_text_only is not None:
            return self._teacher_text_only
        with torch.no_grad():
            out = self.model.fuse(self.teacher_text.tokens, self.batch.attention_mask, self.teacher_image.tokens,
                                  teacher=True, return_attention=True, need_image=need_image)
        if need_image:
            self._teacher_full = out
        else:
            self._teacher_text_only = out
        return out

    @property
    def teacher_fused(self) -> FusionOutput:
        """``teacher_fusion(need_image=True)``."""
        return self.teacher_fusion(need_image=True)

    # ------------------------------------------------------------------ the EMA teacher's other passes
    # Objectives reach the teacher only through the context: the cached passes above, and these.
    @property
    def has_teacher(self) -> bool:
        """Whether the model was built with an EMA teacher (an objective's reads named TEACHER or TEACHER_FUSION)."""
        return self.model.teacher is not None

    def teacher_fuse(self, text_tokens: torch.Tensor, text_mask: torch.Tensor, image_tokens: torch.Tensor,
                     **kwargs) -> FusionOutput:
        """The EMA teacher's fusion of the given streams, without gradient (``kwargs`` as ``VLPModel.fuse``):
        an objective's own teacher pass, e.g. MLM's distillation over the masked caption. The clean pair's
        fusion is :meth:`teacher_fusion`, once per step."""
        with torch.no_grad():
            return self.model.fuse(text_tokens, text_mask, image_tokens, teacher=True, **kwargs)

    def caption_embeddings(self, teacher: bool = False) -> torch.Tensor:
        """(B, L, D) the captions' embedding-layer output (before any text block) of the student or, without
        gradient, of the EMA teacher: SIMLA's image queries read it at every fusion layer."""
        if not teacher:
            return self.model.text.embed(self.batch.input_ids)
        with torch.no_grad():
            return self.model.teacher["text"].embed(self.batch.input_ids)

    def teacher_masked_image(self, masked: torch.Tensor) -> Encoded:
        """The EMA teacher's image pass with the patches marked in ``masked`` (B, N) replaced by its mask
        token, without gradient (SIMLA's momentum prediction). Not cached: one objective asks."""
        with torch.no_grad():
            return self.model.encode_image(self.batch.images, mask=masked, teacher=True)

    def teacher_mlm_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The EMA teacher's MLM head (built with TEACHER_FUSION and an MLM head) on fused text states, without gradient."""
        if self.model.teacher is None or "mlm_head" not in self.model.teacher:
            raise RuntimeError("this model's teacher has no MLM head (an objective must read TEACHER_FUSION and MLM)")
        with torch.no_grad():
            return self.model.teacher["mlm_head"](states)

    @cached_property
    def patch_relevance(self) -> torch.Tensor:
        """(B, num_patches): how much the teacher's text attends to each patch (mean over real text tokens).

        In ``merged`` mode this is the text-to-image share of self-attention; in the other modes the
        text-to-image cross-attention. The [CLS] image token is left out.
        """
        weights = self.teacher_fusion(need_image=False).text_image_attention  # (B, Lt, 1 + N)
        m = self.batch.attention_mask.to(weights.dtype).unsqueeze(-1)
        return ((weights * m).sum(1) / m.sum(1).clamp(min=1))[:, 1:]
