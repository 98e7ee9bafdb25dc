"""Masking policies for masked language and masked image modeling.

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
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F

Ratio = float | torch.Tensor  # one ratio for the batch, or a (B,) tensor of per-row ratios


@dataclass
class MaskedText:
    input_ids: torch.Tensor  # ids fed to the encoder: [MASK] / random / kept at masked positions
    labels: torch.Tensor  # original id at masked positions, -100 elsewhere
    masked: torch.Tensor  # bool, the positions to predict


# ------------------------------------------------------------------------------------ counting
def mask_counts(n: torch.Tensor, ratio: Ratio) -> torch.Tensor:
    """(B,) long: how many of each row's ``n`` eligible entries ``ratio`` masks.

    ``round(ratio * n)`` computed in float32 (as the original ``exact_count_mask`` did, so counts
    are unchanged), raised to 1 where ``ratio > 0`` and ``n > 0`` so a short caption still gets a
    target, and 0 where ``ratio == 0`` so a mode can leave a modality intact.
    """
    if isinstance(ratio, torch.Tensor):
        r = ratio.to(device=n.device, dtype=torch.float32)
        if r.shape != n.shape:
            raise ValueError(f"a per-row ratio must have shape {tuple(n.shape)}, got {tuple(r.shape)}")
        if bool(((r < 0) | (r > 1) | r.isnan()).any()):
            raise ValueError("every ratio must lie in [0, 1]")
        positive = r > 0
    else:
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must lie in [0, 1], got {ratio}")
        r = ratio
        positive = torch.full_like(n, ratio > 0, dtype=torch.bool)
    k = (n.float() * r).round().long()
    return torch.where(positive & (n > 0), k.clamp(min=1), torch.zeros_like(k))


def _lowest_k(scores: torch.Tensor, eligible: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Per row, mark the ``k[row]`` eligible entries with the lowest scores; ties go to the lower
    position (stable sorts), so guided and keyword selections are deterministic."""
    order = scores.argsort(dim=1, stable=True)
    # then move ineligible entries behind all eligible ones, keeping the score order within each
    order = order.gather(1, (~eligible).gather(1, order).to(torch.uint8).argsort(dim=1, stable=True))
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return (ranks < k.to(scores.device)[:, None]) & eligible


def exact_count_mask(scores: torch.Tensor, eligible: torch.Tensor, ratio: Ratio) -> torch.Tensor:
    """Per row, mark the ``mask_counts(n_eligible, ratio)`` eligible entries with the lowest scores.

    ``scores`` are uniform noise for random masking, or negated relevance for guided masking;
    ``ratio`` is a float or a (B,) tensor of per-row ratios.
    """
    return _lowest_k(scores, eligible, mask_counts(eligible.sum(1), ratio))


def _noise(noise: torch.Tensor | None, shape: tuple[int, ...], generator: torch.Generator | None,
           what: str) -> torch.Tensor:
    """The passed noise (shape-checked) or a fresh draw from ``generator``; never the global RNG."""
    if noise is None:
        if generator is None:
            raise ValueError(f"pass {what} noise or a generator: masks never draw from the global RNG")
        return torch.rand(shape, generator=generator, device=generator.device)
    if tuple(noise.shape) != tuple(shape):
        raise ValueError(f"{what} noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
    return noise


def check_split(mask_fraction: float, random_fraction: float) -> None:
    if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1:
        raise ValueError(
            f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be >= 0 and sum to <= 1"
        )


# ------------------------------------------------------------------------------------ text: BERT
def bert_text_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
    ratio: Ratio = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    noise: torch.Tensor | None = None,
) -> MaskedText:
    """BERT's recipe: choose ``ratio`` of the real, non-special tokens; of those, ``mask_fraction``
    become [MASK], ``random_fraction`` a random token, the rest stay (still predicted).

    ``ratio`` may be a (B,) tensor of per-row ratios (modality-aware masking). ``noise`` (uniform
    [B, L, 3]: which tokens, which become [MASK], which random id) can be passed so that several
    ranks that each see a slice of one global batch draw the same masks as one process would; by
    default it is drawn from ``generator``.
    """
    check_split(mask_fraction, random_fraction)
    B, L = input_ids.shape
    if noise is None:
        noise = torch.rand(B, L, 3, generator=generator)
    noise = noise.to(input_ids.device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(input_ids.device))
    masked = exact_count_mask(noise[..., 0], eligible, ratio)
    # split the masked positions of each row by exact counts, in a random order
    within = exact_count_mask(noise[..., 1], masked, mask_fraction) if mask_fraction > 0 else torch.zeros_like(masked)
    rest = masked & ~within
    n_masked = masked.sum(1).float()
    n_random = (n_masked * random_fraction).round().long()
    rank_rest = torch.cumsum(rest.long(), dim=1)
    use_random = rest & (rank_rest <= n_random[:, None])
    return _apply_text_mask(input_ids, masked, within, use_random, noise[..., 2], mask_id, vocab_size)


