"""End to end through the CLI and the Python API: user data, evaluation, clear errors, scoring."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import TINY, tiny_config
from maskvlp.cli import app
from maskvlp.data.synthetic import SyntheticWorld, export_albef_json
from maskvlp.config import WorldConfig

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One tiny albef run (3 steps) shared by the API and evaluate tests."""
    out = tmp_path_factory.mktemp("run") / "albef"
    result = _invoke("pretrain", "--recipe", "albef", "--no-evaluate", *TINY, "train.max_steps=3", f"output_dir={out}")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("args, expected", [
    (["pretrain", "--recipe", "albeff"], "unknown recipe 'albeff'; valid recipes: albef, albef_paper, clip"),
    (["pretrain", "train.lrr=1"], "unknown config key 'train.lrr'; valid keys under train:"),
    (["pretrain", "train.lr=fast"], "bad value for 'train.lr'"),
    (["pretrain", "model.fusion.mode=sideways"], "valid choices: text_to_image, cross, merged"),
    (["pretrain", "train.precision=fp8"], "valid choices: auto, fp32, bf16"),
    (["pretrain", "data.source=json"], "data.source=json needs data.train_json"),
    (["evaluate", "retrieval", "--checkpoint", "/no/such/run"], "is neither a checkpoint folder"),
])
def test_user_mistakes_give_one_line_and_status_2(args, expected):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1, result.output


def test_recipes_command_lists_the_baselines():
    result = _invoke("recipes")
    assert "albef" in result.output and "itc×1 + itm×1 + mlm×1" in result.output and "clip" in result.output


def test_pretrain_and_evaluate_on_users_albef_json_with_broken_images(tmp_path):
    world = SyntheticWorld(WorldConfig(seed=3, image_size=32, train_scenes=40, test_scenes=10))
    train_json, _ = export_albef_json(world, "train", tmp_path / "train")
    _, test_json = export_albef_json(world, "test", tmp_path / "test")
    entries = json.loads(train_json.read_text())
    (train_json.parent / entries[0]["image"]).unlink()  # a missing image
    (train_json.parent / entries[7]["image"]).write_bytes(b"not a png")  # a corrupt one
    for entry in entries[::3]:  # valid JSON, not valid Unicode: a lone UTF-16 surrogate
        entry["caption"] += " \ud83d"
    train_json.write_text(json.dumps(entries))
    test_entries = json.loads(test_json.read_text())
    (test_json.parent / test_entries[1]["image"]).unlink()
    test_entries[2]["caption"].append("a \udc00 caption")
    test_json.write_text(json.dumps(test_entries))
    out = tmp_path / "run"
    result = _invoke("pretrain", "--recipe", "albef", *TINY, "train.max_steps=4", f"output_dir={out}",
                     "data.source=json", f"data.train_json=[{train_json}]", f"data.image_root={train_json.parent}",
                     "data.max_bad_fraction=0.5", f"eval.test_json={test_json}", f"eval.image_root={test_json.parent}")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "eval" / "results.json").read_text())
    assert any("itm" in row for row in report["results"])
    assert any("1 unreadable" in note for note in report["notes"])
    log = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 4


def test_evaluate_a_checkpoint_writes_results(trained_run, tmp_path):
    out = tmp_path / "eval"
    result = _invoke("evaluate", "retrieval", "--checkpoint", str(trained_run), "--output", str(out), "eval.itm_k=2")
    assert result.exit_code == 0, result.output
    results = json.loads((out / "results.json").read_text())["results"]
    rows = list(results)
    assert rows == ["checkpoint · itc", "checkpoint · itm k=2", "checkpoint · mlm"]  # mlm: binding by the MLM head
    for row in rows:
        retrieval = () if row.endswith("mlm") else ("img_r1", "txt_r1", "sem_img_r1", "ceiling_img_r1")
        for key in (*retrieval, "binding_colour", "binding_relation"):
            assert 0 <= results[row][key] <= 100
    assert (out / "results.md").read_text().count("|") > 10


def test_api_scores_match_embeddings_and_do_not_depend_on_batching(trained_run):
    import maskvlp

    m = maskvlp.load(trained_run)
    world = SyntheticWorld(WorldConfig(seed=0, image_size=32, test_scenes=4))
    scenes = world.scenes("test")[:4]
    images = [world.render(s) for s in scenes]
    texts = [world.captions(s)[0].text for s in scenes]
    itc = m.score(images, texts, method="itc")
    by_embedding = (m.embed_images(images) * m.embed_texts(texts)).sum(-1)
    assert torch.allclose(itc, by_embedding, atol=1e-5)
    itm_batched = m.score(images, texts, method="itm", batch_size=4)
    itm_single = m.score(images, texts, method="itm", batch_size=1)
    assert torch.allclose(itm_batched, itm_single, atol=1e-5)
    with pytest.raises(ValueError, match="aligned pairs"):
        m.score(images, texts[:2])


def test_api_refuses_itm_for_a_dual_encoder(tmp_path):
    from maskvlp.engine.trainer import train
    import maskvlp

    cfg = tiny_config(tmp_path, "clip", "train.max_steps=1")
    train(cfg, show_progress=False)
    m = maskvlp.load(cfg.output_dir)
    with pytest.raises(ValueError, match="no fusion encoder"):
        m.score([torch.zeros(3, 32, 32)], ["a red circle"], method="itm")


def test_api_empty_inputs_give_empty_results(trained_run):
    import maskvlp

    m = maskvlp.load(trained_run)
    images, texts = m.embed_images([]), m.embed_texts([])
    assert images.shape == texts.shape == (0, m.config.model.embed_dim) == (0, 16)
    assert images.dtype == texts.dtype == m.embed_texts(["a red circle"]).dtype
    for method in ("itc", "itm"):
        scores = m.score([], [], method=method)
        assert scores.shape == (0,) and scores.dtype == torch.float32


def test_api_names_the_bad_argument(trained_run, tmp_path):
    import numpy as np
    import maskvlp

    m = maskvlp.load(trained_run)
    img = torch.zeros(3, 32, 32)
    cases = [
        (lambda: m.score([img], [None]), r"texts\[0\] must be a str, got NoneType"),
        (lambda: m.embed_texts("a red circle"), "texts must be a list of strings, not a single str"),
        (lambda: m.embed_texts(["a", 3]), r"texts\[1\] must be a str, got int"),
        (lambda: m.embed_images([img, 7]), r"images\[1\] must be a path, a PIL image,.* got int"),
        (lambda: m.embed_images([np.zeros((32, 32), np.uint8)]), r"images\[0\].*HxWx3 uint8.*\(32, 32\)"),
        (lambda: m.embed_images([np.zeros((32, 32, 3), np.float32)]), r"images\[0\].*HxWx3 uint8.*float32"),
        (lambda: m.score([img, torch.zeros(32, 32, 3)], ["a", "b"]), r"images\[1\].*\[3, 32, 32\].*\[32, 32, 3\]"),
        (lambda: m.embed_images(str(tmp_path / "x.png")), "images must be a list of images, not a single str"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
    missing = tmp_path / "no_such.png"
    with pytest.raises(FileNotFoundError, match=r"images\[0\].*no_such\.png") as err:
        m.embed_images([missing])
    assert len(str(err.value).splitlines()) == 1
    batch = np.zeros((2, 32, 32, 3), np.uint8)  # a batch array still works, as before
    assert m.embed_images(batch).shape == (2, 16)
