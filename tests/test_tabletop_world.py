"""The tabletop world: independent of the embedded world, deterministic, true by its own truth
function, readable by the project's readers."""
from __future__ import annotations

import ast
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from maskvlp.data.tabletop import (COLOURS, PATTERNS, RELATIONS, SHAPES, TabletopWorld, converse, is_true,
                                   relation_holds, render_scene, write_world)
from maskvlp.data.tabletop.layout import Item, Scene

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "maskvlp" / "data" / "tabletop"
SMALL = dict(seed=0, image_size=32, train_scenes=40, test_scenes=16, heldout_pairs=3)
FILES = ("train.json", "test.json", "heldout.json", "probes_test.json", "probes_heldout.json", "probes.json",
         "world.json")


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tabletop")
    write_world(out, **SMALL)
    return out


def _load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def _all_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path, world_dir):
    again = tmp_path / "again"
    write_world(again, **SMALL)
    assert _all_bytes(again) == _all_bytes(world_dir)
    other = tmp_path / "other"
    write_world(other, **{**SMALL, "seed": 1})
    a, b = _all_bytes(world_dir), _all_bytes(other)
    assert a.keys() == b.keys()
    assert a["train.json"] != b["train.json"]
    assert sum(a[k] != b[k] for k in a if k.startswith("images/")) > 0.9 * sum(k.startswith("images/") for k in a)
    assert not list(world_dir.rglob("*.tmp"))


def test_no_module_imports_the_embedded_world():
    sources = sorted(PACKAGE.glob("*.py"))
    assert len(sources) >= 8
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                assert "synthetic" not in name, f"{path.name} imports {name}"
                if name.startswith("maskvlp"):
                    assert name.startswith(("maskvlp.data.tabletop", "maskvlp.files")), f"{path.name} imports {name}"


def test_files_have_the_layouts(world_dir):
    train, test, heldout = (_load(world_dir / f) for f in ("train.json", "test.json", "heldout.json"))
    assert len(train) == 5 * SMALL["train_scenes"]
    assert all(isinstance(e["caption"], str) and e["image"].startswith("images/train_") for e in train)
    for entries, split in ((test, "test"), (heldout, "heldout")):
        assert len(entries) == SMALL["test_scenes"]
        for e in entries:
            assert e["image"].startswith(f"images/{split}_") and (world_dir / e["image"]).is_file()
            assert len(e["caption"]) == 5 == len(set(e["caption"]))
    for name in ("probes_test.json", "probes_heldout.json"):
        probes = _load(world_dir / name)
        assert probes and {p["kind"] for p in probes} == {"colour_swap", "relation"}
        assert all(set(p) == {"image", "true", "false", "kind", "heldout"} and p["true"] != p["false"] for p in probes)
    info = _load(world_dir / "world.json")
    assert info["seed"] == 0 and len(info["heldout_pairs"]) == 3 and info["scenes"]["train"] == SMALL["train_scenes"]


def test_captions_and_probes_are_true_by_the_truth_function(world_dir):
    world = TabletopWorld(0, 32, 3)
    for split, count in (("train", 40), ("test", 16), ("heldout", 16)):
        for i in range(count):
            scene = world.scene(split, i)
            for caption in world.captions(scene):
                assert is_true(caption.claim, scene), caption.text
            for probe in world.probes(scene):
                assert is_true(probe.true_claim, scene) and not is_true(probe.false_claim, scene), probe
    # the written files are exactly what the world says
    test = _load(world_dir / "test.json")
    assert [e["caption"] for e in test] == [[c.text for c in world.captions(world.scene("test", i))] for i in range(16)]
    probes = [(p["image"], p["true"], p["false"]) for p in _load(world_dir / "probes_heldout.json")]
    assert probes == [(f"images/heldout_{i:06d}.png", p.true, p.false)
                      for i in range(16) for p in world.probes(world.scene("heldout", i))]