def _apply_text_mask(input_ids: torch.Tensor, masked: torch.Tensor, to_mask: torch.Tensor, to_random: torch.Tensor,
                     id_noise: torch.Tensor, mask_id: int, vocab_size: int) -> MaskedText:
    """Write [MASK] / random ids (from ``id_noise`` in [0, 1)) into a copy; labels at every masked position."""
    ids = input_ids.clone()
    ids[to_mask] = mask_id
    random_ids = (id_noise * vocab_size).long().clamp_(max=vocab_size - 1)
    ids[to_random] = random_ids[to_random]
    labels = torch.full_like(input_ids, -100)
    labels[masked] = input_ids[masked]
    return MaskedText(ids, labels, masked)


# ------------------------------------------------------------------------------------ text: whole words
def continuation_table(vocab_tokens: Sequence[str]) -> torch.Tensor:
    """(V,) bool: which vocabulary entries are WordPiece continuations (``##...``).

    Build it once, e.g. from ``tok.backend.convert_ids_to_tokens(list(range(tok.vocab_size)))``.
    """
    return torch.tensor([t.startswith("##") for t in vocab_tokens], dtype=torch.bool)


def continuation_flags(input_ids: torch.Tensor, vocab: Sequence[str] | torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True where the token continues the word before it (a ``##`` piece).

    ``vocab`` is the id -> token list, or a table from :func:`continuation_table` (cheaper per step).
    """
    table = vocab if isinstance(vocab, torch.Tensor) else continuation_table(vocab)
    return table.to(input_ids.device)[input_ids]


def continuation_from_word_ids(word_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) bool from the tokenizer's ``word_ids`` (-1 on specials/padding): True where a token
    belongs to the same word as the one before it. Same as :func:`continuation_flags` for BERT's
    WordPiece, and needs no vocabulary."""
    prev = F.pad(word_ids[:, :-1], (1, 0), value=-1)
    return (word_ids >= 0) & (word_ids == prev)


def whole_word_text_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    is_continuation: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    ratio: Ratio = 0.15,
    noise: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> MaskedText:
    """Whole-word masking: choose ``mask_counts(n_words, ratio)`` words and mask all their pieces.

    Why: masking one piece of "un ##bel ##ie ##va ##bly" lets the model copy the rest of the word;
    hiding whole words forces it to use context (BERT's whole-word-masking release; ratio 0.15
    [paper: BERT]). A word is an eligible (real, non-special) start token plus the ``##`` pieces that
    follow it (``is_continuation`` from :func:`continuation_flags` or
    :func:`continuation_from_word_ids`); a continuation with no eligible token before it starts a
    word. The 80/10/10 [MASK]/random/keep split is applied **per word** with exact counts (as in
    :func:`bert_text_mask`), so a word is never half [MASK] and half visible [ours; Google's
    reference script decides per piece]; a "random" word gets an independent random id per piece.

    ``noise``: uniform (B, L, 3): channel 0 at word starts picks the words, channel 1 at word
    starts picks the [MASK] words, channel 2 per piece gives the random ids. Drawn from
    ``generator`` when not passed.
    """
    check_split(mask_fraction, random_fraction)
    B, L = input_ids.shape
    device = input_ids.device
    noise = _noise(noise, (B, L, 3), generator, "text").to(device)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids.to(device))
    prev_eligible = F.pad(eligible[:, :-1], (1, 0), value=False)
    start = eligible & ~(is_continuation.to(device).bool() & prev_eligible)
    # each eligible position belongs to the word of the last start at or before it
    pos = torch.arange(L, device=device).expand(B, L)
    owner = torch.cummax(torch.where(start, pos, torch.full_like(pos, -1)), dim=1).values.clamp(min=0)

    chosen = exact_count_mask(noise[..., 0], start, ratio)  # flags on word starts
    as_mask = exact_count_mask(noise[..., 1], chosen, mask_fraction) if mask_fraction > 0 else torch.zeros_like(chosen)
    rest = chosen & ~as_mask
    n_random = (chosen.sum(1).float() * random_fraction).round().long()
    as_random = rest & (torch.cumsum(rest.long(), dim=1) <= n_random[:, None])

    def spread(word_flags: torch.Tensor) -> torch.Tensor:
        return eligible & word_flags.gather(1, owner)

    masked, to_mask, to_random = spread(chosen), spread(as_mask), spread(as_random)
    return _apply_text_mask(input_ids, masked, to_mask, to_random, noise[..., 2], mask_id, vocab_size)


# ------------------------------------------------------------------------------------ text: keywords
def attention_votes(cls_attention: torch.Tensor, eligible: torch.Tensor, per_head: int = 4) -> torch.Tensor:
    """(B, L) keyword scores from the [CLS] row of a layer's attention, (B, heads, L).

    SIMLA's official code lets each head vote for its ``per_head`` = 4 most attended positions and
    keeps the 5 positions with most votes [code: codezakh/SIMLA]; the paper's appendix describes
    the plain top-k of the [CLS] attention, k = 4 [paper]. Score = votes + half the head-mean
    attention, which breaks vote ties by attention mass and never overturns a vote (the mean is
    below 1). Only ``eligible`` positions vote or score [ours; the code only drops [CLS]].
    """
    att = cls_attention.detach().float().masked_fill(~eligible[:, None, :], float("-inf"))
    top = (-att).argsort(dim=-1, stable=True)[..., : min(per_head, att.shape[-1])]  # (B, H, per_head)
    valid = eligible.gather(1, top.flatten(1)).float()
    votes = torch.zeros(eligible.shape, device=att.device).scatter_add_(1, top.flatten(1), valid)
    mean = att.masked_fill(~eligible[:, None, :], 0.0).mean(1)
    return torch.where(eligible, votes + 0.5 * mean, torch.zeros_like(votes))


def keyword_token_mask(scores: torch.Tensor, eligible: torch.Tensor, k: int = 4) -> torch.Tensor:
    """(B, L) bool: the ``k`` eligible tokens with the highest ``scores`` per row (all eligible
    tokens when fewer), ties to the earlier position: SIMLA's pseudo-keyword (PSL) selection.

    k = 4 [paper: SIMLA appendix, best of the values tried]; use k = 5 with
    :func:`attention_votes` scores to follow the official code. ``eligible`` should exclude
    special tokens and padding.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    counts = eligible.sum(1).clamp(max=k)
    return _lowest_k(-scores.detach().float(), eligible.bool(), counts)


def multi_hot(input_ids: torch.Tensor, selected: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(B, V) float targets: 1 for every vocabulary id selected in the row (duplicates count once),
    the hard PSL labels of SIMLA."""
    out = torch.zeros(input_ids.shape[0], vocab_size, device=input_ids.device)
    return out.scatter_add_(1, input_ids, selected.float()).clamp_(max=1.0)


# ------------------------------------------------------------------------------------ images
@dataclass
class ImageMask:
    """A patch mask with the same number M of masked patches in every row, in both ViT forms."""

    masked: torch.Tensor  # (B, N) bool, True = masked (the ViT's ``mask`` argument)
    keep_idx: torch.Tensor  # (B, N - M) long, visible patches ascending (the ViT's ``keep_idx``)
    mask_idx: torch.Tensor  # (B, M) long, masked patches ascending (where targets are gathered)

    @classmethod
    def from_bool(cls, masked: torch.Tensor) -> "ImageMask":
        """Index forms of a (B, N) bool mask; every row must mask the same count, since
        ``keep_idx`` is a rectangular tensor."""
        if masked.dim() != 2:
            raise ValueError(f"expected a (B, N) mask, got shape {tuple(masked.shape)}")
        masked = masked.bool()
        b, n = masked.shape
        counts = masked.sum(1)
        if b and not bool((counts == counts[0]).all()):
            raise ValueError(
                "ImageMask needs the same number of masked patches in every row (keep_idx is a "
                f"(B, K) tensor), got counts {sorted(set(counts.tolist()))}; pass the bool mask to the "
                "ViT's mask-token path instead"
            )
        m = int(counts[0]) if b else 0
        order = masked.to(torch.uint8).argsort(dim=1, stable=True)  # visible first, each group ascending
        return cls(masked, order[:, : n - m], order[:, n - m :])

    @property
    def num_masked(self) -> int:
        return self.mask_idx.shape[1]

    def rows(self, index: slice | torch.Tensor) -> "ImageMask":
        """The same mask for a subset of rows (e.g. this rank's slice of the global batch)."""
        return ImageMask(self.masked[index], self.keep_idx[index], self.mask_idx[index])


def random_patch_mask(noise: torch.Tensor, ratio: float = 0.75) -> ImageMask:
    """Mask ``mask_counts(N, ratio)`` uniformly random patches per row: the N lowest of ``noise``
    (uniform, (B, N)). 0.75 [paper: MAE; MAMO's image ratio per notes]."""
    if noise.dim() != 2:
        raise ValueError(f"noise must be (B, N), got shape {tuple(noise.shape)}")
    return ImageMask.from_bool(exact_count_mask(noise, torch.ones_like(noise, dtype=torch.bool), ratio))


BEIT_GRID_PATCHES = 14 * 14  # BEiT's 224 px / 16 px grid, where its block sizes were tuned
BEIT_MIN_BLOCK = 16


def default_min_block(num_patches: int) -> int:
    """Smallest block area: BEiT's 16 patches on 14x14 (about 8% of the image) [code: BEiT],
    scaled with the grid area for smaller grids and capped at 16 for larger ones (SIMLA keeps 16
    on 16x16 [code: SIMLA]) [ours]; e.g. 5 on 8x8, 3 on 5x7."""
    return max(1, min(BEIT_MIN_BLOCK, round(BEIT_MIN_BLOCK * num_patches / BEIT_GRID_PATCHES)))


def _place_block(grid: list[list[bool]], rng: random.Random, cap: int, min_block: int,
                 log_aspect: tuple[float, float], attempts: int) -> int:
    """One BEiT block: a rectangle of random area and aspect that adds 1..cap new patches."""
    gh, gw = len(grid), len(grid[0])
    for _ in range(attempts):
        area = rng.uniform(min_block, cap)  # as BEiT: the range reverses when cap < min_block
        aspect = math.exp(rng.uniform(*log_aspect))
        h = int(round(math.sqrt(area * aspect)))
        w = int(round(math.sqrt(area / aspect)))
        if not (1 <= h <= gh and 1 <= w <= gw) or h * w < min(min_block, cap):
            continue
        top, left = rng.randint(0, gh - h), rng.randint(0, gw - w)
        new = sum(not grid[i][j] for i in range(top, top + h) for j in range(left, left + w))
        if 0 < new <= cap:
            for i in range(top, top + h):
                for j in range(left, left + w):
                    grid[i][j] = True
            return new
    return 0


def _grow(grid: list[list[bool]], rng: random.Random, missing: int) -> None:
    """Top up ``missing`` patches, taken at random from the border of the masked region (so the
    blocks stay blocks), or one random seed patch when nothing is masked yet."""
    gh, gw = len(grid), len(grid[0])
    while missing > 0:
        border = [
            (i, j) for i in range(gh) for j in range(gw) if not grid[i][j] and any(
                0 <= a < gh and 0 <= b < gw and grid[a][b] for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
            )
        ]
        if border:
            picks = rng.sample(border, min(missing, len(border)))
        else:
            picks = [rng.choice([(i, j) for i in range(gh) for j in range(gw) if not grid[i][j]])]
        for i, j in picks:
            grid[i][j] = True
        missing -= len(picks)


def block_patch_mask(
    grid_h: int,
    grid_w: int,
    ratio: float = 0.4,
    *,
    generator: torch.Generator,
    batch: int,
    min_block: int | None = None,
    max_block: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    attempts: int = 10,
    device: torch.device | str | None = None,
) -> ImageMask:
    """BEiT block-wise masking on a ``grid_h`` x ``grid_w`` patch grid (raster order), exact count.

    Why: masking random single patches lets the model interpolate from neighbours; rectangles of
    patches make it reason about whole regions [paper: BEiT]. Per row, BEiT's loop places
    rectangles of area ~ U(min_block, remaining) and log-uniform aspect h/w in
    [min_aspect, max_aspect] until ``mask_counts(N, ratio)`` patches are masked, each block adding
    at most the remaining count (capped by ``max_block``, default the whole target).

    Defaults: ratio 0.4 [paper: BEiT, "about 40%", 75 of 196 in its code; BEiT v2 uses 118/196,
    SIMLA 75/256]; aspect 0.3 .. 1/0.3 and 10 attempts per block [code: BEiT]; ``min_block`` from
    :func:`default_min_block`. Differences from BEiT [ours]: a block may span the full grid
    dimension (BEiT requires h < grid_h, w < grid_w, which forbids blocks on 1-row grids); a
    rectangle whose rounded area falls below ``min(min_block, remaining)`` is redrawn, so every
    placed block has at least ``min_block`` patches while that many remain; when all attempts
    fail, the count is topped up from the masked region's border (BEiT v2 tops up uniformly at
    random), so the result is always exact.

    Randomness: one seed per row is drawn from ``generator`` (a (batch,) ``randint``) and drives
    that row's Python RNG; draw the global batch and take this rank's rows with
    :meth:`ImageMask.rows`.
    """
    n = grid_h * grid_w
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"the grid must be at least 1x1, got {grid_h}x{grid_w}")
    if not 0 < min_aspect <= 1:
        raise ValueError(f"min_aspect must lie in (0, 1], got {min_aspect}")
    max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
    if max_aspect < min_aspect:
        raise ValueError(f"max_aspect ({max_aspect}) must be >= min_aspect ({min_aspect})")
    min_block = default_min_block(n) if min_block is None else min_block
    if min_block < 1:
        raise ValueError(f"min_block must be >= 1, got {min_block}")
    target = int(mask_counts(torch.tensor([n]), ratio)[0])
    max_block = target if max_block is None else max_block
    log_aspect = (math.log(min_aspect), math.log(max_aspect))
    seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=generator.device).tolist()
    rows = []
    for seed in seeds:
        rng = random.Random(seed)
        grid = [[False] * grid_w for _ in range(grid_h)]
        count = 0
        while count < target:
            delta = _place_block(grid, rng, min(target - count, max_block), min_block, log_aspect, attempts)
            if delta == 0:
                break
            count += delta
        _grow(grid, rng, target - count)
        rows.append([cell for line in grid for cell in line])
    masked = torch.tensor(rows, dtype=torch.bool, device=device).reshape(batch, n)
    return ImageMask.from_bool(masked)


