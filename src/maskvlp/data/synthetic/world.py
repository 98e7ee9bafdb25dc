"""The :class:`SyntheticWorld` of one :class:`WorldConfig`: scenes per split, captions, pixels, probes.

It owns the seeds: each scene, and each scene's captions, picture and probes, gets its own
generator keyed by (seed, purpose, scene), so any of them can be recomputed alone.
"""
from __future__ import annotations

import zlib

import numpy as np

from maskvlp.config import WorldConfig
from maskvlp.data.synthetic.captions import write_captions
from maskvlp.data.synthetic.motion import (
    CLIP_FRAMES,
    DIRECTIONS,
    OPPOSITE,
    MotionClip,
    clip_scenes,
    motion_captions,
    moving,
    nameable,
    path,
    place_mover,
    travel,
    with_object,
)
from maskvlp.data.synthetic.probes import BindingProbe, _colour_swap_probe, _relation_probe
from maskvlp.data.synthetic.questions import Question, write_questions
from maskvlp.data.synthetic.referring import (
    ReferringExpression,
    candidate_boxes,
    confusers,
    object_box,
    referable,
    write_referring,
)
from maskvlp.data.synthetic.render import render_scene
from maskvlp.data.synthetic.scenes import Scene, _pick, _place, choose_heldout_pairs
from maskvlp.data.synthetic.statements import write_statement
from maskvlp.data.synthetic.truth import Caption
from maskvlp.data.synthetic.vocabulary import (
    _SPLIT_CODES,
    _STREAM_CAPTIONS,
    _STREAM_GROUNDING,
    _STREAM_MOTION,
    _STREAM_PROBES,
    _STREAM_QUESTIONS,
    _STREAM_RENDER,
    _STREAM_STATEMENTS,
    COLOURS,
    LARGE_RADIUS,
    MATERIALS,
    MAX_OBJECTS,
    RADIUS_JITTER,
    SHAPES,
    SIZES,
    SMALL_RADIUS,
    SPLITS,
)
from maskvlp.data.tasks.examples import GroundingExample, Nlvr2Example, VqaExample

QUESTIONS_PER_SCENE = 6
_QUESTION_ID_STRIDE = 100  # question_id = scene index * stride + k, as VQA ids encode the image
_GROUNDING_ATTEMPTS = 100  # redraws of a grounding scene whose target was dropped or cannot be referred to
_MOTION_ATTEMPTS = 100  # redraws of a clip's scene whose mover no attribute phrase picks out
_SHAPE_CONFUSER_SHARE = 1.0  # a grounding target's confuser shares its shape (else its colour): RefCOCO+ images hold several objects of the referred category


