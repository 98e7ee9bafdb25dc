"""The synthetic scene world: determinism, truth of captions, exact truth tables, probes, pixels, export."""
from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from maskvlp.config import WorldConfig
from maskvlp.data.synthetic import (
    COLOURS,
    RELATION_MARGIN,
    RELATIONS,
    SHAPES,
    Caption,
    CaptionSpec,
    ObjectDescription,
    Scene,
    SceneObject,
    SyntheticWorld,
    caption_kind,
    colour_swap,
    export_albef_json,
    holds,
    realize,
    relation_holds,
    reverse_relation,
    truth_matrix,
)


def small_cfg(**kw) -> WorldConfig:
    base = dict(train_scenes=40, val_scenes=10, test_scenes=40, image_size=32)
    base.update(kw)
    return WorldConfig(**base)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return SyntheticWorld(small_cfg())


def obj(shape: str, colour: str, x: float, y: float, size: str = "large", material: str = "matte") -> SceneObject:
    return SceneObject(shape, colour, size, material, x, y, 0.144 if size == "large" else 0.08)


def scene(*objects: SceneObject) -> Scene:
    return Scene("hand", "test", tuple(objects))


RED_CIRCLE = ObjectDescription(shape="circle", colour="red")
BLUE_SQUARE = ObjectDescription(shape="square", colour="blue")


# --- determinism -----------------------------------------------------------------------------
def test_same_seed_same_world_and_different_seed_differs(world: SyntheticWorld) -> None:
    other = SyntheticWorld(small_cfg())
    assert world.heldout_pairs == other.heldout_pairs
    assert world.scenes("test") == other.scenes("test")
    for s in world.scenes("test")[:5]:
        assert [c.text for c in world.captions(s)] == [c.text for c in other.captions(s)]
        assert np.array_equal(world.render(s), other.render(s))
    seeded = SyntheticWorld(small_cfg(seed=1))
    assert seeded.scenes("test") != world.scenes("test")
    s0, s1 = world.scenes("test")[0], seeded.scenes("test")[0]
    assert not np.array_equal(world.render(s0), seeded.render(s1))


def test_scene_does_not_depend_on_how_many_were_generated(world: SyntheticWorld) -> None:
    few = SyntheticWorld(small_cfg(test_scenes=3))
    assert few.scenes("test") == world.scenes("test")[:3]
    assert few.scene("test", 17) == world.scenes("test")[17]
    assert world.scenes("val")[0] != world.scenes("test")[0]


def test_scene_layout(world: SyntheticWorld) -> None:
    for s in world.scenes("train"):
        assert 1 <= len(s.objects) <= 4
        for o in s.objects:
            x0, y0, x1, y1 = o.bbox
            assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        for a, b in itertools.combinations(s.objects, 2):
            ax0, ay0, ax1, ay1 = a.bbox
            bx0, by0, bx1, by1 = b.bbox
            assert ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0  # boxes never overlap


# --- captions and truth ----------------------------------------------------------------------
def test_every_caption_is_true_distinct_and_varied(world: SyntheticWorld) -> None:
    kinds = set()
    for s in world.scenes("test"):
        caps = world.captions(s)
        assert len(caps) == world.cfg.captions_per_scene
        assert len({c.text for c in caps}) == len(caps)
        assert len({c.spec for c in caps}) == len(caps)
        for c in caps:
            assert holds(c.spec, s), (s, c)
            assert c.text == c.text.strip() and c.text
        kinds |= {caption_kind(c.spec) for c in caps}
    assert kinds == {"scene", "single", "objects", "relation", "count"}


def test_holds_needs_distinct_objects_and_exact_counts() -> None:
    one = scene(obj("circle", "red", 0.2, 0.2))
    two = scene(obj("circle", "red", 0.2, 0.2), obj("circle", "red", 0.7, 0.7))
    pair = CaptionSpec((RED_CIRCLE, RED_CIRCLE))
    assert not holds(pair, one) and holds(pair, two)
    count_two = CaptionSpec((ObjectDescription(shape="circle"),), count=2)
    assert holds(count_two, two) and not holds(count_two, one)
    assert holds(CaptionSpec((ObjectDescription(),), count=0), scene())


def test_whole_scene_spec_needs_the_exact_total() -> None:
    two = scene(obj("circle", "red", 0.2, 0.2), obj("square", "blue", 0.7, 0.7))
    three = scene(obj("circle", "red", 0.2, 0.2), obj("square", "blue", 0.7, 0.7), obj("star", "green", 0.2, 0.8))
    whole = CaptionSpec((RED_CIRCLE, BLUE_SQUARE), total=2)
    assert holds(whole, two) and not holds(whole, three)
    assert holds(replace(whole, total=None), three)  # without the total it is a partial description
    left = CaptionSpec((RED_CIRCLE, BLUE_SQUARE), relation=(0, "left of", 1), total=2)
    assert holds(left, two) and not holds(replace(left, relation=(0, "right of", 1)), two)
    assert caption_kind(whole) == "scene" and caption_kind(left) == "scene"