def text_guided_patch_mask(
    relevance: torch.Tensor,
    noise: torch.Tensor,
    ratio: float = 0.5,
    guided_fraction: float = 0.5,
) -> ImageMask:
    """SemMIM-style text-guided masking: hide the patches the caption talks about.

    Per row ``k = mask_counts(N, ratio)`` patches are masked: the ``round(guided_fraction * k)``
    with the highest ``relevance`` (B, N) (e.g. text-to-patch attention or patch/text cosine; ties
    to the lower index), the rest uniformly at random among the others by lowest ``noise``
    (uniform, (B, N)). ``guided_fraction = 0`` gives exactly ``random_patch_mask(noise, ratio)``.
    Why the random share: masking only the most relevant patches is too hard (and the relevance
    too noisy) early on [notes: SemMIM]. Defaults ratio 0.5 and a 50/50 mix are [notes]
    suggestions, not SemMIM's numbers (not available to us); ramp ``guided_fraction`` with
    :func:`guided_fraction_at`.
    """
    if relevance.shape != noise.shape or relevance.dim() != 2:
        raise ValueError(f"relevance and noise must both be (B, N), got {tuple(relevance.shape)} and {tuple(noise.shape)}")
    if not 0.0 <= guided_fraction <= 1.0:
        raise ValueError(f"guided_fraction must lie in [0, 1], got {guided_fraction}")
    b, n = noise.shape
    everything = torch.ones_like(noise, dtype=torch.bool)
    k = mask_counts(torch.full((b,), n, device=noise.device), ratio)
    g = (k.float() * guided_fraction).round().long()
    guided = _lowest_k(-relevance.detach().float().to(noise.device), everything, g)
    rest = _lowest_k(noise, ~guided, k - g)
    return ImageMask.from_bool(guided | rest)


