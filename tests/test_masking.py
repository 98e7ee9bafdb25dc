"""Masking policies on properties: exact counts, index forms, determinism from passed noise, and the
selection each policy promises (blocks, top relevance, top keywords)."""
from __future__ import annotations

import pytest
import torch

from maskvlp.data.tokenizer import load_tokenizer
from maskvlp.masking import (
    MLIM_MODES,
    ImageMask,
    MaskingMode,
    attention_votes,
    bert_text_mask,
    block_patch_mask,
    continuation_table,
    default_min_block,
    exact_count_mask,
    guided_fraction_at,
    keyword_token_mask,
    mask_counts,
    modality_aware_mask,
    multi_hot,
    random_patch_mask,
    text_guided_patch_mask,
)

TOKENIZER = load_tokenizer()
SPECIAL_IDS = torch.tensor(sorted(TOKENIZER.special_ids))
VOCAB = TOKENIZER.vocab_size
MASK_ID = TOKENIZER.mask_id
CONT_TABLE = continuation_table(TOKENIZER.backend.convert_ids_to_tokens(list(range(VOCAB))))
CAPTIONS = [
    "a small unbelievably red metal circle to the left of a tessellated blue square",
    "a green triangle",
    "the xylophone sits beside an extraordinarily large gray cube",
    "two circles",
    "photographers photographing photogenic hippopotamuses",
    "a red circle and an orange cross below a blue triangle near a purple star",
]
SHAPES = [(3, 35), (4, 196), (2, 1), (5, 64), (1, 17)]  # 35 = a 5x7 grid; 17 is prime
RATIOS = [0.1, 0.15, 0.4, 0.75, 0.9, 1.0]


def expected(n: int, ratio: float) -> int:
    return 0 if ratio == 0 or n == 0 else max(1, round(ratio * n))


def assert_index_forms(m: ImageMask) -> None:
    b, n = m.masked.shape
    for row in range(b):
        keep, hide = m.keep_idx[row].tolist(), m.mask_idx[row].tolist()
        assert keep == sorted(keep) and hide == sorted(hide)
        assert sorted(keep + hide) == list(range(n)), "keep_idx and mask_idx must partition range(N)"
        assert m.masked[row, hide].all() and not m.masked[row, keep].any()


def largest_rectangle(grid: torch.Tensor) -> int:
    """Area of the largest all-True axis-aligned rectangle (histogram method)."""
    h, w = grid.shape
    heights = [0] * w
    best = 0
    for i in range(h):
        heights = [heights[j] + 1 if grid[i, j] else 0 for j in range(w)]
        stack: list[int] = []
        for j in range(w + 1):
            cur = heights[j] if j < w else 0
            while stack and heights[stack[-1]] >= cur:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                best = max(best, heights[top] * (j - left))
            stack.append(j)
    return best


def encode(captions=CAPTIONS, max_len: int = 24):
    return TOKENIZER.encode(captions, max_len)


def eligible_of(ids: torch.Tensor, att: torch.Tensor) -> torch.Tensor:
    return att.bool() & ~torch.isin(ids, SPECIAL_IDS)


# ------------------------------------------------------------------------------------ counting
def test_mask_counts_hand_checked():
    n = torch.tensor([0, 1, 3, 5, 10, 35, 196])
    assert mask_counts(n, 0.15).tolist() == [0, 1, 1, 1, 2, 5, 29]  # 0.75 -> 1 (min one), 1.5 -> 2 (half to even)
    assert mask_counts(n, 0.75).tolist() == [0, 1, 2, 4, 8, 26, 147]  # 2.25, 3.75, 7.5 -> 8, 26.25, 147
    assert mask_counts(n, 0.0).tolist() == [0] * 7  # ratio 0 leaves a modality intact
    per_row = torch.tensor([0.5, 0.0, 0.5, 0.5, 0.0, 1.0, 0.4])
    assert mask_counts(n, per_row).tolist() == [0, 0, 2, 2, 0, 35, 78]  # 1.5 -> 2, 2.5 -> 2, 78.4 -> 78
    with pytest.raises(ValueError):
        mask_counts(n, 1.5)
    with pytest.raises(ValueError):
        mask_counts(n, torch.full((7,), -0.1))
    with pytest.raises(ValueError):
        mask_counts(n, torch.full((3,), 0.1))