def test_truth_matrix_equals_brute_force(world: SyntheticWorld) -> None:
    scenes = world.scenes("test")[:25] + world.scenes("heldout")[:5] + [scene()]
    specs = [c.spec for s in scenes[:15] for c in world.captions(s)]
    for s in scenes[:15]:
        for p in world.binding_probes(s):
            specs += [p.true.spec, p.false.spec]
    specs += [
        CaptionSpec(()),
        CaptionSpec((ObjectDescription(colour="pink"),)),
        CaptionSpec((ObjectDescription(),), count=0),
        CaptionSpec((ObjectDescription(), ObjectDescription(), ObjectDescription())),
        CaptionSpec((ObjectDescription(),) * 5),
        CaptionSpec((ObjectDescription(), ObjectDescription(), ObjectDescription()), relation=(2, "above", 0)),
        CaptionSpec((), total=0),
        CaptionSpec((ObjectDescription(),), total=1),
        CaptionSpec((ObjectDescription(), ObjectDescription()), relation=(1, "left of", 0), total=3),
    ]
    truth = truth_matrix(specs, scenes)
    brute = np.array([[holds(sp, s) for s in scenes] for sp in specs], dtype=bool)
    assert truth.dtype == bool and truth.shape == (len(specs), len(scenes))
    assert np.array_equal(truth, brute)
    assert truth_matrix([], scenes).shape == (0, len(scenes))


# --- held-out pairs ------------------------------------------------------------------------------
def test_heldout_pairs_only_in_heldout_split(world: SyntheticWorld) -> None:
    held = world.heldout_pairs
    assert len(held) == world.cfg.heldout_pairs
    assert all(c in COLOURS and s in SHAPES for c, s in held)
    for split in ("train", "val", "test"):
        for s in world.scenes(split):
            assert not any((o.colour, o.shape) in held for o in s.objects), s
    heldout = world.scenes("heldout")
    assert heldout
    for s in heldout:
        assert any((o.colour, o.shape) in held for o in s.objects), s
    assert SyntheticWorld(small_cfg(heldout_pairs=0)).scenes("heldout") == []


# --- binding probes ---------------------------------------------------------------------------------
def test_binding_probes_are_verified_minimal_pairs(world: SyntheticWorld) -> None:
    kinds = []
    for s in world.scenes("test"):
        probes = world.binding_probes(s)
        if len(s.objects) < 2:
            assert probes == []
        for p in probes:
            kinds.append(p.kind)
            assert holds(p.true.spec, s) and not holds(p.false.spec, s)
            assert p.true.text != p.false.text
            assert len(p.true.text.split()) == len(p.false.text.split())  # same wording frame
    assert "colour_swap" in kinds and "relation" in kinds


def test_colour_swap_and_reverse_relation_by_hand() -> None:
    spec = CaptionSpec((RED_CIRCLE, BLUE_SQUARE), relation=(0, "left of", 1))
    swapped = colour_swap(spec)
    assert swapped == CaptionSpec((replace(RED_CIRCLE, colour="blue"), replace(BLUE_SQUARE, colour="red")), (0, "left of", 1))
    assert reverse_relation(spec) == CaptionSpec((RED_CIRCLE, BLUE_SQUARE), relation=(0, "right of", 1))
    assert reverse_relation(replace(spec, relation=(0, "above", 1))).relation == (0, "below", 1)
    assert colour_swap(CaptionSpec((RED_CIRCLE, replace(BLUE_SQUARE, colour="red")))) is None
    assert colour_swap(CaptionSpec((RED_CIRCLE,))) is None
    assert reverse_relation(CaptionSpec((RED_CIRCLE, BLUE_SQUARE))) is None

    s = scene(obj("circle", "red", 0.2, 0.5), obj("square", "blue", 0.8, 0.5))
    assert holds(spec, s)
    assert not holds(swapped, s) and not holds(reverse_relation(spec), s)
    assert realize(swapped, 0) == "a blue circle to the left of a red square"


# --- relations and text -----------------------------------------------------------------------------
def test_relation_holds_with_margin() -> None:
    a, b = obj("circle", "red", 0.2, 0.2), obj("square", "blue", 0.8, 0.8)
    assert relation_holds("left of", a, b) and relation_holds("above", a, b)
    assert relation_holds("right of", b, a) and relation_holds("below", b, a)
    assert not relation_holds("right of", a, b) and not relation_holds("below", a, b)
    near = obj("square", "blue", 0.2 + RELATION_MARGIN / 2, 0.8)  # almost the same column: ambiguous
    assert not relation_holds("left of", a, near) and not relation_holds("right of", near, a)
    assert relation_holds("above", a, near)
    assert not any(relation_holds(p, a, a) for p in RELATIONS)


