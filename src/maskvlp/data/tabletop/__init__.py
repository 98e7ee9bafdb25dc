"""The tabletop world: a second synthetic scene world, built independently of ``maskvlp.data.synthetic``.

Settings are chosen on the embedded world; this one exists so that a chosen setting can be checked
on pictures and captions that the embedded world's code never produced (docs/tabletop_world.md).
It imports nothing from ``maskvlp`` except ``maskvlp.files``.
"""
from maskvlp.data.tabletop.captions import Caption, write_captions
from maskvlp.data.tabletop.export import write_world
from maskvlp.data.tabletop.heldout import choose_heldout_pairs
from maskvlp.data.tabletop.layout import Item, Scene, sample_scene
from maskvlp.data.tabletop.probes import Probe, write_probes
from maskvlp.data.tabletop.relations import RELATIONS, converse, relation_holds, relations_between
from maskvlp.data.tabletop.render import render_scene
from maskvlp.data.tabletop.truth import Claim, Mention, is_true
from maskvlp.data.tabletop.vocab import ATTRIBUTES, COLOURS, PATTERNS, SHAPES, SIZES
from maskvlp.data.tabletop.wording import Wording, say
from maskvlp.data.tabletop.world import TabletopWorld

__all__ = [
    "ATTRIBUTES", "COLOURS", "Caption", "Claim", "Item", "Mention", "PATTERNS", "Probe", "RELATIONS", "SHAPES",
    "SIZES", "Scene", "TabletopWorld", "Wording", "choose_heldout_pairs", "converse", "is_true", "relation_holds",
    "relations_between", "render_scene", "sample_scene", "say", "write_captions", "write_probes", "write_world",
]
