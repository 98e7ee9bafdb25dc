"""SIMLA's objectives: block-masked MIM read through the caption, and pseudo-keyword prediction."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import maskvlp.objectives.simla  # noqa: F401  (registration)
from conftest import tiny_config
from maskvlp.config import ConfigError, ObjectiveConfig
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.masking import multi_hot
from maskvlp.models.fusion import FusionOutput
from maskvlp.data.batch import Batch
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.simla import gather_patches, select_keywords
from test_objectives import CAPTIONS, SPECIALS, TOKENIZER, _batch

BIG_IMAGE = "model.vision.image_size=64"  # an 8 x 8 patch grid: 75/256 of 64 patches = 18.75 -> 19


def _module(tmp_path, *extra, objectives: list[ObjectiveConfig] | None = None):
    cfg = tiny_config(tmp_path, "simla", *extra)
    if objectives is not None:
        cfg.objectives = objectives
    torch.manual_seed(0)
    return cfg, Pretrainer(cfg, SPECIALS)


def _patch_grad(grad: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, 3, H, W) pixel gradient -> (B, N) total |grad| per patch, raster order."""
    b, c, h, w = grad.shape
    g = grad.abs().reshape(b, c, h // patch, patch, w // patch, patch).sum((1, 3, 5))
    return g.flatten(1)


# ------------------------------------------------------------------------------------------ MIM
def test_block_mask_count_is_exact_and_only_masked_patches_are_predicted(tmp_path):
    cfg, module = _module(tmp_path, BIG_IMAGE, objectives=[ObjectiveConfig("simla_mim", 1.0, {"alpha_ramp_steps": 1})])
    obj = module.objectives["simla_mim"]
    batch = _batch(cfg)
    batch.images.requires_grad_(True)
    seen: list[torch.Tensor] = []
    hook = obj.head.register_forward_hook(lambda m, args, out: seen.append(args[0].detach()))
    ctx = StepContext(module.model, batch, 3, 0, SPECIALS)
    out = obj(ctx)
    hook.remove()
    mask = ctx._image_masks[obj.mask_key]
    assert mask.masked.sum(1).tolist() == [19] * 8
    assert mask.masked.shape == (8, 64)
    # the student head saw exactly the fused image states at the masked positions (not the teacher's: that
    # one ran the EMA head copy)
    embedded = module.model.text.embed(batch.input_ids)  # SIMLA's code: the queries read the caption's embeddings
    fused = module.model.fuse(embedded, batch.attention_mask, ctx.masked_image(obj.mask_key, "replace").tokens,
                              image_context=embedded).image
    expected = gather_patches(fused[:, 1:], mask.mask_idx)
    assert seen[0].shape == (8 * 19, cfg.model.text.width)
    assert torch.allclose(seen[0], expected.detach(), atol=1e-5)
    # the student never reads the pixels of a masked patch (they were replaced by the mask token)
    out.loss.backward()
    per_patch = _patch_grad(batch.images.grad, cfg.model.vision.patch_size)
    assert (per_patch[mask.masked] == 0).all()
    assert (per_patch[~mask.masked] > 0).all()
    assert module.model.vision.mask_token.grad is not None and module.model.vision.mask_token.grad.abs().sum() > 0


def test_the_same_step_draws_the_same_block_mask_and_others_differ(tmp_path):
    cfg, module = _module(tmp_path, BIG_IMAGE, objectives=[ObjectiveConfig("simla_mim", 1.0)])
    obj = module.objectives["simla_mim"]
    batch = _batch(cfg)
    masks = [obj.image_mask(StepContext(module.model, batch, step, 0, SPECIALS)).masked for step in (4, 4, 5)]
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], masks[2])


