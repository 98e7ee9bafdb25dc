"""Rule-based negative captions: exactly one whole-word edit of the right kind, per-row determinism, and
ITM pairing each negative with its own image."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from maskvlp.config import ConfigError
from maskvlp.data.tokenizer import load_tokenizer
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.engine.trainer import text_specials
from maskvlp.negatives import ATTRIBUTE_WORDS, WordLexicon, perturb_batch, perturb_caption, split_words
from maskvlp.objectives import build_objective
from maskvlp.data.batch import Batch
from maskvlp.objectives.context import step_generator

TOKENIZER = load_tokenizer()
LEXICON = WordLexicon.from_tokenizer(TOKENIZER)


def _ids(text: str) -> list[int]:
    return TOKENIZER.encode([text], 40).input_ids[0].tolist()


def _text(ids: list[int]) -> str:
    return TOKENIZER.decode(torch.tensor(ids))


def _all_negatives(text: str, draws: int = 200) -> Counter:
    g = torch.Generator().manual_seed(0)
    out = Counter()
    for _ in range(draws):
        neg = perturb_caption(_ids(text), LEXICON, g)
        out[None if neg is None else _text(neg)] += 1
    return out


def test_attribute_swaps_and_converses_are_the_only_edits_and_all_are_drawn():
    seen = _all_negatives("a small red circle to the left of a large blue square")
    assert set(seen) == {
        "a small blue circle to the left of a large red square",  # colours exchanged
        "a large red circle to the left of a small blue square",  # sizes exchanged
        "a small red circle to the right of a large blue square",  # relation reversed
    }
    # the rule is drawn uniformly among the three that apply
    assert all(abs(n / 200 - 1 / 3) < 0.12 for n in seen.values()), seen


def test_multi_piece_words_move_whole_and_word_pieces_of_longer_words_are_not_words():
    assert len(TOKENIZER.tokenize("cyan")) > 1 and len(TOKENIZER.tokenize("matte")) > 1
    assert set(_all_negatives("a cyan matte star and a red metal cross", 50)) == {
        "a red matte star and a cyan metal cross", "a cyan metal star and a red matte cross"}
    # "reddish" starts with the piece "red" only if the tokenizer splits it so; either way it is no colour word
    assert set(_all_negatives("a reddish star and a blue cross", 20)) == {None}


@pytest.mark.parametrize("text", ["two circles", "a red circle and a red square", "a picture of a red object",
                                  "a dog running on the grass"])
def test_captions_without_two_different_attributes_or_a_spatial_word_get_no_negative(text):
    assert set(_all_negatives(text, 10)) == {None}


def test_a_negative_keeps_every_word_and_its_length():
    text = "there is a large gray matte square above a small cyan star"
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        ids = _ids(text)
        neg = perturb_caption(ids, LEXICON, g)
        words, neg_words = split_words(ids, LEXICON.continuation), split_words(neg, LEXICON.continuation)
        changed = [i for i, (a, b) in enumerate(zip(words, neg_words)) if a != b]
        if len(changed) == 2:  # a swap: the same multiset of words, two of one kind exchanged
            assert Counter(words) == Counter(neg_words) and len(neg) == len(ids)
            kinds = {LEXICON.kind[words[i]] for i in changed}
            assert len(kinds) == 1 and kinds <= set(ATTRIBUTE_WORDS)
        else:  # a converse: one spatial word replaced
            assert changed and len(changed) == 1 and LEXICON.converse[words[changed[0]]] == neg_words[changed[0]]


def test_batch_negatives_depend_on_their_row_alone_and_are_padded():
    texts = ["a red circle and a blue square", "two circles", "a star above a cross"]
    enc = TOKENIZER.encode(texts, 40)

    def generator(offset):
        return lambda r: torch.Generator().manual_seed(1000 + offset + r)

    ids, mask, valid = perturb_batch(enc.input_ids, enc.attention_mask, LEXICON, generator(0), TOKENIZER.pad_id)
    assert valid.tolist() == [True, False, True]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert _text(ids[1][mask[1].bool()].tolist()) == "a star below a cross"
    assert (ids[mask == 0] == TOKENIZER.pad_id).all()
    # the last row alone, with its global row index (as a second rank would hold it): the same negative
    alone = TOKENIZER.encode(texts[2:], 40)
    ids2, mask2, _ = perturb_batch(alone.input_ids, alone.attention_mask, LEXICON, generator(2), TOKENIZER.pad_id)
    assert ids2[0][mask2[0].bool()].tolist() == ids[1][mask[1].bool()].tolist()


def test_itm_scores_each_negative_caption_against_its_own_image(tmp_path):
    torch.manual_seed(0)
    extra = ("objectives.itm.params.text_negatives=swap",)
    cfg = tiny_config(tmp_path, "albef", *extra)
    module = Pretrainer(cfg, text_specials(TOKENIZER))
    captions = ["a red circle and a blue square", "two circles", "a star above a cross", "a green triangle"]
    tok = TOKENIZER.encode(captions, cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    batch = Batch(torch.randn(4, 3, size, size), tok.input_ids, tok.attention_mask, torch.arange(4), 4)
    seen = {}
    itm_logits = module.model.itm_logits

    def spy(text, mask, image, image_index=None):
        seen.update(text=text, mask=mask, image=image if image_index is None else image[image_index])
        return itm_logits(text, mask, image, image_index)

    module.model.itm_logits = spy
    _, metrics = module(batch, step=0)
    n = 4
    assert seen["text"].shape[0] == 3 * n + 2  # positives, two hard negatives each, two caption negatives
    image = module.model.encode_image(batch.images).tokens
    assert torch.allclose(seen["image"][-2:], image[[0, 2]], atol=1e-5)  # each with its own image
    neg_ids = perturb_batch(batch.input_ids, batch.attention_mask, text_specials(TOKENIZER).lexicon,
                            lambda r: step_generator(cfg.train.seed, 0, 0, f"text-negatives/{r}"), TOKENIZER.pad_id)[0]
    neg_text = module.model.encode_text(neg_ids, (neg_ids != TOKENIZER.pad_id).long()).tokens
    width = neg_text.shape[1]
    assert torch.allclose(seen["text"][-2:, :width], neg_text, atol=1e-5)
    assert (seen["mask"][-2:, width:] == 0).all()
    assert 0.0 <= metrics["itm_swap_acc"] <= 1.0


def test_itm_with_no_caption_to_perturb_adds_no_pair(tmp_path):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, "albef", "objectives.itm.params.text_negatives=swap")
    module = Pretrainer(cfg, text_specials(TOKENIZER))
    tok = TOKENIZER.encode(["two circles", "a green triangle"], cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    batch = Batch(torch.randn(2, 3, size, size), tok.input_ids, tok.attention_mask, torch.arange(2), 2)
    pairs = []
    itm_logits = module.model.itm_logits
    module.model.itm_logits = lambda text, *rest, **kw: pairs.append(text.shape[0]) or itm_logits(text, *rest, **kw)
    loss, metrics = module(batch, step=0)
    assert pairs == [3 * 2] and "itm_swap_acc" not in metrics and torch.isfinite(loss)


def test_unknown_text_negatives_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="text_negatives"):
        build_objective("itm", tiny_config(tmp_path).model, {"text_negatives": "shuffle"})


# ------------------------------------------------------------------------------------------ ITC (NegCLIP)
CAPTIONS = ["a red circle and a blue square", "two circles", "a star above a cross", "a green triangle"]


def _caption_batch(cfg, captions=CAPTIONS) -> Batch:
    tok = TOKENIZER.encode(captions, cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    images = torch.randn(len(captions), 3, size, size, generator=torch.Generator().manual_seed(3))
    return Batch(images, tok.input_ids, tok.attention_mask, torch.arange(len(captions)), len(captions))


def _twins(cfg, batch: Batch, step: int) -> torch.Tensor:
    ids, _, has = perturb_batch(batch.input_ids, batch.attention_mask, text_specials(TOKENIZER).lexicon,
                                lambda r: step_generator(cfg.train.seed, step, 0, f"text-negatives/{r}"), TOKENIZER.pad_id)
    return ids, has


def _soft_ce(logits, targets):
    return -(targets * torch.log_softmax(logits, 1)).sum(1).mean()


@torch.no_grad()
@pytest.mark.parametrize("recipe", ["clip", "albef"])
def test_itc_twins_are_extra_image_to_text_columns_against_a_reference(tmp_path, recipe):
    """NegCLIP's loss written out densely, with only the captions that have a twin as extra columns; under
    momentum distillation the teacher's soft targets cover the twins too."""
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, recipe, "objectives.itc.params.text_negatives=swap",
                      *(["objectives.itm.weight=0", "objectives.mlm.weight=0"] if recipe == "albef" else []))
    module = Pretrainer(cfg, text_specials(TOKENIZER))
    batch, step = _caption_batch(cfg), 300  # past the distillation ramp: alpha at its full value
    _, metrics = module(batch, step=step)
    model, temp = module.model, float(module.model.temp)
    twin_ids, has = _twins(cfg, batch, step)
    assert has.tolist() == [True, False, True, False]
    twin_mask = (twin_ids != TOKENIZER.pad_id).long()
    img = model.encode_image(batch.images).embed
    txt = model.encode_text(batch.input_ids, batch.attention_mask).embed
    twin = model.encode_text(twin_ids, twin_mask).embed
    truth = torch.eye(4)
    i2t_logits = torch.cat([img @ txt.T, img @ twin.T], 1) / temp
    i2t_truth = F.pad(truth, (0, 2))
    if recipe == "albef":
        alpha = module.objectives["itc"].alpha
        t_img = model.encode_image(batch.images, teacher=True).embed
        t_txt = model.encode_text(batch.input_ids, batch.attention_mask, teacher=True).embed
        t_twin = model.encode_text(twin_ids, twin_mask, teacher=True).embed
        t_i2t = torch.softmax(torch.cat([t_img @ t_txt.T, t_img @ t_twin.T], 1) / temp, 1)
        i2t_targets = alpha * t_i2t + (1 - alpha) * i2t_truth
        t2i_targets = alpha * torch.softmax(t_txt @ t_img.T / temp, 1) + (1 - alpha) * truth
    else:
        i2t_targets, t2i_targets = i2t_truth, truth
    expected = (_soft_ce(i2t_logits, i2t_targets) + _soft_ce(txt @ img.T / temp, t2i_targets)) / 2
    assert math.isclose(metrics["loss_itc"], float(expected), rel_tol=1e-5)
    own = (img * txt).sum(1)[has] > (img[has] * twin).sum(1)
    assert math.isclose(metrics["itc_swap_acc"], float(own.float().mean()), abs_tol=1e-6)


