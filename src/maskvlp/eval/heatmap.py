"""A Grad-CAM map drawn over its picture, for a person to look at (``maskvlp explain``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def overlay(image: np.ndarray, cam: torch.Tensor) -> np.ndarray:
    """(H, W, 3) uint8 picture with the (g, g) map, upsampled bilinearly and scaled to its own maximum, laid
    over it in a red-yellow palette (half opacity where the map is high, none where it is 0)."""
    h, w = image.shape[:2]
    heat = F.interpolate(cam[None, None].float(), size=(h, w), mode="bilinear", align_corners=False)[0, 0]
    heat = (heat / heat.max().clamp(min=1e-12)).clamp(0, 1).numpy()
    colour = np.stack([np.ones_like(heat), heat, np.zeros_like(heat)], -1) * 255  # red -> yellow
    alpha = 0.6 * heat[..., None]
    return (image.astype(np.float32) * (1 - alpha) + colour * alpha).round().astype(np.uint8)


def _save(fig, path: str | Path) -> Path:
    """Write a matplotlib figure atomically as a PNG and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path


def save_explanation(image: np.ndarray, cam: torch.Tensor, title: str, path: str | Path) -> Path:
    """The picture and the picture with its map, side by side, titled; written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 3.3))
    for ax, shown, label in ((axes[0], image, "image"), (axes[1], overlay(image, cam), "Grad-CAM (ITM)")):
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def save_grounding_grid(rows: list[dict], title: str, path: str | Path, columns: int = 4) -> Path:
    """Grounding at a glance: each row dict holds ``image`` (H, W, 3 uint8), ``cam`` (g, g), ``text``,
    ``truth`` and ``chosen`` boxes and ``candidates`` ([x, y, w, h] pixels), ``hit``. The map is laid over
    the picture; candidates are thin grey, the true box green, the chosen box white when it is a hit and
    red when not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    n = max(1, len(rows))
    cols = min(columns, n)
    lines = (n + cols - 1) // cols
    fig, axes = plt.subplots(lines, cols, figsize=(2.6 * cols, 2.9 * lines), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows):
        ax.imshow(overlay(row["image"], row["cam"]), interpolation="nearest")
        for box in row["candidates"]:
            ax.add_patch(Rectangle(box[:2], box[2], box[3], fill=False, lw=0.6, ec="0.7", ls="--"))
        ax.add_patch(Rectangle(row["truth"][:2], row["truth"][2], row["truth"][3], fill=False, lw=1.6, ec="lime"))
        chosen = row["chosen"]
        ax.add_patch(Rectangle(chosen[:2], chosen[2], chosen[3], fill=False, lw=1.2, ec="white" if row["hit"] else "red"))
        ax.set_title(row["text"], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