def test_mim_targets_carry_no_gradient_and_the_teacher_gets_none(tmp_path):
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_mim", 1.0, {"alpha_ramp_steps": 1})])
    obj = module.objectives["simla_mim"]
    batch = _batch(cfg)
    ctx = StepContext(module.model, batch, 2, 0, SPECIALS)
    mask = obj.image_mask(ctx)
    codes = obj.targets(ctx.teacher_image.tokens[:, 1:], mask.mask_idx)
    soft = obj.momentum_prediction(ctx, mask)
    assert codes.dtype == torch.long and not soft.requires_grad
    assert torch.allclose(soft.sum(-1), torch.ones(soft.shape[0]))
    obj(ctx).loss.backward()
    teacher = module.model.teacher
    assert teacher is not None and "fusion" in teacher
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is None for p in obj.head_ema.parameters())
    assert obj.head.weight.grad.abs().sum() > 0
    assert module.model.fusion.image_blocks[-1].norm2.weight.grad.abs().sum() > 0
    assert module.model.vision.blocks[0].attn.query.weight.grad.abs().sum() > 0


def test_masked_patches_read_the_captions_embeddings_as_simlas_code_does(tmp_path):
    """text_context=embeddings (the default, SIMLA's code): the image stream reads the embedding layer's output
    of the caption, so the word embeddings get MIM's gradient and the text tower's blocks none; ``tower`` is
    the text stream over the tower's output."""
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_mim", 1.0, {"alpha": 0.0})])
    obj = module.objectives["simla_mim"]
    assert obj.text_context == "embeddings"
    ctx = StepContext(module.model, _batch(cfg), 0, 0, SPECIALS)
    obj.image_mask(ctx)  # the step's mask, which the masked image pass reads
    masked = ctx.masked_image(obj.mask_key, "replace").tokens
    embedded = module.model.text.embed(ctx.batch.input_ids)
    expected = module.model.fuse(torch.zeros_like(embedded), ctx.batch.attention_mask, masked, need_text=False,
                                 image_context=embedded).image
    torch.testing.assert_close(obj.fuse_image(ctx, masked, "student"), expected)
    module.zero_grad()
    obj(ctx).loss.backward()
    text = module.model.text
    assert text.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in text.blocks.parameters())
    assert all(p.grad is None for p in module.model.fusion.blocks.parameters())  # the text stream never ran
    tower_cfg, tower = _module(tmp_path, objectives=[ObjectiveConfig("simla_mim", 1.0, {"alpha": 0.0,
                                                                                        "text_context": "tower"})])
    tower_ctx = StepContext(tower.model, _batch(tower_cfg), 0, 0, SPECIALS)
    tower_obj = tower.objectives["simla_mim"]
    tower_obj(tower_ctx).loss.backward()
    assert tower.model.text.blocks[0].attn.query.weight.grad.abs().sum() > 0


def test_code_targets_use_many_codes_and_the_ema_head_follows_the_momentum_formula(tmp_path):
    cfg, module = _module(tmp_path, BIG_IMAGE, objectives=[ObjectiveConfig("simla_mim", 1.0, {"codebook_size": 64})])
    obj = module.objectives["simla_mim"]
    ctx = StepContext(module.model, _batch(cfg), 0, 0, SPECIALS)
    metrics = obj(ctx).metrics
    assert metrics["mim_code_perplexity"] > 8  # standardised features spread over the codebook
    with torch.no_grad():
        obj.head.weight.add_(torch.randn_like(obj.head.weight))
        obj.head.bias.add_(1.0)
    old = [p.clone() for p in obj.head_ema.parameters()]
    module.after_step()
    m = cfg.model.momentum
    for before, ema, student in zip(old, obj.head_ema.parameters(), obj.head.parameters()):
        assert torch.allclose(ema, m * before + (1 - m) * student, atol=1e-6)
        assert not torch.allclose(ema, before)


def test_feature_targets_and_fusion_without_image_stream(tmp_path):
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_mim", 1.0, {"target": "features", "alpha_ramp_steps": 1})])
    obj = module.objectives["simla_mim"]
    ctx = StepContext(module.model, _batch(cfg), 0, 0, SPECIALS)
    mask = obj.image_mask(ctx)
    target = obj.targets(ctx.teacher_image.tokens[:, 1:], mask.mask_idx)
    assert target.shape == (8 * mask.num_masked, cfg.model.vision.width)
    assert torch.allclose(target.mean(-1), torch.zeros(target.shape[0]), atol=1e-5)  # LayerNorm-ed per token
    out = obj(ctx)
    assert torch.isfinite(out.loss) and "mim_cos" in out.metrics
    with pytest.raises(ConfigError, match="fusion.mode"):  # refused when the recipe is built, before any step
        _module(tmp_path, "model.fusion.mode=text_to_image", objectives=[ObjectiveConfig("simla_mim", 1.0)])


