"""SCL (semantic completion): the symmetric NCE by hand, exact masks, detached targets, same-sample
positives, global negatives, learning on a fixed batch, the recipe, and the fusion-mode check."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_config
from maskvlp.config import ConfigError, ObjectiveConfig
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.objectives import build_objective
from maskvlp.objectives import scl as scl_module  # registers "scl"
from maskvlp.data.batch import Batch
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.scl import SCL, completion_nce
from test_objectives import CAPTIONS, SPECIALS, TOKENIZER, _batch



def _scl_only(tmp_path, *extra: str) -> tuple[Pretrainer, object]:
    """A Pretrainer whose only objective is SCL; patch stem: the objective is under test, on noise images
    (as calibrated before the recipe inherited albef's frozen EfficientNet stem)."""
    cfg = tiny_config(tmp_path, "scl", "model.vision.stem=patch", *extra)
    cfg.objectives = [ObjectiveConfig("scl", 1.0, {})]
    torch.manual_seed(0)
    return Pretrainer(cfg, SPECIALS), cfg


def _loop_nce(student: torch.Tensor, target: torch.Tensor, t: float) -> float:
    """The official NormSoftmaxLoss written as plain loops: -mean_i log p(row i -> i) - mean_j log p(col j -> j)."""
    def unit(v: list[float]) -> list[float]:
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    s, g = [unit(v) for v in student.tolist()], [unit(v) for v in target.tolist()]
    n = len(s)
    sim = [[sum(a * b for a, b in zip(s[i], g[j])) / t for j in range(n)] for i in range(n)]
    rows = sum(-(sim[i][i] - math.log(sum(math.exp(sim[i][j]) for j in range(n)))) for i in range(n)) / n
    cols = sum(-(sim[j][j] - math.log(sum(math.exp(sim[i][j]) for i in range(n)))) for j in range(n)) / n
    return rows + cols


# ------------------------------------------------------------------------------------------ the loss
def test_completion_nce_matches_an_explicit_loop():
    g = torch.Generator().manual_seed(3)
    student, target = torch.randn(5, 4, generator=g) * 3, torch.randn(5, 4, generator=g)  # unnormalised on purpose
    for t in (0.03, 0.5):
        loss, logits = completion_nce(student, target, t)
        assert math.isclose(float(loss), _loop_nce(student, target, t), rel_tol=1e-5)
        assert logits.shape == (5, 5)


def test_completion_nce_closed_form_and_same_sample_positives():
    """Orthogonal unit vectors: matched pairs cost 2 log(1 + (B-1) e^{-1/T}); shifting the targets by
    one sample (every positive now orthogonal, one negative identical) costs 2 (1/T + log(1 + (B-1) e^{-1/T}))."""
    B, T = 4, 0.5
    feats = torch.eye(B, 8)
    matched, logits = completion_nce(feats, feats, T)
    assert math.isclose(float(matched), 2 * math.log(1 + (B - 1) * math.exp(-1 / T)), rel_tol=1e-6)
    assert torch.equal(logits.argmax(1), torch.arange(B))  # the positive of row i is sample i
    shifted, _ = completion_nce(feats, feats.roll(1, 0), T)
    assert math.isclose(float(shifted), 2 * (1 / T + math.log(1 + (B - 1) * math.exp(-1 / T))), rel_tol=1e-6)


def test_completion_nce_targets_get_no_gradient_and_students_do():
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 5, generator=g, requires_grad=True)
    target = torch.randn(6, 5, generator=g, requires_grad=True)
    loss, _ = completion_nce(student, target, 0.03)
    loss.backward()
    assert target.grad is None
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_negatives_are_every_sample_of_the_batch():
    """Single process: each row's softmax spans the whole batch (a change in any other sample's
    target moves row 0's loss)."""
    g = torch.Generator().manual_seed(1)
    student, target = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    _, logits = completion_nce(student, target, 0.1)
    base = F.cross_entropy(logits[:1], torch.tensor([0]))
    for k in range(1, 6):
        moved = target.clone()
        moved[k] = torch.randn(5, generator=g)
        _, logits_k = completion_nce(student, moved, 0.1)
        assert not torch.isclose(F.cross_entropy(logits_k[:1], torch.tensor([0])), base), f"sample {k} is no negative"