def test_exact_count_mask_with_per_row_ratio_matches_per_row_float_calls():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(6, 23, generator=g)
    eligible = torch.rand(6, 23, generator=g) > 0.3
    eligible[5] = False
    ratios = [0.15, 0.5, 0.0, 1.0, 0.33, 0.8]
    together = exact_count_mask(scores, eligible, torch.tensor(ratios))
    for row, r in enumerate(ratios):
        alone = exact_count_mask(scores[row : row + 1], eligible[row : row + 1], r)
        assert torch.equal(together[row : row + 1], alone)
        assert int(together[row].sum()) == expected(int(eligible[row].sum()), r)
        assert not (together[row] & ~eligible[row]).any()


# ------------------------------------------------------------------------------------ image masks
def test_image_mask_from_bool_index_forms_and_unequal_rows():
    masked = torch.tensor([[True, False, False, True, False], [False, False, True, True, False]])
    m = ImageMask.from_bool(masked)
    assert m.keep_idx.tolist() == [[1, 2, 4], [0, 1, 4]]
    assert m.mask_idx.tolist() == [[0, 3], [2, 3]]
    assert m.num_masked == 2
    assert_index_forms(m)
    with pytest.raises(ValueError, match="same number of masked patches"):
        ImageMask.from_bool(torch.tensor([[True, False, False], [True, True, False]]))


@pytest.mark.parametrize("shape", SHAPES)
def test_random_patch_mask_exact_counts_and_partition(shape):
    b, n = shape
    noise = torch.rand(b, n, generator=torch.Generator().manual_seed(n))
    for ratio in RATIOS:
        m = random_patch_mask(noise, ratio)
        assert m.masked.sum(1).tolist() == [expected(n, ratio)] * b
        assert m.keep_idx.shape == (b, n - expected(n, ratio))
        assert_index_forms(m)


def test_random_patch_mask_same_noise_same_mask_and_rank_slices_agree():
    noise = torch.rand(8, 35, generator=torch.Generator().manual_seed(3))
    full = random_patch_mask(noise, 0.75)
    again = random_patch_mask(noise.clone(), 0.75)
    assert torch.equal(full.masked, again.masked) and torch.equal(full.keep_idx, again.keep_idx)
    for rank in range(2):  # each rank masks its half of the global noise
        rows = slice(4 * rank, 4 * rank + 4)
        part = random_patch_mask(noise[rows], 0.75)
        sliced = full.rows(rows)
        assert torch.equal(part.masked, sliced.masked)
        assert torch.equal(part.keep_idx, sliced.keep_idx) and torch.equal(part.mask_idx, sliced.mask_idx)


def test_default_min_block_scales_beit_to_the_grid():
    assert default_min_block(14 * 14) == 16  # BEiT
    assert default_min_block(16 * 16) == 16  # SIMLA keeps 16
    assert default_min_block(8 * 8) == 5  # 16 * 64 / 196 = 5.2
    assert default_min_block(5 * 7) == 3
    assert default_min_block(2 * 2) == 1


@pytest.mark.parametrize("grid", [(14, 14), (8, 8), (5, 7), (1, 9), (3, 3), (6, 11)])
def test_block_patch_mask_exact_and_blocky(grid):
    gh, gw = grid
    n = gh * gw
    min_block = default_min_block(n)
    for ratio in (0.15, 0.4, 0.6, 1.0):
        m = block_patch_mask(gh, gw, ratio, generator=torch.Generator().manual_seed(7), batch=6)
        target = expected(n, ratio)
        assert m.masked.shape == (6, n)
        assert m.masked.sum(1).tolist() == [target] * 6
        assert_index_forms(m)
        if target >= min_block:
            for row in range(6):
                area = largest_rectangle(m.masked[row].view(gh, gw))
                assert area >= min_block, f"no block of >= {min_block} patches on {grid} at ratio {ratio}"