# ------------------------------------------------------------------------------------------ PSL
def _caption_with_padding():
    tok = TOKENIZER.encode(["red big circle left of blue small square"], 14)
    pad = torch.nn.functional.pad  # three [PAD] tokens at the end, as in a batch with longer captions
    return pad(tok.input_ids, (0, 3), value=SPECIALS.pad_id), pad(tok.attention_mask, (0, 3), value=0)


def test_keywords_are_the_top_attended_real_tokens_never_special_or_padding():
    ids, att = _caption_with_padding()
    L = ids.shape[1]
    n_real = int(att.sum())
    row = torch.full((L,), 0.001)
    row[0], row[n_real - 1], row[-1] = 0.9, 0.8, 0.7  # [CLS], [SEP] and a [PAD] get the most attention
    order = [3, 6, 1, 7, 2, 5]  # then these real words, most attended first
    for rank, pos in enumerate(order):
        row[pos] = 0.5 - 0.05 * rank
    att_map = torch.zeros(1, L, L)
    att_map[0, 0] = row
    fused = FusionOutput(torch.zeros(1, L, 4), None, att_map, None)
    chosen = select_keywords(ids, att, SPECIALS.special_ids, fused, k=5)
    assert sorted(chosen[0].nonzero().flatten().tolist()) == sorted(order[:5])
    assert not torch.isin(ids[chosen], SPECIALS.special_ids).any()
    # per-head rows, when a fusion provides them, use the official code's votes: position 4 is in every
    # head's top 2, position 2 in two heads', position 6 in one; the mean row alone would favour 7
    heads = torch.full((1, 3, L), 0.01)
    heads[0, :, 0] = 0.9  # [CLS] attends to itself: never a keyword
    heads[0, 0, [4, 2]] = torch.tensor([0.3, 0.2])
    heads[0, 1, [4, 2]] = torch.tensor([0.3, 0.2])
    heads[0, 2, [7, 4, 6]] = torch.tensor([0.6, 0.3, 0.05])
    voted = select_keywords(ids, att, SPECIALS.special_ids, SimpleNamespace(text_cls_attention_heads=heads), k=2, per_head=2)
    assert voted[0].nonzero().flatten().tolist() == [2, 4]


def test_multi_hot_targets_count_each_selected_id_once_and_only_selected_ids(tmp_path):
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_psl", 1.0)])
    obj = module.objectives["simla_psl"]
    ids = torch.tensor([[101, 2417, 4418, 2417, 102, 0], [101, 2630, 102, 0, 0, 0]])
    att = (ids != 0).long()
    row = torch.tensor([0.5, 0.2, 0.1, 0.15, 0.05, 0.0])
    attention = torch.zeros(2, 6, 6)
    attention[:, 0] = row
    batch = Batch(torch.zeros(2, 3, 32, 32), ids, att, torch.arange(2), 2)
    ctx = StepContext(module.model, batch, 0, 0, SPECIALS)
    ctx.__dict__["teacher_fused"] = FusionOutput(torch.zeros(2, 6, 4), None, attention, None)
    selected, hard = obj.hard_targets(ctx)
    assert selected.tolist() == [[False, True, True, True, False, False], [False, True, False, False, False, False]]
    assert hard.shape == (2, cfg.model.text.vocab_size)
    assert hard[0].nonzero().flatten().tolist() == [2417, 4418]  # "red" twice counts once
    assert hard[1].nonzero().flatten().tolist() == [2630]
    assert hard.sum().item() == 3 and set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard, multi_hot(ids, selected, cfg.model.text.vocab_size))


