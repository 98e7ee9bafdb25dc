"""A procedural scene world whose captions can be checked against any image.

Real image-text data cannot say whether a caption of one image is also true of another, nor
whether a model knows *which* object is red. This world can: every scene is a small scene graph
(objects with shape, colour, size, material and a position), every caption keeps the structured
:class:`CaptionSpec` it was written from, and :func:`holds` decides exactly whether any spec is
true of any scene. That gives semantic retrieval ground truth (:func:`truth_matrix`), held-out
colour-shape pairs for compositional generalisation, and minimal-pair binding probes (a caption
and the same caption with two colours swapped or a relation reversed).

Everything is a pure function of ``(seed, split, index)`` so scenes, captions and pixels can be
recomputed anywhere. Coordinates are normalised to ``[0, 1]`` with ``y`` growing downwards
(image convention): "above" means a smaller ``y``.

One module per job; this package re-exports the public names, so import from
``maskvlp.data.synthetic``:

* :mod:`.vocabulary`: attribute values, relations, layout constants, shape outlines;
* :mod:`.scenes`: ``SceneObject``/``Scene``, held-out colour-shape pairs, object placement;
* :mod:`.truth`: caption specs, :func:`holds` and the vectorised :func:`truth_matrix`;
* :mod:`.text`: caption wording (:func:`realize`, :func:`caption_kind`);
* :mod:`.captions`: sampling true captions of a scene (:func:`write_captions`);
* :mod:`.probes`: binding probes (colour-swapped / relation-reversed twins);
* :mod:`.render`: drawing scenes to ``uint8`` images;
* :mod:`.world`: :class:`SyntheticWorld`, which ties them together per seed;
* :mod:`.export`: writing a split as ALBEF / Karpathy JSON plus PNGs;
* :mod:`.questions`: VQA-style questions with exact, balanced answers (:func:`write_questions`);
* :mod:`.statements`: NLVR2-style statements about scene pairs (:func:`write_statement`);
* :mod:`.referring`: referring expressions that pick exactly one object, and candidate boxes, for
  grounding (:func:`write_referring`, :func:`referents`, :func:`candidate_boxes`);
* :mod:`.motion`: clips of one moving object and motion twins (same first frame, opposite
  motion) for video-text retrieval (:class:`MotionClip`, ``SyntheticWorld.motion_clip``);
* :mod:`.task_export`: writing VQA v2, NLVR2, RefCOCO+, MSR-VTT and ALBEF task files plus PNGs
  (and video files for MSR-VTT).
"""
from __future__ import annotations

from maskvlp.data.synthetic.captions import write_captions
from maskvlp.data.synthetic.export import export_albef_json
from maskvlp.data.synthetic.motion import CLIP_FRAMES, DIRECTIONS, MotionClip
from maskvlp.data.synthetic.probes import BindingProbe, colour_swap, reverse_relation
from maskvlp.data.synthetic.referring import (
    ReferringExpression,
    candidate_boxes,
    confusers,
    object_box,
    referable,
    referents,
    write_referring,
)
from maskvlp.data.synthetic.questions import QUESTION_TYPES, Query, Question, answer_query, write_questions
from maskvlp.data.synthetic.render import render_scene
from maskvlp.data.synthetic.scenes import Scene, SceneObject, choose_heldout_pairs
from maskvlp.data.synthetic.statements import STATEMENT_KINDS, PairClaim, Statement, pair_label, write_statement
from maskvlp.data.synthetic.task_export import (
    export_albef_nlvr2,
    export_albef_vqa,
    export_karpathy_train,
    export_msrvtt,
    export_nlvr2,
    export_refcoco,
    export_vqa_v2,
    nlvr2_image_names,
)
from maskvlp.data.synthetic.text import NUM_STYLES, caption_kind, realize
from maskvlp.data.synthetic.truth import (
    Caption,
    CaptionSpec,
    ObjectDescription,
    holds,
    relation_holds,
    truth_matrix,
)
from maskvlp.data.synthetic.vocabulary import (
    ATTRIBUTES,
    COLOURS,
    CONVERSE,
    EDGE_GAP,
    LARGE_RADIUS,
    MATERIALS,
    MAX_OBJECTS,
    PLACEMENT_GAP,
    RADIUS_JITTER,
    RELATION_MARGIN,
    RELATIONS,
    SHAPES,
    SIZES,
    SMALL_RADIUS,
    SPLITS,
)
from maskvlp.data.synthetic.world import QUESTIONS_PER_SCENE, SyntheticWorld

__all__ = [
    "ATTRIBUTES",
    "CLIP_FRAMES",
    "COLOURS",
    "CONVERSE",
    "DIRECTIONS",
    "EDGE_GAP",
    "LARGE_RADIUS",
    "MATERIALS",
    "MAX_OBJECTS",
    "NUM_STYLES",
    "PLACEMENT_GAP",
    "QUESTIONS_PER_SCENE",
    "QUESTION_TYPES",
    "RADIUS_JITTER",
    "RELATIONS",
    "RELATION_MARGIN",
    "SHAPES",
    "SIZES",
    "SMALL_RADIUS",
    "SPLITS",
    "STATEMENT_KINDS",
    "BindingProbe",
    "Caption",
    "CaptionSpec",
    "MotionClip",
    "ObjectDescription",
    "PairClaim",
    "Query",
    "Question",
    "ReferringExpression",
    "Scene",
    "SceneObject",
    "Statement",
    "SyntheticWorld",
    "answer_query",
    "candidate_boxes",
    "caption_kind",
    "choose_heldout_pairs",
    "colour_swap",
    "confusers",
    "export_albef_json",
    "export_albef_nlvr2",
    "export_albef_vqa",
    "export_karpathy_train",
    "export_msrvtt",
    "export_nlvr2",
    "export_refcoco",
    "export_vqa_v2",
    "holds",
    "nlvr2_image_names",
    "object_box",
    "pair_label",
    "realize",
    "referable",
    "referents",
    "relation_holds",
    "render_scene",
    "reverse_relation",
    "truth_matrix",
    "write_captions",
    "write_questions",
    "write_referring",
    "write_statement",
]