def test_two_simulated_ranks_average_to_the_one_process_loss(monkeypatch):
    """Each rank scores its rows against the gathered batch with positives at its global offset;
    the mean over ranks (what DDP averages) equals the single-process loss over the global batch."""
    g = torch.Generator().manual_seed(2)
    student, target = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    full, _ = completion_nce(student, target, 0.05)
    n = F.normalize
    per_rank = []
    for r in range(2):
        rows = slice(4 * r, 4 * r + 4)
        monkeypatch.setattr(scl_module, "all_gather_nograd", lambda x: n(target, dim=-1))
        monkeypatch.setattr(scl_module, "all_gather_with_grad", lambda x: n(student, dim=-1))
        monkeypatch.setattr(scl_module, "local_slice", lambda size, rows=rows: rows)
        loss, logits = completion_nce(student[rows], target[rows], 0.05)
        assert logits.shape == (4, 8)
        per_rank.append(float(loss))
    assert math.isclose(sum(per_rank) / 2, float(full), rel_tol=1e-5)


# ------------------------------------------------------------------------------------------ masks
def test_exact_drop_and_mask_counts_and_shared_masks(tmp_path):
    module, cfg = _scl_only(tmp_path)
    model, objective = module.model, module.objectives["scl"]
    batch = _batch(cfg)
    ctx = StepContext(model, batch, step=0, seed=0, specials=SPECIALS)
    calls = {"vision": 0}
    model.vision.register_forward_hook(lambda *_: calls.__setitem__("vision", calls["vision"] + 1))
    objective(ctx)
    n = model.vision.num_patches  # 16 in the tiny test size
    dropped = round(0.8 * n)
    mask = ctx._image_masks["random-0.8"]
    assert (mask.masked.sum(1) == dropped).all()
    assert ctx.masked_image("random-0.8", "drop").tokens.shape[1] == 1 + n - dropped  # [CLS] + visible only

    text = ctx.masked_text(0.4, mask_fraction=1.0, random_fraction=0.0)
    eligible = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, SPECIALS.special_ids)
    for row in range(len(CAPTIONS)):
        k = max(1, round(0.4 * int(eligible[row].sum())))
        assert int(text.masked[row].sum()) == k
        assert (text.input_ids[row][text.masked[row]] == SPECIALS.mask_id).all()  # all [MASK], no 80/10/10
        assert torch.equal(text.input_ids[row][~text.masked[row]], batch.input_ids[row][~text.masked[row]])
        assert not (text.masked[row] & ~eligible[row]).any()

    # a second objective naming the same keys reuses the masks and the dropped-image pass
    assert calls["vision"] == 2  # masked (dropped) image + full image
    before = ctx._image_masks["random-0.8"]
    SCL(cfg.model).train()(ctx)
    assert calls["vision"] == 2 and ctx._image_masks["random-0.8"] is before
    assert ctx.masked_text(0.4, mask_fraction=1.0, random_fraction=0.0) is text


# ------------------------------------------------------------------------------------------ gradients
def test_targets_of_both_passes_get_no_gradient(tmp_path):
    """Pass A's fused text and pass B's fused image are targets only: no gradient may reach them,
    while pass A's fused image and pass B's fused text (the students) get one."""
    module, cfg = _scl_only(tmp_path)
    model = module.model
    outputs = []
    fuse = model.fuse

    def recording_fuse(*args, **kwargs):
        out = fuse(*args, **kwargs)
        for states in (out.text, out.image):
            if states.requires_grad:  # a target computed without a graph cannot take a gradient at all
                states.retain_grad()
        outputs.append(out)
        return out

    model.fuse = recording_fuse
    loss, _ = module(_batch(cfg), step=0)
    loss.backward()
    pass_a, pass_b = outputs
    assert pass_a.text.grad is None, "the text target (pass A) received a gradient"
    assert pass_b.image.grad is None, "the image target (pass B) received a gradient"
    assert not pass_a.text.requires_grad and not pass_b.image.requires_grad, "a target pass kept its graph"
    assert pass_a.image.grad is not None and pass_a.image.grad[:, 0].abs().sum() > 0
    assert pass_a.image.grad[:, 1:].abs().sum() == 0  # only the image [CLS] is scored
    assert pass_b.text.grad is not None and pass_b.text.grad.abs().sum() > 0


