"""Writing a tabletop world to disk in the layouts the project's readers take.

``train.json`` (ALBEF pre-training list), ``test.json`` and ``heldout.json`` (Karpathy test lists),
``probes_*.json`` and ``world.json``; images are PNG so colours stay exact. Every file goes through
``atomic_write_bytes``, and nothing depends on time or file order, so one seed gives identical bytes.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from maskvlp.data.tabletop.captions import CAPTIONS_PER_SCENE
from maskvlp.data.tabletop.relations import CENTRE_MARGIN, LEVEL_MARGIN, RELATIONS, SIDE_MARGIN, SIZE_RATIO
from maskvlp.data.tabletop.vocab import COLOURS, PATTERNS, SHAPES, SIZES
from maskvlp.data.tabletop.world import TabletopWorld
from maskvlp.files import atomic_write_bytes

FORMAT = "maskvlp-tabletop-1"
Progress = Callable[[str, int, int], None]  # (split, scenes done, scenes in split)


def _png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=1) + "\n").encode("utf-8")


def _write_split(world: TabletopWorld, split: str, count: int, out: Path, progress: Progress | None
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Write the split's images; return its Karpathy entries and its probe entries."""
    entries: list[dict[str, Any]] = []
    probes: list[dict[str, Any]] = []
    for index in range(count):
        scene = world.scene(split, index)
        rel = f"images/{scene.name}.png"
        atomic_write_bytes(out / rel, _png(world.render(scene)))
        entries.append({"image": rel, "caption": [c.text for c in world.captions(scene)]})
        if split != "train":
            probes.extend({"image": rel, "true": p.true, "false": p.false, "kind": p.kind,
                           "heldout": world.names_heldout(p)} for p in world.probes(scene))
        if progress is not None and ((index + 1) % 1000 == 0 or index + 1 == count):
            progress(split, index + 1, count)
    return entries, probes


def write_world(out_dir: str | Path, *, seed: int = 0, image_size: int = 64, train_scenes: int = 20000,
                test_scenes: int = 1000, heldout_pairs: int = 3, progress: Progress | None = None) -> dict[str, Path]:
    """Write the world under ``out_dir``; returns {name: path} of every JSON file and the image folder.

    The heldout split has as many scenes as test, each holding at least one held-out pair.
    """
    if train_scenes < 1 or test_scenes < 1:
        raise ValueError("train_scenes and test_scenes must be at least 1")
    if image_size < 16:
        raise ValueError(f"image_size must be at least 16, got {image_size}")
    world = TabletopWorld(seed, image_size, heldout_pairs)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    train, _ = _write_split(world, "train", train_scenes, out, progress)
    test, probes_test = _write_split(world, "test", test_scenes, out, progress)
    heldout, probes_heldout = _write_split(world, "heldout", test_scenes, out, progress)
    pretrain = [{"image": e["image"], "caption": c} for e in train for c in e["caption"]]
    description = {
        "format": FORMAT,
        "about": "tabletop scene world: a second world, generated independently of maskvlp.data.synthetic",
        "seed": seed,
        "image_size": image_size,
        "scenes": {"train": train_scenes, "test": test_scenes, "heldout": test_scenes},
        "captions_per_scene": CAPTIONS_PER_SCENE,
        "probes": {"test": len(probes_test), "heldout": len(probes_heldout)},
        "heldout_pairs": [list(p) for p in world.heldout_pairs],
        "vocabulary": {"shapes": list(SHAPES), "colours": {k: list(v) for k, v in COLOURS.items()},
                       "sizes": dict(SIZES), "patterns": list(PATTERNS)},
        "relations": {r: c for r, (c, _) in RELATIONS.items()},
        "margins": {"side": SIDE_MARGIN, "level": LEVEL_MARGIN, "size_ratio": SIZE_RATIO, "centre": CENTRE_MARGIN},
    }
    files = {"train": out / "train.json", "test": out / "test.json", "heldout": out / "heldout.json",
             "probes_test": out / "probes_test.json", "probes_heldout": out / "probes_heldout.json",
             "probes": out / "probes.json", "world": out / "world.json"}
    # probes.json: both splits' probes in one file (the held-out ones marked), for one evaluation beside
    # test.json that reports binding on seen and on held-out pairs (eval.probes_json)
    for name, data in (("train", pretrain), ("test", test), ("heldout", heldout), ("probes_test", probes_test),
                       ("probes_heldout", probes_heldout), ("probes", probes_test + probes_heldout),
                       ("world", description)):
        atomic_write_bytes(files[name], _json(data))
    return {**files, "images": out / "images"}