def test_block_patch_mask_is_deterministic_in_its_generator_and_varies_across_rows():
    a = block_patch_mask(8, 8, 0.4, generator=torch.Generator().manual_seed(11), batch=5)
    b = block_patch_mask(8, 8, 0.4, generator=torch.Generator().manual_seed(11), batch=5)
    c = block_patch_mask(8, 8, 0.4, generator=torch.Generator().manual_seed(12), batch=5)
    assert torch.equal(a.masked, b.masked)
    assert not torch.equal(a.masked, c.masked)
    assert len({tuple(r) for r in a.masked.tolist()}) > 1


def test_block_patch_mask_exact_even_when_no_block_is_placed():
    # attempts=0: no rectangle is ever placed, so only the top-up can produce the count
    m = block_patch_mask(4, 4, 0.25, generator=torch.Generator().manual_seed(0), batch=4, attempts=0)
    assert m.masked.sum(1).tolist() == [4] * 4
    # the top-up grows one region: the 4 patches are 4-connected
    for row in range(4):
        cells = {(i, j) for i in range(4) for j in range(4) if m.masked[row].view(4, 4)[i, j]}
        seen, todo = set(), [next(iter(cells))]
        while todo:
            i, j = todo.pop()
            if (i, j) in seen:
                continue
            seen.add((i, j))
            todo += [c for c in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)) if c in cells]
        assert seen == cells


# ------------------------------------------------------------------------------------ text-guided
def test_text_guided_hand_checked_mix():
    relevance = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.5, 0.3]])
    noise = torch.tensor([[0.0, 0.7, 0.1, 0.2, 0.6, 0.4]])
    # k = round(0.5 * 6) = 3; guided = round(0.5 * 3) = round(1.5) = 2 -> patches 0 and 2 (top relevance);
    # 1 random among {1, 3, 4, 5} by lowest noise -> 3 (noise 0.2), not 0 or 2 again
    m = text_guided_patch_mask(relevance, noise, ratio=0.5, guided_fraction=0.5)
    assert m.mask_idx.tolist() == [[0, 2, 3]]
    assert m.keep_idx.tolist() == [[1, 4, 5]]


@pytest.mark.parametrize("shape", SHAPES)
def test_text_guided_extremes_and_counts(shape):
    b, n = shape
    g = torch.Generator().manual_seed(n + 1)
    relevance, noise = torch.rand(b, n, generator=g), torch.rand(b, n, generator=g)
    for ratio in RATIOS:
        k = expected(n, ratio)
        top = text_guided_patch_mask(relevance, noise, ratio, guided_fraction=1.0)
        want = relevance.argsort(dim=1, descending=True)[:, :k].sort(dim=1).values
        assert torch.equal(top.mask_idx, want), "guided_fraction=1 must mask exactly the top-k relevance"
        rand = text_guided_patch_mask(relevance, noise, ratio, guided_fraction=0.0)
        assert torch.equal(rand.masked, random_patch_mask(noise, ratio).masked)
        for frac in (0.25, 0.5, 0.8):
            mix = text_guided_patch_mask(relevance, noise, ratio, guided_fraction=frac)
            assert mix.masked.sum(1).tolist() == [k] * b
            assert_index_forms(mix)
            n_guided = round(frac * k)
            top_g = relevance.argsort(dim=1, descending=True)[:, :n_guided]
            assert mix.masked.gather(1, top_g).all()


def test_text_guided_ties_go_to_the_lower_index():
    relevance = torch.tensor([[0.5, 0.5, 0.5, 0.5]])
    m = text_guided_patch_mask(relevance, torch.rand(1, 4, generator=torch.Generator().manual_seed(0)), 0.5, 1.0)
    assert m.mask_idx.tolist() == [[0, 1]]