def test_psl_loss_matches_eq8_and_trains_only_the_image_side(tmp_path):
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_psl", 1.0, {"alpha_ramp_steps": 1})])
    obj = module.objectives["simla_psl"]
    with torch.no_grad():
        obj.concept_head.weight.add_(0.1 * torch.randn_like(obj.concept_head.weight))  # student != EMA copy
    batch = _batch(cfg)
    ctx = StepContext(module.model, batch, 0, 0, SPECIALS)
    out = obj(ctx)
    _, hard = obj.hard_targets(ctx)
    with torch.no_grad():
        logits = obj.concept_head(ctx.image.embed)
        soft = torch.sigmoid(obj.concept_head_ema(ctx.teacher_image.embed))
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        by_hand = 0.6 * bce(logits, hard) + 0.4 * bce(logits, soft)  # each a mean over B x V
    assert torch.allclose(out.loss, by_hand, atol=1e-6)
    out.loss.backward()
    model = module.model
    assert obj.concept_head.weight.grad.abs().sum() > 0
    assert model.vision_proj.linear.weight.grad.abs().sum() > 0 and model.vision.pos_embed.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.fusion.parameters())  # PSL reads the unimodal image only
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is None for p in obj.concept_head_ema.parameters())
    old = [p.clone() for p in obj.concept_head_ema.parameters()]
    module.after_step()
    m = cfg.model.momentum
    for before, ema, student in zip(old, obj.concept_head_ema.parameters(), obj.concept_head.parameters()):
        assert torch.allclose(ema, m * before + (1 - m) * student, atol=1e-6)


# ------------------------------------------------------------------------------------------ training
def _train_fixed_batch(module, batch, steps: int = 15) -> list[float]:
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss, _ = module(batch, step=7)  # the same step: the same mask every time
        opt.zero_grad()
        loss.backward()
        opt.step()
        module.after_step()
        losses.append(float(loss.detach()))
    return losses


def test_mim_loss_falls_on_a_fixed_batch(tmp_path):
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_mim", 1.0, {"codebook_size": 256, "alpha_ramp_steps": 1})])
    losses = _train_fixed_batch(module, _batch(cfg))
    assert losses[0] == pytest.approx(torch.log(torch.tensor(256.0)).item(), abs=0.1)  # near-uniform start
    assert losses[-1] < losses[0] - 0.25, losses  # the teacher moves too, so the labels drift a little


def test_psl_loss_falls_on_a_fixed_batch_and_keywords_rise(tmp_path):
    cfg, module = _module(tmp_path, objectives=[ObjectiveConfig("simla_psl", 1.0, {"alpha_ramp_steps": 1})])
    obj = module.objectives["simla_psl"]
    batch = _batch(cfg)

    def margin() -> float:  # mean logit of each caption's keywords minus that of every other word
        ctx = StepContext(module.model, batch, 7, 0, SPECIALS)
        with torch.no_grad():
            _, hard = obj.hard_targets(ctx)
            logits = obj.concept_head(ctx.image.embed)
        return float((logits * hard).sum() / hard.sum() - (logits * (1 - hard)).sum() / (1 - hard).sum())

    before = margin()
    losses = _train_fixed_batch(module, batch)
    # the bias starts at the keyword prior k/V, so the loss starts small (eq. 8 averages over B x V) and,
    # at lr 1e-3, falls by a fraction of a percent per step, but on every step
    assert losses[0] == pytest.approx(0.0014, rel=0.2)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert margin() > before + 0.05


def test_recipe_builds_and_trains_one_step(tmp_path):
    cfg, module = _module(tmp_path)
    assert cfg.model.fusion.mode == "two_stream"
    assert [o.name for o in cfg.objectives] == ["itc", "itm", "mlm", "simla_mim", "simla_psl"]
    assert all(o.weight == 1.0 for o in cfg.objectives)
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    loss, metrics = module(_batch(cfg), step=75)  # MLM joins at 75, as in albef.yaml (simla inherits it)
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"trainable parameters without a gradient: {missing}"
    opt.step()
    module.after_step()
    assert torch.isfinite(loss)
    for key in ("loss_itc", "loss_itm", "loss_mlm", "loss_simla_mim", "loss_simla_psl", "mim_acc", "psl_precision"):
        assert key in metrics
