"""The binding test scored by the MLM head: which of two captions does the fusion *fill in*?

A binding probe pairs a true caption with a minimally edited false twin (two colours exchanged, or a
relation reversed). Where both tokenise to the same length, they differ only at a few positions:
mask exactly those positions (the masked caption is then the same for both), fuse it with the image,
and compare the MLM head's log-probability of the true tokens with that of the false ones, summed
over the masked positions. A model whose fusion ignores the image can only guess from the text
around the gap, which is the same for both twins, so it sits near 50%; one that reads which object
has which colour scores above it. This asks of the fusion exactly what masked modeling trains it
to do, so it separates "the fusion reads the image" from "the ITM head uses what it reads"
(docs/baselines.md: ALBEF's MLM recovered a masked colour word from the image long before its ITM
head left its class prior).

Probes whose twins tokenise to different lengths cannot be compared this way; they are skipped
and counted (``mlm_probes_skipped``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from maskvlp.data.retrieval_sets import HELDOUT_SUFFIX  # a probe file's held-out probes
from maskvlp.eval import metrics as M

PROBE_KINDS = (("colour_swap", "binding_colour"), ("relation", "binding_relation"))


def probe_key(kind: str) -> str:
    """The metric a probe kind is reported under: ``binding_colour`` / ``binding_relation`` for the two kinds
    every world has (``..._heldout`` for a probe file's held-out ones), ``binding_<kind>`` for any other."""
    heldout = kind.endswith(HELDOUT_SUFFIX)
    base = kind[: -len(HELDOUT_SUFFIX)] if heldout else kind
    key = dict(PROBE_KINDS).get(base, f"binding_{base}")
    return key + (HELDOUT_SUFFIX if heldout else "")


def accuracy_by_kind(kinds: list[str], true_score: torch.Tensor, false_score: torch.Tensor) -> dict[str, float]:
    """Binding accuracy (true above false, chance 50%) per reported key, in the order kinds first appear."""
    out: dict[str, float] = {}
    for key in dict.fromkeys(probe_key(k) for k in kinds):
        sel = torch.as_tensor([probe_key(k) == key for k in kinds], dtype=torch.bool, device=true_score.device)
        out[key] = M.binding_accuracy(true_score[sel], false_score[sel])
    return out


def masked_twins(true_ids: torch.Tensor, false_ids: torch.Tensor, true_mask: torch.Tensor, false_mask: torch.Tensor,
                 mask_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(masked ids, positions to score, comparable rows) for probe twins padded to one length.

    A row is comparable when both twins have the same real-token positions and differ in at least
    one of them; its scored positions are those where they differ, set to ``mask_id``.
    """
    real = true_mask.bool()
    comparable = (real == false_mask.bool()).all(1)
    diff = (true_ids != false_ids) & real & comparable[:, None]
    comparable &= diff.any(1)
    return true_ids.masked_fill(diff, mask_id), diff, comparable


@torch.no_grad()
def mlm_binding(model, image_tokens: torch.Tensor, image_idx: torch.Tensor, true_ids: torch.Tensor,
                false_ids: torch.Tensor, true_mask: torch.Tensor, false_mask: torch.Tensor, kinds: list[str],
                mask_id: int, batch_size: int = 128) -> dict[str, float]:
    """Binding accuracy per probe kind by MLM log-likelihood of the edited tokens (chance 50%).

    ``image_tokens`` are the encoded test images, ``image_idx[p]`` the image of probe ``p``; the id
    and mask tensors hold the true and false twins of every probe, padded to one length.
    """
    ids, diff, comparable = masked_twins(true_ids, false_ids, true_mask, false_mask, mask_id)
    rows = comparable.nonzero().squeeze(1)
    true_score = torch.zeros(len(rows), dtype=torch.float64, device=ids.device)
    false_score = torch.zeros_like(true_score)
    for start in range(0, len(rows), batch_size):
        sel = rows[start:start + batch_size]
        length = int(true_mask[sel].sum(1).max())  # real tokens come first: trim the shared padding
        sel_ids, sel_mask, sel_diff = ids[sel, :length], true_mask[sel, :length], diff[sel, :length]
        text = model.encode_text(sel_ids, sel_mask).tokens
        fused = model.fuse(text, sel_mask, image_tokens[image_idx[sel]], need_image=False).text
        logp = F.log_softmax(model.mlm_head(fused[sel_diff]).float(), dim=-1)
        probe = sel_diff.nonzero()[:, 0] + start  # which probe (index into rows) each scored token belongs to
        true_score.index_add_(0, probe, logp.gather(1, true_ids[sel, :length][sel_diff][:, None]).squeeze(1).double())
        false_score.index_add_(0, probe, logp.gather(1, false_ids[sel, :length][sel_diff][:, None]).squeeze(1).double())
    out = accuracy_by_kind([kinds[int(r)] for r in rows], true_score, false_score)
    out["mlm_probes_skipped"] = float(len(kinds) - len(rows))
    return out