def test_itc_twins_send_gradient_to_the_text_tower_only_through_the_twin_columns(tmp_path):
    """With the image features fixed, a twin column is the only place a caption's perturbation enters the
    loss: turning twins on changes the text tower's gradient, and a batch with no twin changes nothing."""
    def grads(captions, *extra):
        torch.manual_seed(0)
        cfg = tiny_config(tmp_path, "clip", *extra)
        module = Pretrainer(cfg, text_specials(TOKENIZER))
        loss, _ = module(_caption_batch(cfg, captions), step=0)
        loss.backward()
        return torch.cat([p.grad.flatten() for p in module.model.text.parameters() if p.grad is not None])

    on = "objectives.itc.params.text_negatives=swap"
    assert not torch.allclose(grads(CAPTIONS), grads(CAPTIONS, on))
    plain = ["two circles", "a green triangle", "a red object", "three stars"]
    assert torch.equal(grads(plain), grads(plain, on))


def test_unknown_itc_text_negatives_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="objectives.itc.params.text_negatives"):
        build_objective("itc", tiny_config(tmp_path).model, {"text_negatives": "shuffle"})


def _itm_step(tmp_path, *overrides: str) -> tuple[dict, torch.Tensor]:
    """One albef step (swapped-caption twins on) on 4 captions: its metrics and the ITM logits it computed."""
    captions = ["a red circle and a blue square", "two circles", "a star above a cross", "a green triangle"]
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, "albef", "objectives.itm.params.text_negatives=swap", *overrides)
    module = Pretrainer(cfg, text_specials(TOKENIZER))
    tok = TOKENIZER.encode(captions, cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    batch = Batch(torch.randn(4, 3, size, size), tok.input_ids, tok.attention_mask, torch.arange(4), 4)
    seen = []
    itm_logits = module.model.itm_logits
    module.model.itm_logits = lambda *args, **kw: seen.append(itm_logits(*args, **kw)) or seen[-1]
    _, metrics = module(batch, step=0)
    return metrics, seen[-1].detach().float()


def test_balanced_itm_weighs_positives_and_negatives_equally(tmp_path):
    """balance=true: the loss is half the mean cross-entropy of the positives plus half that of the negatives
    (swapped captions included), whatever the class counts; false keeps ALBEF's mean over all pairs."""
    losses = {}
    for balance in (True, False):
        metrics, logits = _itm_step(tmp_path, "objectives.itm.params.rank=0",
                                    f"objectives.itm.params.balance={str(balance).lower()}")
        labels = torch.zeros(len(logits), dtype=torch.long)
        labels[:4] = 1
        ce = F.cross_entropy(logits, labels, reduction="none")
        assert len(logits) == 3 * 4 + 2  # 4 positives, 10 negatives: unbalanced classes
        expected = 0.5 * (ce[:4].mean() + ce[4:].mean()) if balance else ce.mean()
        assert math.isclose(metrics["loss_itm"], float(expected), rel_tol=1e-5)
        losses[balance] = metrics["loss_itm"]
    assert not math.isclose(losses[True], losses[False], rel_tol=1e-3)
    with pytest.raises(ConfigError, match="balance"):
        build_objective("itm", tiny_config(tmp_path).model, {"balance": "yes"})


def _rank_term(scores: list[torch.Tensor]) -> torch.Tensor:
    """-log softmax of the first score among an anchor's candidates (the positive comes first)."""
    return -F.log_softmax(torch.stack(scores), 0)[0]


def test_itm_ranking_term_equals_a_per_anchor_loop(tmp_path):
    """rank=r: loss_itm is ALBEF's mean cross-entropy plus r times the mean over anchors of a softmax ranking on
    the match log-odds: each text [own image, its negative image], each image [own caption, its negative
    caption, its caption's twin when it has one]. The twin metric is the share of twins scored below."""
    twin_of = {0: 12, 2: 13}  # rows with a twin (rule-based), in row order after 4 positives + 4 + 4 negatives
    metrics, logits = _itm_step(tmp_path, "objectives.itm.params.rank=0.5")
    assert len(logits) == 3 * 4 + 2
    labels = torch.zeros(len(logits), dtype=torch.long)
    labels[:4] = 1
    s = logits[:, 1] - logits[:, 0]
    terms = [_rank_term([s[r], s[4 + r]]) for r in range(4)]
    terms += [_rank_term([s[r], s[8 + r]] + ([s[twin_of[r]]] if r in twin_of else [])) for r in range(4)]
    expected = F.cross_entropy(logits, labels) + 0.5 * torch.stack(terms).mean()
    assert math.isclose(metrics["loss_itm"], float(expected), rel_tol=1e-5)
    below = [bool(s[r] > s[t]) for r, t in twin_of.items()]
    assert math.isclose(metrics["itm_swap_rank_acc"], sum(below) / 2)
    for bad in (-1.0, "yes", True):
        with pytest.raises(ConfigError, match="rank"):
            build_objective("itm", tiny_config(tmp_path).model, {"rank": bad})


def test_itm_ranking_skips_anchors_without_negatives():
    """An anchor whose every candidate is missing adds nothing (no log 1 = 0 terms diluting the mean)."""
    from maskvlp.objectives.itm import ranking_loss

    logits = torch.tensor([[0.0, 1.0], [0.0, 2.0], [0.0, 3.0], [0.5, 0.0]])  # 2 positives, then 1 + 1 negatives
    ok_t, ok_i = torch.tensor([True, False]), torch.tensor([False, True])
    loss, metrics = ranking_loss(logits, 2, ok_t, ok_i, None)
    s = logits[:, 1] - logits[:, 0]
    expected = (_rank_term([s[0], s[2]]) + _rank_term([s[1], s[3]])) / 2
    assert math.isclose(float(loss), float(expected), rel_tol=1e-6) and metrics == {}
