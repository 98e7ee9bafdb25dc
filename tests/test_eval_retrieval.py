"""Model-level evaluation against brute force: batched ITM re-rank and the binding test."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from maskvlp.data.retrieval_sets import synthetic_retrieval_set
from maskvlp.data.synthetic import SyntheticWorld
from maskvlp.data.tokenizer import load_tokenizer
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.engine.trainer import text_specials
from maskvlp.eval import metrics as M
from maskvlp.eval.retrieval import encode_images, encode_texts, evaluate_retrieval


def _setup(tmp_path):
    cfg = tiny_config(tmp_path)
    tok = load_tokenizer()
    torch.manual_seed(0)
    model = Pretrainer(cfg, text_specials(tok)).model.eval()
    world = SyntheticWorld(dataclasses.replace(cfg.data.world, image_size=cfg.model.vision.image_size))
    rset = synthetic_retrieval_set(world, "test", num_images=8)
    return cfg, tok, model, rset


def _itm_one_pair(model, tok, rset, image_index: int, text: str, score: str = "itm") -> float:
    """The reference: one pair at a time, text unpadded. ``itm``: log p(match); ``albef``: ALBEF's
    Retrieval.py score, the match logit plus the ITC cosine similarity."""
    b = tok.encode([text], 40)
    img = model.encode_image(rset.image_batch([image_index]))
    txt = model.encode_text(b.input_ids, b.attention_mask)
    logits = model.itm_logits(txt.tokens, b.attention_mask, img.tokens)
    if score == "albef":
        return float(logits[0, 1] + (img.embed * txt.embed).sum())
    return float(F.log_softmax(logits, -1)[0, 1])


@pytest.mark.parametrize("itm_score", ["albef", "itm"])
@torch.no_grad()
def test_batched_itm_rerank_equals_a_per_pair_loop(tmp_path, itm_score):
    cfg, tok, model, rset = _setup(tmp_path)
    eval_cfg = dataclasses.replace(cfg.eval, itm_k=3, batch_size=5, itm_score=itm_score)
    rows = evaluate_retrieval(model, tok, rset, eval_cfg, cfg.model.text.max_len, show_progress=False)
    images = encode_images(model, rset.image_batch, rset.num_images, 4)
    texts = encode_texts(model, tok, rset.texts, 40, 7)
    sim = images.embed @ texts.embed.T
    # brute force: per image, its top-3 captions by ITC, each scored alone; per caption, its top-3 images
    i2t = torch.full_like(sim, float("-inf"))
    t2i = torch.full_like(sim, float("-inf"))
    for i in range(sim.shape[0]):
        for t in sim[i].topk(3).indices.tolist():
            i2t[i, t] = _itm_one_pair(model, tok, rset, i, rset.texts[t], itm_score)
    for t in range(sim.shape[1]):
        for i in sim[:, t].topk(3).indices.tolist():
            t2i[i, t] = _itm_one_pair(model, tok, rset, i, rset.texts[t], itm_score)
    txt2img = torch.as_tensor(rset.txt2img)
    expected = {**{k: v for k, v in M.recall_at_k(i2t, txt2img).items() if k.startswith("txt")},
                **{k: v for k, v in M.recall_at_k(t2i, txt2img).items() if k.startswith("img")}}
    got = rows["itm k=3"]
    for key, value in expected.items():
        assert got[key] == value or abs(got[key] - value) < 1e-6, key  # an unreachable median rank is inf in both
    # and the per-pair scores themselves agree with the batched scorer
    from maskvlp.eval.retrieval import itm_scorer

    score = itm_scorer(model, images, texts)
    pairs_i = torch.tensor([0, 3, 5, 7, 3, 0, 3])  # images repeat: each is projected once per sub-batch
    pairs_t = torch.tensor([1, 10, 2, 30, 4, 9, 1])
    batched = score(pairs_i, pairs_t)
    single = torch.tensor([_itm_one_pair(model, tok, rset, int(i), rset.texts[int(t)]) for i, t in zip(pairs_i, pairs_t)])
    assert torch.allclose(batched, single, atol=1e-5)


@torch.no_grad()
def test_binding_figures_equal_a_direct_count(tmp_path):
    cfg, tok, model, rset = _setup(tmp_path)
    rows = evaluate_retrieval(model, tok, rset, dataclasses.replace(cfg.eval, itm_k=2), cfg.model.text.max_len,
                              show_progress=False)
    colour = [p for p in rset.probes if p[1] == "colour_swap"]
    assert colour, "the test world must produce colour-swap probes"
    wins = 0.0
    for image_index, _, true_text, false_text in colour:
        s_true = _itm_one_pair(model, tok, rset, image_index, true_text)
        s_false = _itm_one_pair(model, tok, rset, image_index, false_text)
        wins += 1.0 if s_true > s_false else 0.5 if s_true == s_false else 0.0
    assert abs(rows["itm k=2"]["binding_colour"] - 100 * wins / len(colour)) < 1e-6
    assert rows["itc"]["ceiling_img_r1"] <= 100


def _mlm_logprob_one_probe(model, tok, rset, image_index: int, true_text: str, false_text: str):
    """The reference: one probe at a time, unpadded; mask the differing tokens, sum log p of each twin's."""
    t, f = tok.encode([true_text], 40), tok.encode([false_text], 40)
    if t.input_ids.shape != f.input_ids.shape:
        return None
    diff = t.input_ids[0] != f.input_ids[0]
    ids = t.input_ids.clone()
    ids[0, diff] = tok.mask_id
    img = model.encode_image(rset.image_batch([image_index]))
    fused = model.fuse(model.encode_text(ids, t.attention_mask).tokens, t.attention_mask, img.tokens).text[0]
    logp = F.log_softmax(model.mlm_head(fused[diff]), -1)
    pick = lambda b: float(logp.gather(1, b.input_ids[0, diff][:, None]).sum())  # noqa: E731
    return pick(t), pick(f)