def test_guided_fraction_warmup():
    assert guided_fraction_at(0, 100, 0.6) == 0.0
    assert guided_fraction_at(50, 100, 0.6) == pytest.approx(0.3)
    assert guided_fraction_at(100, 100, 0.6) == pytest.approx(0.6)
    assert guided_fraction_at(1000, 100, 0.6) == pytest.approx(0.6)
    assert guided_fraction_at(5, 0, 0.6) == pytest.approx(0.6)


# ------------------------------------------------------------------------------------ modality-aware
def test_modality_aware_mode_frequencies_and_exact_per_row_counts():
    tok = encode(CAPTIONS * 100)  # 600 rows
    n_patches = 35
    out = modality_aware_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB, n_patches,
                              generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out.mode, minlength=3).float() / out.mode.numel()
    assert torch.allclose(freq, torch.full((3,), 1 / 3), atol=0.06), freq
    eligible = eligible_of(tok.input_ids, tok.attention_mask)
    for row in range(out.mode.numel()):
        mode = MLIM_MODES[int(out.mode[row])]
        assert float(out.image_ratio[row]) == pytest.approx(mode.image_ratio)
        assert float(out.text_ratio[row]) == pytest.approx(mode.text_ratio)
        assert int(out.image_masked[row].sum()) == expected(n_patches, mode.image_ratio)
        assert int(out.text.masked[row].sum()) == expected(int(eligible[row].sum()), mode.text_ratio)
        assert not (out.text.masked[row] & ~eligible[row]).any()
    heavy_image = out.mode == 0
    assert not out.text.masked[heavy_image].any() and (out.text.input_ids[heavy_image] == tok.input_ids[heavy_image]).all()
    assert not out.image_masked[out.mode == 1].any()


def test_modality_aware_custom_probabilities_and_validation():
    tok = encode(CAPTIONS * 200)
    modes = (MaskingMode("a", 0.5, 0.0, 0.5), MaskingMode("b", 0.0, 0.5, 0.3), MaskingMode("c", 0.2, 0.2, 0.2))
    out = modality_aware_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB, 16, modes=modes,
                              generator=torch.Generator().manual_seed(1))
    freq = torch.bincount(out.mode, minlength=3).float() / out.mode.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2]), atol=0.05), freq
    with pytest.raises(ValueError, match="sum to 1"):
        modality_aware_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB, 16,
                            modes=modes[:2], generator=torch.Generator())
    with pytest.raises(ValueError, match="global RNG"):
        modality_aware_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB, 16)


def test_modality_aware_mode_boundaries_hand_checked():
    tok = encode(CAPTIONS[:4])
    b, length = tok.input_ids.shape
    mode_noise = torch.tensor([0.0, 0.34, 0.67, 0.999])  # edges at 1/3 and 2/3
    out = modality_aware_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB, 10,
                              mode_noise=mode_noise, image_noise=torch.rand(b, 10), text_noise=torch.rand(b, length, 3))
    assert out.mode.tolist() == [0, 1, 2, 2]
    assert out.image_masked.sum(1).tolist() == [8, 0, 2, 2]  # 0.8 * 10, 0, round(1.5) = 2 twice


def test_modality_aware_rank_slices_agree():
    tok = encode()
    b, length = tok.input_ids.shape
    g = torch.Generator().manual_seed(5)
    noises = dict(mode_noise=torch.rand(b, generator=g), image_noise=torch.rand(b, 20, generator=g),
                  text_noise=torch.rand(b, length, 3, generator=g))
    full = modality_aware_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB, 20, **noises)
    rows = slice(3, 6)
    part = modality_aware_mask(tok.input_ids[rows], tok.attention_mask[rows], SPECIAL_IDS, MASK_ID, VOCAB, 20,
                               **{k: v[rows] for k, v in noises.items()})
    assert torch.equal(part.mode, full.mode[rows])
    assert torch.equal(part.image_masked, full.image_masked[rows])
    assert torch.equal(part.text.input_ids, full.text.input_ids[rows])


