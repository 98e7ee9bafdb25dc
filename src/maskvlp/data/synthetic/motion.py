"""Clips of one moving object, and motion twins, for video-text retrieval (the world's MSR-VTT).

A still picture cannot say which way something moves, so a clip's caption ("the red circle moves
to the left") is only checkable from several frames. A clip is an ordinary :class:`Scene` whose
mover carries a velocity (``vx``/``vy``, normalised units per frame at the world's
``clip_frames``); the other objects stand still. Frame ``t`` is :func:`scene_at` ``(scene, t)``.

The mover travels DISPLACEMENT (less when a large object cannot afford it) along one axis and its
start leaves room for that travel in *both* directions, so the same first frame can begin a clip
either way: a motion twin. A model that looks at the first frame only is at
chance on twins. Every position the mover takes (either way) is kept clear of the still objects,
so nothing is ever covered. The mover is named by a shortest unique attribute phrase (the
referring expressions' chooser), so the caption picks it out of the first frame.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from maskvlp.data.synthetic.referring import _attribute_options
from maskvlp.data.synthetic.scenes import Scene, SceneObject, _pick
from maskvlp.data.synthetic.text import _definite, _indefinite, _words
from maskvlp.data.synthetic.vocabulary import _HALF_EXTENTS, ATTRIBUTES, EDGE_GAP

DIRECTIONS = ("left", "right", "up", "down")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
DISPLACEMENT = 0.35  # total travel over a clip, in image widths
CLIP_FRAMES = 8
_PATH_POINTS = 16  # obstacle copies each way: closer than any object's width, so the whole swept band is kept clear
_UNIT = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
_PHRASE = {"left": ("to the left", "left"), "right": ("to the right", "right"), "up": ("upwards", "up"),
           "down": ("downwards", "down")}
# the mover's noun phrase with "the" / "a(n)" / no article; the direction's {long} and {short} phrasings
_TEMPLATES = ("{the} moves {long}", "{a} moving {short}", "{the} slides {long}", "{bare} goes {short}",
              "{the} travels {long}", "{a} heading {short}", "{the} is moving {long}")


@dataclass(frozen=True)
class MotionClip:
    """One clip: ``scene`` is its first frame with the mover's velocity; all captions are true."""

    scene: Scene
    mover: int  # index into scene.objects
    direction: str  # one of DIRECTIONS
    captions: tuple[str, ...]
    clip_id: str


def travel(spec: dict, axis: str) -> float:
    """The mover's total displacement: DISPLACEMENT, or less so it fits inside the image both ways."""
    hx, hy = _HALF_EXTENTS[spec["shape"]]
    margin = (hx if axis == "x" else hy) * spec["radius"] + EDGE_GAP
    return min(DISPLACEMENT, 0.5 - margin)


def place_mover(spec: dict, axis: str, distance: float, rng: np.random.Generator) -> SceneObject:
    """The mover, still, at a start from which it can travel ``distance`` either way along ``axis``
    and stay inside the image (so the same start serves both twins)."""
    hx, hy = _HALF_EXTENTS[spec["shape"]]
    lo_x, lo_y = hx * spec["radius"] + EDGE_GAP, hy * spec["radius"] + EDGE_GAP
    pad_x, pad_y = (distance, 0.0) if axis == "x" else (0.0, distance)
    # max(): a large mover's travel is cut to fit exactly, so its range can be empty by a rounding error
    x = float(rng.uniform(lo_x + pad_x, max(lo_x + pad_x, 1 - lo_x - pad_x)))
    y = float(rng.uniform(lo_y + pad_y, max(lo_y + pad_y, 1 - lo_y - pad_y)))
    return SceneObject(**{name: spec[name] for name in ATTRIBUTES}, x=x, y=y, radius=spec["radius"])


def moving(obj: SceneObject, direction: str, distance: float, clip_frames: int) -> SceneObject:
    """The object with the velocity that covers ``distance`` towards ``direction`` in the clip."""
    ux, uy = _UNIT[direction]
    step = distance / max(1, clip_frames - 1)
    return replace(obj, vx=ux * step, vy=uy * step)


def path(obj: SceneObject, axis: str, distance: float) -> list[SceneObject]:
    """Copies of the object along its travel either way on ``axis`` (obstacles when placing the others)."""
    ux, uy = (1.0, 0.0) if axis == "x" else (0.0, 1.0)
    return [replace(obj, x=obj.x + ux * float(s), y=obj.y + uy * float(s))
            for s in np.linspace(-distance, distance, 2 * _PATH_POINTS + 1)]


def scene_at(scene: Scene, t: float) -> Scene:
    """The scene ``t`` frames later: every object moved by its velocity (still ones stay put)."""
    objects = tuple(replace(o, x=o.x + o.vx * t, y=o.y + o.vy * t) if (o.vx or o.vy) else o for o in scene.objects)
    return replace(scene, objects=objects)


def clip_scenes(scene: Scene, clip_frames: int, frames: int | None = None) -> list[Scene]:
    """``frames`` evenly spaced moments of a ``clip_frames``-frame clip (all of its frames by default):
    fewer frames sample the same motion, as a video model samples a clip."""
    times = np.linspace(0.0, clip_frames - 1, frames or clip_frames)
    return [scene_at(scene, float(t)) for t in times]


def with_object(scene: Scene, index: int, obj: SceneObject) -> Scene:
    """The scene with object ``index`` replaced."""
    return replace(scene, objects=scene.objects[:index] + (obj,) + scene.objects[index + 1:])


def nameable(scene: Scene, mover: int) -> bool:
    """Whether some attribute phrase picks the mover alone (what the captions need)."""
    return bool(_attribute_options(scene, mover))


def motion_captions(scene: Scene, mover: int, direction: str, num: int, rng: np.random.Generator) -> tuple[str, ...] | None:
    """``num`` true captions in different wordings (cycling when more are asked than there are),
    or None when no attribute phrase picks the mover out of the scene. Twins drawing from equal
    generators get the same captions but for the direction."""
    options = _attribute_options(scene, mover)
    if not options:
        return None
    order = rng.permutation(len(_TEMPLATES))
    long, short = _PHRASE[direction]
    out = []
    for k in range(num):
        desc = _pick(rng, options)
        template = _TEMPLATES[int(order[k % len(order)])]
        out.append(template.format(the=_definite(desc), a=_indefinite(desc), bare=_words(desc), long=long, short=short))
    return tuple(out)