def guided_fraction_at(step: int, warmup_steps: int, final_fraction: float = 0.5) -> float:
    """Guided share at ``step``: linear from 0 (pure random masking, while relevance scores from a
    fresh model are noise) to ``final_fraction`` at ``warmup_steps``, then constant [ours; notes:
    SemMIM suggests a random warm-up or mix]."""
    if warmup_steps <= 0:
        return final_fraction
    return final_fraction * min(max(step, 0), warmup_steps) / warmup_steps


# ------------------------------------------------------------------------------------ both modalities
@dataclass
class JointMask:
    image: ImageMask
    text: MaskedText


def joint_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    num_patches: int,
    *,
    image_noise: torch.Tensor | None = None,
    text_noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    image_ratio: float = 0.75,
    text_ratio: float = 0.25,
) -> JointMask:
    """MAMO's joint masking: the same pair is masked in both modalities at once, so each must be
    recovered partly from a damaged other. Random patches at 0.75 and BERT 80/10/10 text masking
    at 0.25 [notes: MAMO, secondary reading of the paper; random (not block) and 80/10/10 are
    notes' suggestions].

    ``image_noise`` uniform (B, num_patches), ``text_noise`` uniform (B, L, 3) as in
    :func:`bert_text_mask`; missing ones are drawn from ``generator``, image first.
    """
    b, length = input_ids.shape
    image_noise = _noise(image_noise, (b, num_patches), generator, "image")
    text_noise = _noise(text_noise, (b, length, 3), generator, "text")
    image = random_patch_mask(image_noise, image_ratio)
    text = bert_text_mask(input_ids, attention_mask, special_ids, mask_id, vocab_size, ratio=text_ratio, noise=text_noise)
    return JointMask(image, text)


