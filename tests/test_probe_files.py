"""Binding probes read from a file (eval.probes_json): the layout, its errors, and the same figures as the
synthetic world's own probes on the same images."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_config
from maskvlp.config import WorldConfig
from maskvlp.data.datasets import DataFormatError
from maskvlp.data.retrieval_sets import json_retrieval_set, read_probe_file, synthetic_retrieval_set
from maskvlp.data.synthetic import SyntheticWorld, export_albef_json
from maskvlp.data.tokenizer import load_tokenizer
from maskvlp.engine.pretrainer import Pretrainer
from maskvlp.engine.trainer import text_specials
from maskvlp.eval.retrieval import evaluate_retrieval

SIZE = 32


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The embedded world's test split as files, and its own binding probes as a probe file."""
    root = tmp_path_factory.mktemp("probes")
    world = SyntheticWorld(WorldConfig(seed=3, image_size=SIZE, train_scenes=8, test_scenes=16))
    _, test_json = export_albef_json(world, "test", root)
    entries = []
    for i in range(world.num_scenes("test")):
        scene = world.scene("test", i)
        for probe in world.binding_probes(scene):
            entries.append({"image": f"images/{scene.scene_id}.png", "true": probe.true.text,
                            "false": probe.false.text, "kind": probe.kind})
    probes_json = root / "probes.json"
    probes_json.write_text(json.dumps(entries))
    return world, root, test_json, probes_json


def test_file_probes_score_exactly_as_the_worlds_own_probes(exported, tmp_path):
    """The same images and probe texts, once from the world and once from files: every binding figure equal
    (ITC, ITM and MLM), and retrieval unchanged by the probe file."""
    world, root, test_json, probes_json = exported
    cfg = tiny_config(tmp_path, "albef", f"model.vision.image_size={SIZE}")
    tokenizer = load_tokenizer()
    torch.manual_seed(0)
    model = Pretrainer(cfg, text_specials(tokenizer)).model
    from_world = synthetic_retrieval_set(world, "test", num_images=world.num_scenes("test"))
    from_files = json_retrieval_set(test_json, root, SIZE, probes_json)
    plain = json_retrieval_set(test_json, root, SIZE)
    assert len(from_files.probes) == len(from_world.probes) > 4 and from_files.skipped_probes == 0
    a = evaluate_retrieval(model, tokenizer, from_world, cfg.eval, cfg.model.text.max_len, show_progress=False)
    b = evaluate_retrieval(model, tokenizer, from_files, cfg.eval, cfg.model.text.max_len, show_progress=False)
    c = evaluate_retrieval(model, tokenizer, plain, cfg.eval, cfg.model.text.max_len, show_progress=False)
    assert set(a) == set(b) == {"itc", f"itm k={cfg.eval.itm_k}", "mlm"} and set(c) == {"itc", f"itm k={cfg.eval.itm_k}"}
    for row in a:
        keys = [k for k in a[row] if k.startswith(("binding_", "mlm_probes"))]
        assert keys and all(b[row][k] == pytest.approx(a[row][k], abs=1e-6) for k in keys), row
    for row in c:
        assert all(b[row][k] == pytest.approx(v, abs=1e-6) for k, v in c[row].items()), row


def test_itc_binding_from_a_file_equals_a_brute_force_loop(exported, tmp_path):
    """Each probe scored alone (image and both texts encoded one at a time), held-out probes reported apart."""
    world, root, test_json, probes_json = exported
    entries = json.loads(probes_json.read_text())
    for e in entries[::3]:
        e["heldout"] = True
    marked = tmp_path / "marked.json"
    marked.write_text(json.dumps(entries))
    cfg = tiny_config(tmp_path, "albef", f"model.vision.image_size={SIZE}")
    tokenizer = load_tokenizer()
    torch.manual_seed(1)
    model = Pretrainer(cfg, text_specials(tokenizer)).model.eval()
    rset = json_retrieval_set(test_json, root, SIZE, marked)
    rows = evaluate_retrieval(model, tokenizer, rset, cfg.eval, cfg.model.text.max_len, show_progress=False)
    hits: dict[str, list[float]] = {}
    with torch.no_grad():
        for image_index, kind, true, false in rset.probes:
            image = model.encode_image(rset.probe_image_batch([image_index])).embed[0]
            scores = []
            for text in (true, false):
                enc = tokenizer.encode([text], cfg.model.text.max_len)
                scores.append(float(image @ model.encode_text(enc.input_ids, enc.attention_mask).embed[0]))
            key = {"colour_swap": "binding_colour", "relation": "binding_relation"}[kind.removesuffix("_heldout")]
            key += "_heldout" if kind.endswith("_heldout") else ""
            hits.setdefault(key, []).append(100.0 * (scores[0] > scores[1]) + 50.0 * (scores[0] == scores[1]))
    assert {"binding_colour", "binding_colour_heldout"} <= set(hits)
    for key, values in hits.items():
        assert rows["itc"][key] == pytest.approx(sum(values) / len(values), abs=1e-4), key


def test_probe_file_errors_name_the_file_the_entry_and_the_field(tmp_path):
    path = tmp_path / "p.json"
    cases = [({"image": "a.png", "true": "x"}, 'entry 0: "false" is missing'),
             ({"image": "a.png", "true": "x", "false": "", "kind": "k"}, 'entry 0: "false" must be a non-empty string'),
             ({"image": "a.png", "true": "x", "false": "y", "kind": "k", "heldout": "yes"}, '"heldout" must be true or false'),
             ("a.png", "entry 0 is a str")]
    for entry, message in cases:
        path.write_text(json.dumps([entry]))
        with pytest.raises(DataFormatError, match=message) as err:
            read_probe_file(path, tmp_path, SIZE)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    path.write_text(json.dumps({"probes": []}))
    with pytest.raises(DataFormatError, match="expected a JSON list"):
        read_probe_file(path, tmp_path, SIZE)


def test_a_probe_with_a_missing_image_is_skipped_and_counted(exported):
    world, root, test_json, probes_json = exported
    entries = json.loads(probes_json.read_text())
    entries.append({"image": "images/gone.png", "true": "a red circle", "false": "a blue circle", "kind": "colour_swap"})
    path = Path(root) / "with_missing.json"
    path.write_text(json.dumps(entries))
    probes, images, skipped = read_probe_file(path, root, SIZE)
    assert skipped == 1 and len(probes) == len(entries) - 1
    assert len(images) == len({e["image"] for e in entries}) - 1