@torch.no_grad()
def test_mlm_binding_equals_a_per_probe_loop(tmp_path):
    cfg, tok, model, rset = _setup(tmp_path)
    rows = evaluate_retrieval(model, tok, rset, dataclasses.replace(cfg.eval, itm_k=0), cfg.model.text.max_len,
                              show_progress=False)
    for kind, key in (("colour_swap", "binding_colour"), ("relation", "binding_relation")):
        wins, n, skipped = 0.0, 0, 0
        for image_index, k, true_text, false_text in rset.probes:
            if k != kind:
                continue
            scores = _mlm_logprob_one_probe(model, tok, rset, image_index, true_text, false_text)
            if scores is None:
                skipped += 1
                continue
            n += 1
            wins += 1.0 if scores[0] > scores[1] + 1e-9 else 0.0 if scores[0] < scores[1] - 1e-9 else 0.5
        assert n > 0, f"the test world must produce comparable {kind} probes"
        assert abs(rows["mlm"][key] - 100 * wins / n) < 1e-6, kind


def test_masked_twins_mask_exactly_the_edited_tokens():
    from maskvlp.eval.mlm_binding import masked_twins

    true = torch.tensor([[101, 5, 6, 7, 8, 102, 0], [101, 5, 6, 102, 0, 0, 0], [101, 5, 102, 0, 0, 0, 0]])
    false = torch.tensor([[101, 7, 6, 5, 8, 102, 0], [101, 5, 6, 9, 102, 0, 0], [101, 5, 102, 0, 0, 0, 0]])
    true_mask, false_mask = (true != 0).long(), (false != 0).long()
    ids, diff, comparable = masked_twins(true, false, true_mask, false_mask, mask_id=103)
    assert comparable.tolist() == [True, False, False]  # row 1: lengths differ; row 2: identical twins
    assert diff[0].tolist() == [False, True, False, True, False, False, False] and not diff[1:].any()
    assert ids[0].tolist() == [101, 103, 6, 103, 8, 102, 0]
    assert torch.equal(ids[0], false[0].masked_fill(diff[0], 103))  # one masked input serves both twins