def test_probes_flag_heldout_pairs(world_dir):
    world = TabletopWorld(0, 32, 3)
    flags = [p["heldout"] for p in _load(world_dir / "probes_heldout.json")]
    assert sum(flags) > len(flags) / 3  # every heldout scene holds a held-out pair, so many probes name one
    assert flags == [bool(p.true_claim.named_pairs() & set(world.heldout_pairs))
                     for i in range(16) for p in world.probes(world.scene("heldout", i))]
    assert not any(p["heldout"] for p in _load(world_dir / "probes_test.json"))
    both = _load(world_dir / "probes.json")
    assert both == _load(world_dir / "probes_test.json") + _load(world_dir / "probes_heldout.json")
    for i in range(16):
        for probe in world.probes(world.scene("test", i)):
            # test scenes hold no held-out pair, so only a swapped (false) text can name one
            assert not probe.true_claim.named_pairs() & set(world.heldout_pairs)


def test_heldout_pairs_stay_out_of_train(world_dir):
    world = TabletopWorld(0, 32, 3)
    pairs = set(world.heldout_pairs)
    assert len(pairs) == 3 and len({c for c, _ in pairs}) == 3 and len({s for _, s in pairs}) == 3
    assert [list(p) for p in world.heldout_pairs] == _load(world_dir / "world.json")["heldout_pairs"]
    for i in range(200):  # scene graphs are cheap: look at more than were written
        scene = world.scene("train", i)
        assert not {(o.colour, o.shape) for o in scene.items} & pairs
        assert not {(o.colour, o.shape) for o in world.scene("test", i).items} & pairs
        assert {(o.colour, o.shape) for o in world.scene("heldout", i).items} & pairs
    for i in range(40):
        for caption in world.captions(world.scene("train", i)):
            assert not caption.claim.named_pairs() & pairs
    text = " | ".join(e["caption"] for e in _load(world_dir / "train.json"))
    for colour, shape in pairs:  # "teal hexagon", "teal striped hexagon", "hexagon in teal"
        assert not re.search(rf"\b{colour} (\w+ )?{shape}\b|\b{shape} in {colour}\b", text)


def test_json_files_load_through_the_project_readers(world_dir):
    from maskvlp.data.datasets import AlbefJsonDataset
    from maskvlp.data.retrieval_sets import json_retrieval_set

    for split in ("test", "heldout"):
        probes = _load(world_dir / f"probes_{split}.json")
        rs = json_retrieval_set(world_dir / f"{split}.json", world_dir, 32,
                                probes_file=world_dir / f"probes_{split}.json")
        assert rs.num_images == 16 and len(rs.texts) == 80 and rs.skipped_images == 0
        assert tuple(rs.image(0).shape) == (3, 32, 32)
        assert rs.probes is not None and len(rs.probes) == len(probes) and rs.skipped_probes == 0
        assert sum(kind.endswith("_heldout") for _, kind, _, _ in rs.probes) == sum(p["heldout"] for p in probes)
    ds = AlbefJsonDataset([world_dir / "train.json"], world_dir, 32, crop_scale_min=0.5, hflip=False, seed=0)
    assert len(ds) == 200 and ds.num_images == 40 and ds.skipped_empty == 0
    item = ds[0]
    assert item is not None and tuple(item["image"].shape) == (3, 32, 32) and isinstance(item["text"], str)


def _lone(**attrs) -> Scene:
    item = Item(**{"shape": "hexagon", "colour": "teal", "size": "big", "pattern": "plain", "x": 0.5, "y": 0.5,
                   "r": 0.3, **attrs})
    return Scene("test", 0, (item,), (230, 228, 220), "paper", 1.0, (0.0, 0.0), 5)


