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


def save_explanation(image: np.ndarray, cam: torch.Tensor, title: str, path: str | Path) -> Path:
    """The picture and the picture with its map, side by side, titled; written atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3.3))
    for ax, shown, label in ((axes[0], image, "image"), (axes[1], overlay(image, cam), "Grad-CAM (ITM)")):
        ax.imshow(shown, interpolation="nearest")
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