def test_realize_hand_built_specs() -> None:
    rel = CaptionSpec((RED_CIRCLE, BLUE_SQUARE), relation=(0, "left of", 1))
    assert realize(rel, 0) == "a red circle to the left of a blue square"
    assert realize(rel, 1) == "there is a red circle to the left of a blue square"
    assert realize(rel, 2) == "to the left of the blue square is a red circle"
    assert realize(rel, 3) == "a blue square with a red circle to its left"
    assert realize(rel, 4 + 5) == "the red circle is to the left of the blue square"
    full = ObjectDescription("circle", "orange", "large", "metal")
    assert realize(CaptionSpec((full,)), 0) == "a large orange metal circle"
    assert realize(CaptionSpec((ObjectDescription(colour="orange"),)), 1) == "there is an orange object"
    assert realize(CaptionSpec((RED_CIRCLE, BLUE_SQUARE)), 0) == "a red circle and a blue square"
    assert realize(CaptionSpec((ObjectDescription(shape="circle"),), count=2), 0) == "two circles"
    assert realize(CaptionSpec((ObjectDescription(),), count=1), 1) == "there is one object"
    assert {realize(rel, k) for k in range(5)} == {realize(rel, k) for k in range(10)}
    whole = CaptionSpec((RED_CIRCLE, BLUE_SQUARE), total=2)
    assert realize(whole, 0) == "a red circle and a blue square"
    assert realize(whole, 1) == "two objects: a red circle and a blue square"
    assert realize(replace(rel, total=2), 1) == "there is a red circle to the left of a blue square, two objects in all"


def test_invalid_values_are_rejected() -> None:
    with pytest.raises(ValueError):
        SceneObject("blob", "red", "large", "matte", 0.5, 0.5, 0.1)
    with pytest.raises(ValueError):
        CaptionSpec((RED_CIRCLE,), relation=(0, "left of", 0))
    with pytest.raises(ValueError):
        CaptionSpec((RED_CIRCLE, BLUE_SQUARE), count=1)
    with pytest.raises(ValueError):
        CaptionSpec((RED_CIRCLE, BLUE_SQUARE), total=1)
    with pytest.raises(ValueError):
        SyntheticWorld(small_cfg(max_objects=0))


# --- pixels and export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [32, 96])
def test_render_shape_and_object_colours(size: int) -> None:
    w = SyntheticWorld(small_cfg(image_size=size))
    s = scene(obj("circle", "red", 0.25, 0.3), obj("square", "blue", 0.7, 0.7))
    img = w.render(s)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    r, g, b = img[int(0.3 * size), int(0.25 * size)].astype(int)
    assert r > 150 and r > g + 80 and r > b + 80
    r, g, b = img[int(0.7 * size), int(0.7 * size)].astype(int)
    assert b > 150 and b > r + 80
    corner = img[1, 1].astype(int)
    assert corner.max() < 110  # background stays dark and neutral


def test_metal_has_a_highlight() -> None:
    w = SyntheticWorld(small_cfg(image_size=64))
    s = scene(obj("square", "blue", 0.3, 0.5, material="metal"), obj("square", "blue", 0.7, 0.5))
    img = w.render(s).astype(int)
    metal, matte = img[16:48, 10:28], img[16:48, 36:54]
    assert metal.sum(axis=2).max() > matte.sum(axis=2).max() + 100


def test_export_albef_json(world: SyntheticWorld, tmp_path) -> None:
    pretrain_path, test_path = export_albef_json(world, "test", tmp_path, limit=3)
    pretrain = json.loads(pretrain_path.read_text())
    test = json.loads(test_path.read_text())
    assert len(test) == 3 and len(pretrain) == 3 * world.cfg.captions_per_scene
    assert all(set(e) == {"image", "caption"} and isinstance(e["caption"], str) for e in pretrain)
    assert all(isinstance(e["caption"], list) and len(e["caption"]) == world.cfg.captions_per_scene for e in test)
    assert test[0]["caption"] == [c.text for c in world.captions(world.scenes("test")[0])]
    for e in test:
        assert e["image"].startswith("images/")
        with Image.open(tmp_path / e["image"]) as im:
            assert im.size == (32, 32)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_caption_is_a_frozen_record() -> None:
    cap = Caption("a red circle", CaptionSpec((RED_CIRCLE,)))
    with pytest.raises(AttributeError):
        cap.text = "x"  # type: ignore[misc]