def test_bert_text_mask_accepts_per_row_ratio():
    tok = encode()
    b, length = tok.input_ids.shape
    noise = torch.rand(b, length, 3, generator=torch.Generator().manual_seed(2))
    ratios = [0.15, 0.5, 0.0, 0.8, 1.0, 0.25]
    together = bert_text_mask(tok.input_ids, tok.attention_mask, SPECIAL_IDS, MASK_ID, VOCAB,
                              ratio=torch.tensor(ratios), noise=noise)
    for row, r in enumerate(ratios):
        alone = bert_text_mask(tok.input_ids[row : row + 1], tok.attention_mask[row : row + 1], SPECIAL_IDS,
                               MASK_ID, VOCAB, ratio=r, noise=noise[row : row + 1])
        assert torch.equal(together.input_ids[row], alone.input_ids[0])
        assert torch.equal(together.labels[row], alone.labels[0])


# ------------------------------------------------------------------------------------ continuation table
def test_continuation_table_agrees_with_word_ids():
    """The ``##`` table (the tokenizer's ``continuation_ids``, which whole-word caption edits use)
    marks exactly the pieces that continue the word before them."""
    tok = encode()
    from_vocab = CONT_TABLE[tok.input_ids]
    prev = torch.nn.functional.pad(tok.word_ids[:, :-1], (1, 0), value=-1)
    assert torch.equal(from_vocab, (tok.word_ids >= 0) & (tok.word_ids == prev))
    assert from_vocab.any(), "the captions should contain multi-piece words"
    assert set(CONT_TABLE.nonzero().flatten().tolist()) == TOKENIZER.continuation_ids


# ------------------------------------------------------------------------------------ keywords
def test_keyword_selection_top_k_among_eligible():
    g = torch.Generator().manual_seed(6)
    scores = torch.rand(7, 12, generator=g)
    eligible = torch.rand(7, 12, generator=g) > 0.4
    eligible[6] = False
    eligible[5] = False
    eligible[5, :2] = True  # fewer eligible than k
    for k in (1, 4, 5):
        sel = keyword_token_mask(scores, eligible, k)
        for row in range(7):
            n = int(eligible[row].sum())
            assert int(sel[row].sum()) == min(k, n)
            assert not (sel[row] & ~eligible[row]).any()
            if sel[row].any() and (eligible[row] & ~sel[row]).any():
                assert scores[row][sel[row]].min() > scores[row][eligible[row] & ~sel[row]].max()


def test_keyword_ties_by_position_and_multi_hot():
    ids = torch.tensor([[101, 7, 9, 7, 5, 102, 0]])
    eligible = torch.tensor([[False, True, True, True, True, False, False]])
    scores = torch.tensor([[9.0, 0.5, 0.2, 0.5, 0.5, 9.0, 9.0]])
    sel = keyword_token_mask(scores, eligible, k=2)
    assert sel.tolist() == [[False, True, False, True, False, False, False]]  # three tied at 0.5: earliest two
    target = multi_hot(ids, sel, vocab_size=200)
    assert target.shape == (1, 200)
    assert target.sum().item() == 1.0  # both selected tokens are id 7: counted once
    assert target[0, 7] == 1.0
    sel3 = keyword_token_mask(scores, eligible, k=3)
    assert multi_hot(ids, sel3, 200).sum().item() == len(set(ids[sel3].tolist())) == 2


def test_attention_votes_hand_checked():
    # 2 heads, 5 positions, position 0 ([CLS]) ineligible though heavily attended
    att = torch.tensor([[[0.5, 0.3, 0.1, 0.05, 0.05], [0.6, 0.05, 0.05, 0.1, 0.2]]])
    eligible = torch.tensor([[False, True, True, True, True]])
    votes = attention_votes(att, eligible, per_head=2)
    # head 0 votes {1, 2}; head 1 votes {4, 3}
    assert votes[0, 0] == 0.0
    assert torch.allclose(votes[0, 1:], torch.tensor([1 + 0.5 * 0.175, 1 + 0.5 * 0.075, 1 + 0.5 * 0.075, 1 + 0.5 * 0.125]))
    assert keyword_token_mask(votes, eligible, k=2).tolist() == [[False, True, False, False, True]]
