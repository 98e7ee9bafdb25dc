"""``TabletopWorld``: one seed's scenes, captions, probes and pictures, each from its own generator."""
from __future__ import annotations

import numpy as np

from maskvlp.data.tabletop.captions import CAPTIONS_PER_SCENE, Caption, write_captions
from maskvlp.data.tabletop.heldout import choose_heldout_pairs
from maskvlp.data.tabletop.layout import SPLITS, Scene, sample_scene
from maskvlp.data.tabletop.probes import Probe, write_probes
from maskvlp.data.tabletop.render import render_scene

CAPTION_STREAM, PROBE_STREAM = 2, 3  # per-scene generator streams (the scene graph uses 1)


class TabletopWorld:
    """Scenes are keyed by (seed, split, index): same seed, same scenes, captions and pixels."""

    def __init__(self, seed: int = 0, image_size: int = 64, heldout_pairs: int = 3, supersample: int = 4) -> None:
        self.seed = seed
        self.image_size = image_size
        self.supersample = supersample
        self.heldout_pairs = choose_heldout_pairs(seed, heldout_pairs)

    def _rng(self, scene: Scene, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[scene.split], scene.index, stream])

    def scene(self, split: str, index: int) -> Scene:
        return sample_scene(self.seed, split, index, self.heldout_pairs)

    def captions(self, scene: Scene, num: int = CAPTIONS_PER_SCENE) -> list[Caption]:
        return write_captions(scene, self._rng(scene, CAPTION_STREAM), num)

    def probes(self, scene: Scene) -> list[Probe]:
        return write_probes(scene, self._rng(scene, PROBE_STREAM))

    def names_heldout(self, probe: Probe) -> bool:
        """Whether the probe's true text names a held-out colour-shape pair: the picture shows a combination
        never seen in training, so a model that learned which pairs exist (rather than which object has
        which colour) scores the true text low. Only the false text naming one would reward that shortcut."""
        return bool(probe.true_claim.named_pairs() & set(self.heldout_pairs))

    def render(self, scene: Scene) -> np.ndarray:
        return render_scene(scene, self.image_size, self.supersample)
