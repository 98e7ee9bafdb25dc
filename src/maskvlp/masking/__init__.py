"""Masking policies for masked language and masked image modeling.

One module per job: :mod:`~maskvlp.masking.counts` (exact counts, the selections every policy is
built on), :mod:`~maskvlp.masking.text` (BERT text masking), :mod:`~maskvlp.masking.keywords`
(SIMLA's attention keywords), :mod:`~maskvlp.masking.image` (:class:`ImageMask`, random and
text-guided patches), :mod:`~maskvlp.masking.blocks` (BEiT block-wise patches) and
:mod:`~maskvlp.masking.modality` (MLIM's modality-aware modes). Every public name imports from
``maskvlp.masking``. docs/methods.md, "Masking policies", says which recipe uses which policy.

Conventions shared by every policy here:

* **Exact ratios.** A row masks ``round(ratio * n_eligible)`` entries (``torch.round``, so halves go
  to the even number), at least one when ``ratio > 0`` and anything is eligible, none when
  ``ratio == 0``. They are not Bernoulli draws, so a recipe's "15%" is what the model sees and
  tests can check it (see :func:`mask_counts`).
* **No global RNG.** Randomness comes from passed uniform ``noise`` tensors (shapes documented per
  function) or from a passed ``torch.Generator``. Each rank draws the noise of the *global* batch
  and keeps its rows, so a step's masks do not depend on the process layout.
* **Two image paths.** :class:`ImageMask` (same count in every row) serves both ViT paths:
  ``keep_idx`` drops patches (MAE style), ``masked`` replaces them with the mask token (BEiT
  style). Policies whose count differs per row (modality-aware masking) return a plain bool mask
  for the mask-token path.

Provenance of defaults is tagged in docstrings: [paper], [code] (the official code), [notes] (the
project's research notes, summarised with their sources in docs/methods.md, "Sources"), [ours].
"""
from maskvlp.masking.blocks import BEIT_GRID_PATCHES, BEIT_MIN_BLOCK, block_patch_mask, default_min_block
from maskvlp.masking.counts import Ratio, exact_count_mask, mask_counts
from maskvlp.masking.image import ImageMask, guided_fraction_at, random_patch_mask, text_guided_patch_mask
from maskvlp.masking.keywords import attention_votes, keyword_token_mask, multi_hot
from maskvlp.masking.modality import MLIM_MODES, MaskingMode, ModalityAwareMask, modality_aware_mask
from maskvlp.masking.text import MaskedText, bert_text_mask, check_split, continuation_table

__all__ = [
    "BEIT_GRID_PATCHES", "BEIT_MIN_BLOCK", "MLIM_MODES", "ImageMask", "MaskedText", "MaskingMode", "ModalityAwareMask",
    "Ratio", "attention_votes", "bert_text_mask", "block_patch_mask", "check_split", "continuation_table",
    "default_min_block", "exact_count_mask", "guided_fraction_at", "keyword_token_mask", "mask_counts",
    "modality_aware_mask", "multi_hot", "random_patch_mask", "text_guided_patch_mask",
]