def _inside(image: np.ndarray) -> np.ndarray:
    h = image.shape[0]
    return image[h // 2 - 5: h // 2 + 5, h // 2 - 5: h // 2 + 5].reshape(-1, 3).astype(float)


def test_colours_render_apart_and_patterns_change_pixels():
    means = {c: _inside(render_scene(_lone(colour=c), 48)).mean(0) for c in COLOURS}
    names = list(means)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert np.abs(means[a] - means[b]).sum() > 40, (a, b)
    for colour in COLOURS:
        plain = render_scene(_lone(colour=colour), 48)
        for pattern in PATTERNS[1:]:
            patterned = render_scene(_lone(colour=colour, pattern=pattern), 48)
            inside_plain, inside_pat = _inside(plain), _inside(patterned)
            assert np.abs(inside_plain - inside_pat).mean() > 15, (colour, pattern)
            assert inside_pat.std(0).sum() > inside_plain.std(0).sum() + 20  # a pattern is visible texture
    shapes = {s: render_scene(_lone(shape=s), 48).astype(float) for s in SHAPES}
    for i, a in enumerate(SHAPES):
        for b in SHAPES[i + 1:]:
            assert np.abs(shapes[a] - shapes[b]).mean() > 3, (a, b)


def test_converse_with_arguments_swapped_is_the_same_relation():
    world = TabletopWorld(3, 32, 3)
    checked = 0
    for i in range(150):
        items = world.scene("train", i).items
        for a in items:
            for b in items:
                for rel in RELATIONS:
                    assert relation_holds(rel, a, b) == relation_holds(converse(rel), b, a)
                    assert not (relation_holds(rel, a, b) and relation_holds(converse(rel), a, b))
                    checked += relation_holds(rel, a, b)
    assert checked > 100
    assert all(converse(converse(r)) == r for r in RELATIONS)


def test_rendering_is_deterministic_and_sized():
    world = TabletopWorld(0, 40, 3)
    scene = world.scene("heldout", 2)
    first = world.render(scene)
    assert first.shape == (40, 40, 3) and first.dtype == np.uint8
    assert np.array_equal(first, world.render(scene))
    moved = dataclasses.replace(scene, brightness=scene.brightness * 0.9)
    assert not np.array_equal(first, world.render(moved))


def test_cli_writes_the_files(tmp_path):
    from typer.testing import CliRunner

    from maskvlp.cli import app

    out = tmp_path / "cli_world"
    result = CliRunner().invoke(app, ["data", "make-world", str(out), "--seed", "2", "--image-size", "32",
                                      "--train-scenes", "6", "--test-scenes", "3", "--heldout-pairs", "2"])
    assert result.exit_code == 0, result.output
    for name in FILES:
        assert (out / name).is_file() and str(out / name) in result.output
    assert len(list((out / "images").glob("*.png"))) == 12
    assert len(_load(out / "world.json")["heldout_pairs"]) == 2
    bad = CliRunner().invoke(app, ["data", "make-world", str(tmp_path / "bad"), "--heldout-pairs", "0"])
    assert bad.exit_code == 2
    tiny = CliRunner().invoke(app, ["data", "make-world", str(tmp_path / "tiny"), "--image-size", "8"])
    assert tiny.exit_code == 2 and not (tmp_path / "tiny").exists()


def test_a_run_on_the_tabletop_files_reports_binding_on_seen_and_held_out_pairs(world_dir, tmp_path):
    """What scripts/two_worlds.sh does, at tiny size: pre-train on the world's files as a user's data and
    evaluate with its probe file; the report has colour and relation binding on seen and held-out pairs."""
    from conftest import TINY
    from maskvlp.config import load_config
    from maskvlp.pipeline import pretrain_and_evaluate

    cfg = load_config("albef", "tiny", [
        *TINY, "train.max_steps=2", f"output_dir={tmp_path / 'run'}", "eval.compare_random_init=false",
        "data.source=json", f"data.train_json=[{world_dir / 'train.json'}]", f"data.image_root={world_dir}",
        "data.crop_scale_min=1.0", f"eval.test_json={world_dir / 'test.json'}", f"eval.image_root={world_dir}",
        f"eval.probes_json={world_dir / 'probes.json'}"])
    _, results = pretrain_and_evaluate(cfg, show_progress=False)
    itm = next(row for name, row in results.items() if name.startswith("trained · itm"))
    for key in ("binding_colour", "binding_relation", "binding_colour_heldout", "binding_relation_heldout"):
        assert 0 <= itm[key] <= 100, key
    assert results["trained · itc"]["img_r1"] >= 0