class MaskingMode(NamedTuple):
    name: str
    image_ratio: float
    text_ratio: float
    probability: float


# MLIM's Modality Aware Masking [notes: MLIM, secondary summary]: three modes drawn with equal
# probability; heavy = 0.8 per that summary; the light ratio (BERT's 0.15) and leaving the other
# modality intact in the heavy modes are [notes] suggestions (unverified in the paper).
MLIM_MODES: tuple[MaskingMode, ...] = (
    MaskingMode("heavy_image", 0.8, 0.0, 1 / 3),
    MaskingMode("heavy_text", 0.0, 0.8, 1 / 3),
    MaskingMode("light", 0.15, 0.15, 1 / 3),
)


@dataclass
class ModalityAwareMask:
    mode: torch.Tensor  # (B,) long, index into the modes
    image_ratio: torch.Tensor  # (B,) float, the row's mode's image ratio
    text_ratio: torch.Tensor  # (B,) float
    image_masked: torch.Tensor  # (B, N) bool, for the ViT's mask-token path (counts differ per row)
    text: MaskedText


def modality_aware_mask(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    special_ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    num_patches: int,
    *,
    modes: Sequence[MaskingMode] = MLIM_MODES,
    generator: torch.Generator | None = None,
    mode_noise: torch.Tensor | None = None,
    image_noise: torch.Tensor | None = None,
    text_noise: torch.Tensor | None = None,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
) -> ModalityAwareMask:
    """MLIM's Modality Aware Masking: per sample draw a mode (heavy image / heavy text / light
    both, :data:`MLIM_MODES`), then mask each modality at that mode's ratio, exactly.

    Why: heavily masking one modality while the other is (nearly) intact forces information to
    flow across modalities. Image counts differ per row, so the image mask is a (B, N) bool for
    mask-token replacement (as MLIM replaces, not drops), not an :class:`ImageMask`. Text uses
    BERT's 80/10/10 split [notes: unverified for MLIM].

    Noise (uniform): ``mode_noise`` (B,), ``image_noise`` (B, num_patches), ``text_noise``
    (B, L, 3); missing ones are drawn from ``generator`` in that order.
    """
    if not modes:
        raise ValueError("at least one masking mode is needed")
    probs = torch.tensor([m.probability for m in modes], dtype=torch.float64)
    if bool((probs < 0).any()) or abs(float(probs.sum()) - 1.0) > 1e-6:
        raise ValueError(f"mode probabilities must be >= 0 and sum to 1, got {probs.tolist()}")
    b, length = input_ids.shape
    device = input_ids.device
    mode_noise = _noise(mode_noise, (b,), generator, "mode").to(device)
    image_noise = _noise(image_noise, (b, num_patches), generator, "image").to(device)
    text_noise = _noise(text_noise, (b, length, 3), generator, "text").to(device)
    edges = probs.cumsum(0)[:-1].to(device)
    mode = torch.searchsorted(edges, mode_noise.double(), right=True).clamp_(max=len(modes) - 1)
    image_ratio = torch.tensor([m.image_ratio for m in modes], device=device)[mode]
    text_ratio = torch.tensor([m.text_ratio for m in modes], device=device)[mode]
    image_masked = exact_count_mask(image_noise, torch.ones_like(image_noise, dtype=torch.bool), image_ratio)
    text = bert_text_mask(input_ids, attention_mask, special_ids, mask_id, vocab_size, ratio=text_ratio,
                          mask_fraction=mask_fraction, random_fraction=random_fraction, noise=text_noise)
    return ModalityAwareMask(mode, image_ratio, text_ratio, image_masked, text)
