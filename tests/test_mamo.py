"""MAMO: joint mask ratios, predicted positions, target/teacher gradients, the MAE-style re-inserted
mask embedding, a hand-checked regression example, loss falling on a fixed batch, the recipe."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import tiny_config
from maskvlp.config import ConfigError
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.objectives import mamo as mamo_mod  # noqa: F401  (registration)
from maskvlp.data.batch import Batch
from maskvlp.objectives.context import StepContext
from maskvlp.objectives.mamo import (normalise_targets, regression_per_item, reinsert_mask_embedding)
from test_objectives import CAPTIONS, SPECIALS, TOKENIZER



def _only_mamo(tmp_path, params: str = "{}", mode: str = "cross") -> str:
    path = tmp_path / "mamo_only.yaml"
    # patch stem: the objective is under test, on noise images (the regressions were calibrated with it)
    path.write_text(f"model: {{vision: {{stem: patch}}, fusion: {{mode: {mode}}}}}\nobjectives:\n  - name: mamo\n    weight: 1.0\n"
                    f"    params: {params}\n")
    return str(path)


def _setup(tmp_path, recipe: str, *extra: str):
    torch.manual_seed(0)
    cfg = tiny_config(tmp_path, recipe, *extra)
    module = Pretrainer(cfg, SPECIALS)
    tok = TOKENIZER.encode(CAPTIONS, cfg.model.text.max_len)
    size = cfg.model.vision.image_size
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(len(CAPTIONS), 3, size, size, generator=g), tok.input_ids, tok.attention_mask,
                  torch.arange(len(CAPTIONS)), len(CAPTIONS))
    return module, batch


def _ctx(module, batch, step: int = 0) -> StepContext:
    return StepContext(module.model, batch, step, 0, SPECIALS)


# ------------------------------------------------------------------------------------------ masks
def test_exact_ratios_and_predictions_only_at_masked_positions(tmp_path):
    module, batch = _setup(tmp_path, _only_mamo(tmp_path))
    obj = module.objectives["mamo"]
    ctx = _ctx(module, batch)
    out = obj.run(ctx)
    n = module.model.vision.num_patches
    b = batch.input_ids.shape[0]
    # image: exactly 75% of the patches in every row
    assert out.image_mask.masked.sum(1).tolist() == [round(0.75 * n)] * b
    assert out.mim_pred.shape[0] == b * round(0.75 * n)
    # text: exactly 25% (at least 1) of the real, non-special tokens of every row, only those
    eligible = batch.attention_mask.bool() & ~torch.isin(batch.input_ids, SPECIALS.special_ids)
    for row in range(b):
        k = max(1, round(0.25 * int(eligible[row].sum())))
        assert int(out.text_mask.masked[row].sum()) == k
    assert not (out.text_mask.masked & ~eligible).any()
    n_text = int(out.text_mask.masked.sum())
    assert out.mlm_logits.shape[0] == n_text
    assert out.mrm_pred[0].shape[0] == n_text and out.mrm_pred[1].shape[0] == b * round(0.75 * n)
    # the same joint mask is what the context hands to any other objective
    assert ctx.image_mask(obj.image_key, lambda: None) is out.image_mask
    assert ctx.masked_text(0.25) is out.text_mask

    # predictions read the fused states at masked positions only: the loss gradient w.r.t. the
    # fused states is zero at every visible patch, at [CLS] and at every unmasked text token
    captured = {}
    run = obj.run
    obj.run = lambda c: captured.setdefault("out", run(c))  # keep the pass the real forward makes
    loss = obj(_ctx(module, batch)).loss
    out = captured["out"]
    out.fused.text.retain_grad()
    out.fused.image.retain_grad()
    loss.backward()
    g_img = out.fused.image.grad.abs().sum(-1)  # (B, 1 + N)
    g_txt = out.fused.text.grad.abs().sum(-1)  # (B, Lt)
    assert (g_img[:, 0] == 0).all()
    assert (g_img[:, 1:][~out.image_mask.masked] == 0).all()
    assert (g_img[:, 1:][out.image_mask.masked] > 0).all()
    assert (g_txt[~out.text_mask.masked] == 0).all()
    assert (g_txt[out.text_mask.masked] > 0).all()


# ------------------------------------------------------------------------------------------ re-insertion
def test_reinserted_mask_embedding_hand_case():
    d = 2
    cls, v1, v3 = torch.tensor([9., 9.]), torch.tensor([1., 1.]), torch.tensor([3., 3.])
    tokens = torch.stack([cls, v1, v3])[None]  # [CLS] + visible patches 1 and 3
    keep_idx, mask_idx = torch.tensor([[1, 3]]), torch.tensor([[0, 2]])
    m = torch.tensor([[[0.5, -0.5]]])
    pos = torch.tensor([[[10., 0.], [20., 0.], [30., 0.], [40., 0.]]])
    got = reinsert_mask_embedding(tokens, keep_idx, mask_idx, m, pos)
    want = torch.tensor([[[9., 9.], [10.5, -0.5], [1., 1.], [30.5, -0.5], [3., 3.]]])
    assert got.shape == (1, 5, d)
    assert torch.equal(got, want)


def test_fusion_input_has_mask_embedding_plus_position_at_masked_patches(tmp_path):
    module, batch = _setup(tmp_path, _only_mamo(tmp_path))
    obj = module.objectives["mamo"]
    ctx = _ctx(module, batch)
    out = obj.run(ctx)
    visible = ctx.masked_image(obj.image_key, "drop").tokens
    pos = module.model.vision.pos_embed[0, 1:]
    for row in range(batch.input_ids.shape[0]):
        midx, kidx = out.image_mask.mask_idx[row], out.image_mask.keep_idx[row]
        assert torch.equal(out.image_in[row, 1 + midx], obj.mask_embed[0].expand(len(midx), -1) + pos[midx])
        assert torch.equal(out.image_in[row, 1 + kidx], visible[row, 1:])
        assert torch.equal(out.image_in[row, 0], visible[row, 0])
    # the ViT saw only the visible quarter
    assert visible.shape[1] == 1 + module.model.vision.num_patches - out.image_mask.num_masked


# ------------------------------------------------------------------------------------------ gradients
@pytest.mark.parametrize("masking,mode", [("drop", "two_stream"), ("replace", "cross"), ("drop", "merged")])
def test_targets_and_teacher_get_no_gradient_the_student_does(tmp_path, masking, mode):
    module, batch = _setup(tmp_path, _only_mamo(tmp_path, f"{{image_masking: {masking}}}", mode))
    obj = module.objectives["mamo"]
    ctx = _ctx(module, batch)
    out = obj.run(ctx)
    assert not out.mim_target.requires_grad and not any(t.requires_grad for t in out.mrm_target)
    assert out.mim_pred.requires_grad and all(p.requires_grad for p in out.mrm_pred)
    loss, metrics = module(batch, step=0)
    loss.backward()
    for name, p in module.model.teacher.named_parameters():
        assert not p.requires_grad and p.grad is None, f"teacher parameter {name} got a gradient"
    # ITC projections and temperature are not mamo's; the ViT mask token only in replace mode
    not_mamo = ("model.vision_proj.", "model.text_proj.", "model.temp")
    teacher_ids = {id(p) for p in module.model.teacher.parameters()}
    for name, p in module.named_parameters():
        if id(p) in teacher_ids or name.startswith(not_mamo):
            continue
        if name == "model.vision.mask_token":
            assert p.requires_grad == (masking == "replace"), name
            if masking == "drop":
                continue
        assert p.requires_grad, name
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no gradient reached {name}"
    vision, fusion = module.model.vision, module.model.fusion
    nonzero = {
        "vision patch embedding": next(vision.patch_embed.parameters()),
        "vision block": vision.blocks[0].attn.query.weight,
        "text tower": module.model.text.blocks[0].attn.query.weight,
        "fusion text stream": fusion.blocks[-1].mlp.fc1.weight,
        "MIM head": obj.mim_head.mlp[0].weight,
        "MRM text head": obj.mrm_head.mlp[0].weight,
        "MRM image head": obj.mrm_image_head.mlp[0].weight,
        "MLM head": module.model.mlm_head.dense.weight,
    }
    if fusion.image_proj is not None:  # cross, merged: image tokens projected to the text width
        nonzero["fusion image projection"] = fusion.image_proj.weight
    if mode in ("cross", "two_stream"):
        nonzero["fusion image stream"] = fusion.image_blocks[-1].mlp.fc1.weight
    if masking == "drop":
        nonzero["mask embedding"] = obj.mask_embed
        nonzero["ViT position embedding"] = module.model.vision.pos_embed
    else:
        nonzero["ViT mask token"] = module.model.vision.mask_token
    for what, p in nonzero.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reached the {what}"
    for key in ("mamo_mlm", "mamo_mim", "mamo_mrm", "mamo_mim_pred_std", "mamo_mim_target_std",
                "mamo_mrm_pred_std", "mamo_mrm_target_std"):
        assert key in metrics and math.isfinite(metrics[key]), key
    assert metrics["mamo_mim_target_std"] > 0.1 and metrics["mamo_mrm_target_std"] > 0.1


# ------------------------------------------------------------------------------------------ formulas
def test_normalised_regression_hand_example():
    target = torch.tensor([[0.0, 4.0, 8.0], [1.0, 1.0, 3.0]])
    pred = torch.zeros(2, 3)
    t = normalise_targets(target)
    # row 0: mean 4, var 32/3 -> (-sqrt(1.5), 0, sqrt(1.5)); row 1: mean 5/3, var 8/9 -> (-1/sqrt2, -1/sqrt2, sqrt2)
    s = math.sqrt(1.5)
    assert torch.allclose(t, torch.tensor([[-s, 0.0, s], [-2 ** -0.5, -2 ** -0.5, 2 ** 0.5]]), atol=1e-5)
    assert not t.requires_grad
    mse = regression_per_item(pred, t, "mse")
    assert torch.allclose(mse, torch.tensor([1.0, 1.0]), atol=1e-5)  # unit variance per row
    sl1 = regression_per_item(pred, t, "smooth_l1", beta=1.0)
    row0 = 2 * (s - 0.5) / 3  # |d| = sqrt(1.5) > 1 on two entries: |d| - beta/2
    row1 = (2 * 0.5 * 0.5 + (2 ** 0.5 - 0.5)) / 3  # |d| = 1/sqrt2 < 1: d^2 / (2 beta); sqrt2 > 1
    assert torch.allclose(sl1, torch.tensor([row0, row1]), atol=1e-5)
    # the loss is invariant to the target's scale and offset (layer norm, no affine)
    assert torch.allclose(normalise_targets(3 * target + 7), t, atol=1e-5)


def test_text_to_image_fusion_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="text_to_image"):
        _setup(tmp_path, _only_mamo(tmp_path, mode="text_to_image"))
    with pytest.raises(ConfigError, match="image_masking"):
        _setup(tmp_path, _only_mamo(tmp_path, "{image_masking: blank}"))


def test_required_parts_follow_the_weights(tmp_path):
    from maskvlp.config import MAMOParams
    from maskvlp.models.vlp import FUSION, MASK_TOKEN, MLM, TEACHER, TEACHER_FUSION
    from maskvlp.objectives.mamo import MAMO
    cfg = tiny_config(tmp_path, _only_mamo(tmp_path)).model
    assert MAMO(cfg).reads().parts == {FUSION, MLM, TEACHER, TEACHER_FUSION}
    assert MAMO(cfg, MAMOParams(image_masking="replace")).reads().parts == {FUSION, MLM, TEACHER, TEACHER_FUSION, MASK_TOKEN}
    only_mim = MAMO(cfg, MAMOParams(mlm_weight=0.0, mrm_weight=0.0))
    assert only_mim.reads().parts == {FUSION, TEACHER} and only_mim.mrm_head is None


# ------------------------------------------------------------------------------------------ training
def test_loss_falls_on_a_fixed_batch(tmp_path):
    """One batch and one joint mask (the step is held at 0) for 30 AdamW steps at lr 1e-3, the EMA
    teacher moving after each: every part falls. The regressions start at 1.0 (a near-zero
    prediction against unit-variance targets) and fall slowly from a tiny random predictor."""
    module, batch = _setup(tmp_path, _only_mamo(tmp_path))
    opt = torch.optim.AdamW(module.trainable_parameters(), lr=1e-3)
    history = []
    for _ in range(30):
        opt.zero_grad()
        loss, metrics = module(batch, step=0)
        loss.backward()
        opt.step()
        module.after_step()
        history.append(metrics)
    first, last = history[0], history[-1]
    for key, factor in (("loss_mamo", 0.9), ("mamo_mlm", 0.9), ("mamo_mim", 0.97), ("mamo_mrm", 0.97)):
        assert last[key] < factor * first[key], f"{key} did not fall: {first[key]:.3f} -> {last[key]:.3f}"
    for key in ("mamo_mim_pred_std", "mamo_mrm_pred_std"):  # predictions spread out, not collapse
        assert last[key] > 5 * first[key], f"{key}: {first[key]:.3f} -> {last[key]:.3f}"


def test_recipe_builds_and_runs_one_step(tmp_path):
    module, batch = _setup(tmp_path, "mamo")
    assert module.model.fusion.mode == "two_stream"
    assert set(module.objectives) == {"itc", "itm", "mamo"}
    loss, metrics = module(batch, step=75)  # mamo joins when albef's MLM would (mamo.yaml)
    loss.backward()
    assert math.isfinite(float(loss.detach()))
    for key in ("loss_itc", "loss_itm", "loss_mamo"):
        assert math.isfinite(metrics[key]), key
