"""Writing a split to disk: PNG images plus ALBEF ``pretrain.json`` and Karpathy-style ``test.json``.

This lets the world feed any tool that reads ALBEF-format data; every file is written atomically.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskvlp.data.synthetic.world import SyntheticWorld
from maskvlp.files import atomic_write_bytes


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------
def _png_bytes(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def export_albef_json(world: SyntheticWorld, split: str, out_dir: str | Path, limit: int | None = None) -> tuple[Path, Path]:
    """Write a split as images plus ALBEF ``pretrain.json`` and Karpathy-style ``test.json``.

    pretrain.json: ``[{"image": "images/<id>.png", "caption": str}]``, one entry per caption.
    test.json: ``[{"image": "images/<id>.png", "caption": [str, ...]}]``, one entry per image.
    Image paths are relative to ``out_dir``. Returns ``(pretrain_json, test_json)``.
    """
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    total = world.num_scenes(split)
    scenes = [world.scene(split, i) for i in range(total if limit is None else min(limit, total))]
    pretrain: list[dict[str, str]] = []
    test: list[dict[str, Any]] = []
    for scene in scenes:
        rel = f"images/{scene.scene_id}.png"
        atomic_write_bytes(out / rel, _png_bytes(world.render(scene)))
        texts = [c.text for c in world.captions(scene)]
        pretrain.extend({"image": rel, "caption": t} for t in texts)
        test.append({"image": rel, "caption": texts})
    pretrain_path, test_path = out / "pretrain.json", out / "test.json"
    atomic_write_bytes(pretrain_path, json.dumps(pretrain, indent=1).encode("utf-8"))
    atomic_write_bytes(test_path, json.dumps(test, indent=1).encode("utf-8"))
    return pretrain_path, test_path
