"""Referring expressions for grounding: every expression picks exactly its target, confusers and held-out
pairs in grounding scenes, candidate boxes, determinism, and the RefCOCO+ files the exporter writes."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from maskvlp.config import WorldConfig
from maskvlp.data.tasks.boxes import iou
from maskvlp.data.synthetic import (
    ObjectDescription,
    Scene,
    SceneObject,
    SyntheticWorld,
    candidate_boxes,
    confusers,
    export_refcoco,
    object_box,
    referable,
    referents,
    write_referring,
)
from maskvlp.data.synthetic.referring import MAX_DISTRACTOR_IOU, _shifted

SPLITS = ("train", "test", "heldout")


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(WorldConfig(train_scenes=50, test_scenes=30, image_size=64))


@pytest.fixture(scope="module")
def crowded() -> SyntheticWorld:
    """Up to MAX_OBJECTS objects, where placement may shrink or drop objects."""
    return SyntheticWorld(WorldConfig(seed=3, train_scenes=40, test_scenes=40, image_size=64, max_objects=8))


def _hand_scene() -> Scene:
    """Red circle (left), blue circle (right), red square (below the red circle)."""
    return Scene("hand", "test", (
        SceneObject("circle", "red", "small", "matte", x=0.2, y=0.3, radius=0.08),
        SceneObject("circle", "blue", "small", "matte", x=0.8, y=0.3, radius=0.08),
        SceneObject("square", "red", "large", "metal", x=0.2, y=0.75, radius=0.14),
    ))


def test_hand_made_scene_truth():
    scene = _hand_scene()
    assert referents(ObjectDescription(shape="circle", colour="red"), scene) == [0]
    assert referents(ObjectDescription(shape="circle"), scene) == [0, 1]  # "circle" alone is not unique
    assert referents(ObjectDescription(colour="red"), scene) == [0, 2]
    assert referents(ObjectDescription(shape="square"), scene) == [2]
    left_of_circle = ("left of", ObjectDescription(shape="circle"))
    assert referents(ObjectDescription(shape="circle"), scene, left_of_circle) == [0]
    assert referents(ObjectDescription(shape="circle"), scene, ("right of", ObjectDescription(shape="circle"))) == [1]
    # the ground must be another object: no circle is left of itself, so the blue one is left of none
    assert referents(ObjectDescription(shape="circle", colour="blue"), scene, left_of_circle) == []
    # relations compare centres along one axis only: both circles are above the square
    assert referents(ObjectDescription(shape="circle"), scene, ("above", ObjectDescription(shape="square"))) == [0, 1]
    assert confusers(scene, 0) == [1, 2] and confusers(scene, 1) == [0] and confusers(scene, 2) == [0]
    rng = np.random.default_rng(0)
    texts = {write_referring(scene, 0, rng).text for _ in range(60)}
    assert all("circle" in t for t in texts)
    attribute_texts = {t for t in texts if " of " not in t and "above" not in t and "below" not in t}
    assert attribute_texts and all("red circle" in t for t in attribute_texts)  # fewest words: colour + shape
    square = write_referring(scene, 2, rng)
    assert square.kind == "attributes" and square.desc == ObjectDescription(shape="square")  # shape alone is unique


def test_twins_are_not_referable_but_a_relation_separates_them():
    twin = dict(shape="star", colour="green", size="small", material="matte", radius=0.08)
    close = Scene("twins", "test", (SceneObject(x=0.5, y=0.5, **twin), SceneObject(x=0.55, y=0.58, **twin)))
    assert not referable(close, 0) and write_referring(close, 0, np.random.default_rng(0)) is None
    apart = Scene("apart", "test", (SceneObject(x=0.2, y=0.5, **twin), SceneObject(x=0.8, y=0.5, **twin)))
    expr = write_referring(apart, 0, np.random.default_rng(0))
    assert expr.kind == "relation" and expr.relation[0] == "left of"
    assert referents(expr.desc, apart, expr.relation) == [0]


@pytest.mark.parametrize("which", ["world", "crowded"])
def test_every_expression_picks_exactly_its_target(which, request):
    w = request.getfixturevalue(which)
    kinds = set()
    for split in SPLITS:
        for i in range(w.num_scenes(split)):
            scene = w.grounding_scene(split, i)
            exprs = w.referring(scene)
            assert [e.target for e in exprs] == [k for k in range(len(scene.objects)) if referable(scene, k)]
            for e in exprs:
                assert referents(e.desc, scene, e.relation) == [e.target], (scene, e)
                assert e.confused == bool(confusers(scene, e.target))
                if e.kind == "relation":  # the relation does the picking
                    assert e.relation is not None and len(referents(e.desc, scene)) > 1
                else:
                    assert e.relation is None
                kinds.add(e.kind)
    assert kinds == {"attributes", "relation"}


def test_grounding_scenes_targets_confusers_and_heldout_pairs(world, crowded):
    for w in (world, crowded):
        assert w.heldout_pairs
        for split in SPLITS:
            for i in range(w.num_scenes(split)):
                scene = w.grounding_scene(split, i)
                assert 3 <= len(scene.objects) <= max(3, w.cfg.max_objects)
                assert confusers(scene, 0) and referable(scene, 0)
                pairs = {(o.colour, o.shape) for o in scene.objects}
                target = (scene.objects[0].colour, scene.objects[0].shape)
                if split == "heldout":
                    assert target in w.heldout_pairs
                else:
                    assert not pairs & w.heldout_pairs


def test_examples_kinds_and_shares(world):
    examples = world.grounding_examples("test") + world.grounding_examples("heldout")
    assert len(examples) == 2 * world.num_scenes("test")
    kinds = {e.kind for e in examples}
    assert kinds == {"attributes", "relation"}
    # the confuser rule makes every test target confused; on 1,000 test scenes (seed 0, max_objects 4)
    # 24% of expressions are relational and 64% of targets are not picked by their shape word alone
    # (77% with max_objects 8): they need a colour, size, material or a relation
    assert all(e.confused for e in examples)
    needs_more = 0
    for e in examples:
        scene = world.grounding_scene(e.split, e.image)
        needs_more += len(referents(ObjectDescription(shape=scene.objects[0].shape), scene)) > 1
        assert e.heldout == (e.split == "heldout") and e.ref_id == e.image
        assert e.text == world.referring(scene)[0].text and world.referring(scene)[0].target == 0
    assert needs_more / len(examples) > 0.4
    relational = sum(e.kind == "relation" for e in examples) / len(examples)
    assert 0.1 < relational < 0.45


def test_candidates_hold_the_exact_box_and_shifted_copies_miss(world):
    size = world.cfg.image_size
    for split in ("test", "heldout"):
        for e in world.grounding_examples(split):
            scene = world.grounding_scene(split, e.image)
            truths = [object_box(o, size) for o in scene.objects]
            assert e.box == truths[0] and e.box in e.candidates
            assert set(truths) <= set(e.candidates)
            assert len(scene.objects) + 2 <= len(e.candidates) <= len(scene.objects) + 5
            for x, y, w, h in e.candidates:
                assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= size + 1e-6 and y + h <= size + 1e-6
            # every distractor misses every object (IoU < 0.5), so only the right object's box is a hit
            for box in set(e.candidates) - set(truths):
                assert all(iou(box, t) < MAX_DISTRACTOR_IOU for t in truths)
    rng = np.random.default_rng(1)
    for box in [(0.0, 0.0, 10.0, 10.0), (54.0, 30.0, 10.0, 12.0), (20.0, 20.0, 18.0, 18.0)]:
        for _ in range(8):
            assert iou(_shifted(box, 64, rng), box) < MAX_DISTRACTOR_IOU
    # shuffled: the target is not always at the same index
    positions = {e.candidates.index(e.box) for e in world.grounding_examples("test")}
    assert len(positions) > 3


def test_candidate_order_is_drawn_from_the_rng():
    scene = _hand_scene()
    a = candidate_boxes(scene, 64, np.random.default_rng(5))
    b = candidate_boxes(scene, 64, np.random.default_rng(5))
    assert a == b and object_box(scene.objects[0], 64) in a


def test_deterministic_across_instances(world):
    other = SyntheticWorld(WorldConfig(train_scenes=50, test_scenes=30, image_size=64))
    for split in ("test", "heldout"):
        assert other.grounding_examples(split) == world.grounding_examples(split)
    assert other.grounding_training_texts(20) == world.grounding_training_texts(20)
    assert other.grounding_scene("train", 7) == world.grounding_scene("train", 7)
    assert world.grounding_scene("test", 0) != world.scene("test", 0)  # its own stream
    texts = world.grounding_training_texts()
    assert len(texts) == 50 and all(texts)
    assert world.grounding_examples("test", 5) == world.grounding_examples("test")[:5]


def test_export_refcoco_round_trip(tmp_path):
    w = SyntheticWorld(WorldConfig(train_scenes=6, test_scenes=4, image_size=48))
    paths = export_refcoco(w, tmp_path, train_scenes=6, test_scenes=4)
    assert set(paths) == {"train", "test", "heldout", "refs", "instances", "dets"}
    train = json.loads(paths["train"].read_text())
    assert len(train) == sum(len(t) for t in w.grounding_training_texts(6))
    assert all(set(e) == {"image", "text"} and (tmp_path / e["image"]).is_file() for e in train)
    refs = {r["ref_id"]: r for r in pickle.loads(paths["refs"].read_bytes())}
    instances = json.loads(paths["instances"].read_text())
    anns = {a["id"]: a for a in instances["annotations"]}
    images = {i["id"]: i for i in instances["images"]}
    dets = json.loads(paths["dets"].read_text())
    assert len(anns) == len(instances["annotations"]) and len(images) == len(instances["images"]) == 8
    categories = {c["id"]: c["name"] for c in instances["categories"]}
    seen_ref_ids = []
    for split in ("test", "heldout"):
        entries = json.loads(paths[split].read_text())
        examples = w.grounding_examples(split)
        assert len(entries) == len(examples) == 4
        for entry, example in zip(entries, examples):
            assert set(entry) == {"image", "text", "ref_id"} and entry["text"] == example.text
            ref = refs[entry["ref_id"]]
            assert ref["split"] == split and ref["sentences"][0]["sent"] == example.text
            assert ref["sentences"][0]["tokens"] == example.text.split()
            ann = anns[ref["ann_id"]]
            assert ann["image_id"] == ref["image_id"] and tuple(ann["bbox"]) == example.box
            assert categories[ref["category_id"]] == w.grounding_scene(split, example.image).objects[0].shape
            assert [tuple(b) for b in dets[str(ref["image_id"])]] == list(example.candidates)
            assert images[ref["image_id"]]["file_name"] == entry["image"]
            with Image.open(tmp_path / entry["image"]) as img:
                assert img.size == (48, 48)
            seen_ref_ids.append(entry["ref_id"])
    assert len(set(seen_ref_ids)) == len(seen_ref_ids) == len(refs)
    # the refs pickle is plain data (protocol 2) and the export does not change when written again
    assert paths["refs"].read_bytes()[:2] == b"\x80\x02"
    before = {name: p.read_bytes() for name, p in paths.items()}
    again = export_refcoco(SyntheticWorld(w.cfg), tmp_path / "again", train_scenes=6, test_scenes=4)
    assert {name: p.read_bytes() for name, p in again.items()} == before