class SyntheticWorld:
    """The scene world of one :class:`WorldConfig`: scenes, captions, pictures and probes."""

    def __init__(self, cfg: WorldConfig) -> None:
        if not 1 <= cfg.min_objects <= cfg.max_objects <= MAX_OBJECTS:
            raise ValueError(f"need 1 <= min_objects <= max_objects <= {MAX_OBJECTS}, got {cfg.min_objects}, {cfg.max_objects}")
        if cfg.image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {cfg.image_size}")
        if cfg.captions_per_scene < 1:
            raise ValueError(f"captions_per_scene must be >= 1, got {cfg.captions_per_scene}")
        self.cfg = cfg
        self.seed = int(cfg.seed) % (2**63)
        self.heldout_pairs: frozenset[tuple[str, str]] = choose_heldout_pairs(cfg.heldout_pairs, self.seed)
        all_pairs = [(c, s) for c in COLOURS for s in SHAPES]
        self._seen_pairs = [p for p in all_pairs if p not in self.heldout_pairs]
        self._all_pairs = all_pairs
        self._scenes: dict[str, list[Scene]] = {}
        self._captions: dict[Scene, list[Caption]] = {}
        self._grounding: dict[tuple[str, int], Scene] = {}
        # frames per motion clip; WorldConfig has no such field (yet), so a config that gains one is honoured
        self.clip_frames = int(cfg.clip_frames)
        if self.clip_frames < 2:
            raise ValueError(f"clip_frames must be >= 2, got {self.clip_frames}")

    def num_scenes(self, split: str) -> int:
        """Scenes in a split; "heldout" has as many as "test" (none when no pair is held out)."""
        sizes = {"train": self.cfg.train_scenes, "val": self.cfg.val_scenes, "test": self.cfg.test_scenes,
                 "heldout": self.cfg.test_scenes if self.heldout_pairs else 0}
        if split not in sizes:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        return sizes[split]

    def scenes(self, split: str) -> list[Scene]:
        """All scenes of a split (cached; scene i never depends on the others)."""
        if split not in self._scenes:
            self._scenes[split] = [self.scene(split, i) for i in range(self.num_scenes(split))]
        return self._scenes[split]

    def scene(self, split: str, index: int) -> Scene:
        """Scene ``index`` of ``split``, drawn from its own generator (seed, split, index)."""
        self._check_split(split)
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[split], int(index)])
        count = int(rng.integers(self.cfg.min_objects, self.cfg.max_objects + 1))
        forced = int(rng.integers(count)) if split == "heldout" else -1
        held = sorted(self.heldout_pairs)
        objs = [self._sample_object(k, rng, _pick(rng, held) if k == forced else None, split) for k in range(count)]
        placed = _place(objs, rng)
        if len(placed) < self.cfg.min_objects:
            raise RuntimeError(f"could not place {count} objects in scene {split}-{index}")
        return Scene(f"{split}-{index:06d}", split, tuple(o["obj"] for o in placed))

    def _check_split(self, split: str) -> None:
        if split not in _SPLIT_CODES:
            raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
        if split == "heldout" and not self.heldout_pairs:
            raise ValueError("the heldout split is empty: cfg.heldout_pairs is 0")

    def _sample_object(self, order: int, rng: np.random.Generator, pair: tuple[str, str] | None, split: str) -> dict:
        """Attributes of one object; held-out pairs only in the heldout split."""
        if pair is None:
            pair = _pick(rng, self._all_pairs if split == "heldout" else self._seen_pairs)
        size = _pick(rng, SIZES)
        base = LARGE_RADIUS if size == "large" else SMALL_RADIUS
        radius = base * float(rng.uniform(1 - RADIUS_JITTER, 1 + RADIUS_JITTER))
        return {"order": order, "colour": pair[0], "shape": pair[1], "size": size,
                "material": _pick(rng, MATERIALS), "radius": radius}

    def _scene_rng(self, stream: int, scene: Scene, *extra: int) -> np.random.Generator:
        """A generator for one purpose and one scene, stable across processes (crc32, not hash)."""
        return np.random.default_rng([self.seed, stream, zlib.crc32(scene.scene_id.encode("utf-8")), *extra])

    def captions(self, scene: Scene) -> list[Caption]:
        """``captions_per_scene`` true captions, differently worded and (when possible) different in content."""
        if scene not in self._captions:
            rng = self._scene_rng(_STREAM_CAPTIONS, scene)
            self._captions[scene] = write_captions(scene, self.cfg.captions_per_scene, rng)
        return list(self._captions[scene])

    def render(self, scene: Scene) -> np.ndarray:
        """uint8 [image_size, image_size, 3], the same pixels every time."""
        return render_scene(scene, self.cfg.image_size, self._scene_rng(_STREAM_RENDER, scene))

    def binding_probes(self, scene: Scene) -> list[BindingProbe]:
        """A colour-swap and a relation probe when the scene allows them (>= 2 objects)."""
        if len(scene.objects) < 2:
            return []
        rng = self._scene_rng(_STREAM_PROBES, scene)
        probes = [_colour_swap_probe(scene, rng), _relation_probe(scene, rng)]
        return [p for p in probes if p is not None]

    def questions(self, scene: Scene, num: int = QUESTIONS_PER_SCENE) -> list[Question]:
        """Up to ``num`` VQA-style questions with verified answers; the first ``k`` do not depend on ``num``."""
        return write_questions(scene, num, self._scene_rng(_STREAM_QUESTIONS, scene), self.heldout_pairs)

    def _first_scenes(self, split: str, num_scenes: int | None) -> list[Scene]:
        """The first ``num_scenes`` scenes of a split (all when None), without building the whole
        split just for a few."""
        total = self.num_scenes(split)
        if num_scenes is None or split in self._scenes:
            return self.scenes(split)[: total if num_scenes is None else num_scenes]
        return [self.scene(split, i) for i in range(min(num_scenes, total))]

    def vqa_examples(self, split: str, num_scenes: int | None = None, per_scene: int = QUESTIONS_PER_SCENE) -> list[VqaExample]:
        """Questions about the first ``num_scenes`` scenes of ``split`` (all by default); ``image`` is
        the scene index and ``question_id = index * 100 + k``."""
        if not 1 <= per_scene <= _QUESTION_ID_STRIDE:
            raise ValueError(f"per_scene must be in [1, {_QUESTION_ID_STRIDE}], got {per_scene}")
        out = []
        for index, scene in enumerate(self._first_scenes(split, num_scenes)):
            for k, q in enumerate(self.questions(scene, per_scene)):
                out.append(VqaExample(index * _QUESTION_ID_STRIDE + k, index, q.text, q.answers, q.answer_type,
                                      q.question_type, q.heldout))
        return out

    def nlvr2_examples(self, split: str, num_pairs: int, num_scenes: int | None = None) -> list[Nlvr2Example]:
        """``num_pairs`` statements about pairs of distinct scenes among the first ``num_scenes`` of
        ``split``; pair ``p`` (identifier ``"{split}-{p}-0-0"``) depends only on (seed, split, p,
        num_scenes), and ``left`` / ``right`` are scene indices."""
        scenes = self._first_scenes(split, num_scenes)
        if len(scenes) < 2:
            raise ValueError(f"NLVR2 pairs need 2 or more scenes; split {split!r} has {len(scenes)} here")
        out = []
        for pair in range(num_pairs):
            rng = np.random.default_rng([self.seed, _STREAM_STATEMENTS, _SPLIT_CODES[split], pair])
            left = int(rng.integers(len(scenes)))
            right = (left + 1 + int(rng.integers(len(scenes) - 1))) % len(scenes)
            statement = write_statement(scenes[left], scenes[right], rng, self.heldout_pairs)
            out.append(Nlvr2Example(f"{split}-{pair}-0-0", statement.text, statement.label, left, right, statement.heldout))
        return out

    # ----------------------------------------------------------------------------------------
    # Grounding (referring expressions)
    # ----------------------------------------------------------------------------------------
    def grounding_scene(self, split: str, index: int) -> Scene:
        """Grounding scene ``index`` of ``split`` (its own generator): 3 or more objects, object 0 the
        test target, with a confuser sharing its shape or colour; in "heldout" the target is a
        held-out pair. Redrawn from the same generator until the target is placed and referable."""
        self._check_split(split)
        key = (split, int(index))
        if key not in self._grounding:
            rng = np.random.default_rng([self.seed, _STREAM_GROUNDING, _SPLIT_CODES[split], int(index)])
            for _ in range(_GROUNDING_ATTEMPTS):
                placed = _place(self._grounding_objects(split, rng), rng)
                scene = Scene(f"ref-{split}-{int(index):06d}", split, tuple(o["obj"] for o in placed))
                if len(placed) >= 3 and placed[0]["order"] == 0 and confusers(scene, 0) and referable(scene, 0):
                    self._grounding[key] = scene
                    break
            else:
                raise RuntimeError(f"no referable grounding scene {split}-{index} in {_GROUNDING_ATTEMPTS} draws")
        return self._grounding[key]

    def _grounding_objects(self, split: str, rng: np.random.Generator) -> list[dict]:
        """The target (order 0), a confuser (order 1) and random others, not yet placed."""
        count = int(rng.integers(3, min(max(3, self.cfg.max_objects), MAX_OBJECTS) + 1))
        target = _pick(rng, sorted(self.heldout_pairs) if split == "heldout" else self._seen_pairs)
        pool = self._all_pairs if split == "heldout" else self._seen_pairs
        same_shape = [p for p in pool if p[1] == target[1] and p[0] != target[0]]
        same_colour = [p for p in pool if p[0] == target[0] and p[1] != target[1]]
        by_shape = rng.random() < _SHAPE_CONFUSER_SHARE
        options = (same_shape if by_shape else same_colour) or same_shape or same_colour
        if not options:
            raise ValueError(f"no colour-shape pair can confuse {target}: too many pairs held out")
        objs = [self._sample_object(0, rng, target, split), self._sample_object(1, rng, _pick(rng, options), split)]
        return objs + [self._sample_object(k, rng, None, split) for k in range(2, count)]

    def referring(self, scene: Scene) -> list[ReferringExpression]:
        """One valid expression per object that has one, in object order (deterministic per scene)."""
        rng = self._scene_rng(_STREAM_GROUNDING, scene)
        out = [write_referring(scene, k, rng) for k in range(len(scene.objects))]
        return [e for e in out if e is not None]

    def grounding_examples(self, split: str, num_scenes: int | None = None) -> list[GroundingExample]:
        """One expression (for object 0) per grounding scene among the first ``num_scenes`` of ``split``
        (all by default); ``ref_id`` and ``image`` are the scene index (render
        ``grounding_scene(split, image)``), boxes are in pixels at ``cfg.image_size``."""
        size = self.cfg.image_size
        total = self.num_scenes(split)
        out = []
        for index in range(total if num_scenes is None else min(num_scenes, total)):
            scene = self.grounding_scene(split, index)
            # object 0 is written first, so this is referring(scene)[0] without writing the others
            expr = write_referring(scene, 0, self._scene_rng(_STREAM_GROUNDING, scene))
            assert expr is not None  # grounding_scene keeps only scenes whose target is referable
            candidates = candidate_boxes(scene, size, self._scene_rng(_STREAM_GROUNDING, scene, 1), target=0)
            out.append(GroundingExample(index, index, expr.text, object_box(scene.objects[0], size), candidates,
                                        split, split == "heldout", expr.confused, expr.kind))
        return out

    def grounding_training_texts(self, num_scenes: int | None = None) -> list[list[str]]:
        """Per train grounding scene (the first ``num_scenes``), the expressions of every referable object."""
        total = self.num_scenes("train")
        count = total if num_scenes is None else min(num_scenes, total)
        return [[e.text for e in self.referring(self.grounding_scene("train", i))] for i in range(count)]

    # ----------------------------------------------------------------------------------------
    # Motion clips (video)
    # ----------------------------------------------------------------------------------------
    def motion_clip(self, split: str, index: int) -> MotionClip:
        """Clip ``index`` of ``split`` (its own generator): one object moves left, right, up or down;
        in "heldout" the mover is a held-out pair, elsewhere every object is a seen pair."""
        self._check_split(split)
        rng = np.random.default_rng([self.seed, _STREAM_MOTION, _SPLIT_CODES[split], int(index)])
        direction = _pick(rng, DIRECTIONS)
        scene, mover, distance = self._motion_scene(split, f"clip-{split}-{int(index):06d}", _axis(direction), rng)
        return self._clip(scene, mover, direction, distance)

    def motion_twin(self, split: str, index: int) -> tuple[MotionClip, MotionClip]:
        """Twin pair ``index`` of ``split``: the same first frame (same scene id, so the same pixels)
        and mover, moving opposite ways; drawn apart from ``motion_clip(split, index)``."""
        self._check_split(split)
        rng = np.random.default_rng([self.seed, _STREAM_MOTION, _SPLIT_CODES[split], int(index), 1])
        direction = _pick(rng, DIRECTIONS)
        scene, mover, distance = self._motion_scene(split, f"twin-{split}-{int(index):06d}", _axis(direction), rng)
        return self._clip(scene, mover, direction, distance), self._clip(scene, mover, OPPOSITE[direction], distance)

    def render_clip(self, clip: MotionClip, frames: int | None = None) -> np.ndarray:
        """uint8 [frames, S, S, 3] (``clip_frames`` by default; fewer or more sample the same motion).
        Every frame is drawn from the same render generator, so only the mover changes."""
        size = self.cfg.image_size
        return np.stack([render_scene(s, size, self._scene_rng(_STREAM_RENDER, clip.scene))
                         for s in clip_scenes(clip.scene, self.clip_frames, frames)])

    def _motion_scene(self, split: str, scene_id: str, axis: str, rng: np.random.Generator) -> tuple[Scene, int, float]:
        """A still first frame, its mover's index and travel: the mover's path either way along ``axis``
        is clear of the others, and an attribute phrase picks the mover out. Redrawn until so."""
        for _ in range(_MOTION_ATTEMPTS):
            count = int(rng.integers(self.cfg.min_objects, self.cfg.max_objects + 1))
            order = int(rng.integers(count))
            pair = _pick(rng, sorted(self.heldout_pairs)) if split == "heldout" else None
            spec = self._sample_object(order, rng, pair, split)
            distance = travel(spec, axis)
            start = place_mover(spec, axis, distance, rng)
            others = [self._sample_object(k, rng, None, split) for k in range(count) if k != order]
            placed = _place(others, rng, fixed=path(start, axis, distance))
            mover = sum(o["order"] < order for o in placed)
            objects = [o["obj"] for o in placed]
            scene = Scene(scene_id, split, tuple(objects[:mover] + [start] + objects[mover:]))
            if len(scene.objects) >= self.cfg.min_objects and nameable(scene, mover):
                return scene, mover, distance
        raise RuntimeError(f"no clip scene {scene_id} with a nameable mover in {_MOTION_ATTEMPTS} draws")

    def _clip(self, scene: Scene, mover: int, direction: str, distance: float) -> MotionClip:
        """The clip of a still scene's mover going ``direction``; captions from a generator keyed by the
        scene, so twins' captions differ only in the direction."""
        obj = moving(scene.objects[mover], direction, distance, self.clip_frames)
        captions = motion_captions(scene, mover, direction, self.cfg.captions_per_scene,
                                   self._scene_rng(_STREAM_MOTION, scene))
        assert captions is not None  # _motion_scene keeps only nameable movers
        return MotionClip(with_object(scene, mover, obj), mover, direction, captions, f"{scene.scene_id}-{direction}")


def _axis(direction: str) -> str:
    return "x" if direction in ("left", "right") else "y"