def test_gradients_reach_towers_and_fusion(tmp_path):
    module, cfg = _scl_only(tmp_path)
    loss, _ = module(_batch(cfg), step=0)
    loss.backward()
    model = module.model
    assert model.teacher is None  # SCL has no EMA teacher
    for name, p in model.named_parameters():
        if name.startswith(("vision.", "text.", "fusion.")) and p.requires_grad:
            assert p.grad is not None, f"no gradient reached {name}"
            assert torch.isfinite(p.grad).all(), name
    assert not model.vision.mask_token.requires_grad  # dropping, not mask tokens


def test_loss_falls_on_a_fixed_batch(tmp_path):
    module, cfg = _scl_only(tmp_path)
    batch = _batch(cfg)
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    history = []
    for step in range(15):
        opt.zero_grad()
        loss, metrics = module(batch, step=step)
        loss.backward()
        opt.step()
        history.append(metrics)
    first, last = history[0], history[-1]
    assert last["loss_scl"] < 0.7 * first["loss_scl"], f"{first['loss_scl']:.3f} -> {last['loss_scl']:.3f}"
    assert last["scl_img_acc"] > first["scl_img_acc"] or last["scl_img_acc"] == 1.0


# ------------------------------------------------------------------------------------------ recipe
def test_recipe_builds_and_trains_one_step(tmp_path):
    cfg = tiny_config(tmp_path, "scl")
    assert cfg.model.fusion.mode == "two_stream"
    assert [(o.name, o.weight) for o in cfg.objectives] == [("itc", 0.5), ("itm", 1.0), ("mlm", 1.0), ("scl", 1.0)]
    torch.manual_seed(0)
    module = Pretrainer(cfg, SPECIALS)
    assert module.model.teacher is None
    # SCL joins once ITC has aligned encoders trained from nothing (docs/methods.md, "SCL and ITC")
    assert [module.weight("scl", s) for s in (0, 149, 150, 174, 199)] == [0.0, 0.0, 0.02, 0.5, 1.0]
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    loss, metrics = module(_batch(cfg), step=200)
    assert torch.isfinite(loss)
    for key in ("loss_itc", "loss_itm", "loss_mlm", "loss_scl", "scl_img_acc", "scl_txt_acc"):
        assert key in metrics
    loss.backward()
    image_block = module.model.fusion.image_blocks[-1].mlp.fc1.weight  # trained by SCL's image student only
    assert image_block.grad is not None and image_block.grad.abs().sum() > 0
    before = image_block.detach().clone()
    opt.step()
    module.after_step()
    assert not torch.equal(before, image_block)


def test_config_error_when_the_fusion_returns_no_image_states(tmp_path):
    cfg = tiny_config(tmp_path, "scl", "model.fusion.mode=text_to_image")
    with pytest.raises(ConfigError, match="fusion.mode"):
        Pretrainer(cfg, SPECIALS)
    with pytest.raises(ConfigError, match="temperature"):
        build_objective("scl", tiny_config(tmp_path, "scl").model, {"temperature": 0.0})
    with pytest.raises(ConfigError, match="text_mask_fraction"):
        build_objective("scl", tiny_config(tmp_path, "scl").model, {"text_mask_fraction": 0.8, "text_random_fraction": 0.3})
    build_objective("scl", tiny_config(tmp_path, "scl", "model.fusion.mode=merged").model, {})  # merged is fine
