"""VQA-style questions about one scene, answered from its scene graph and balanced against blind guessing.

Every question keeps the structured :class:`Query` it was written from, and its canonical answer
is :func:`answer_query` of that query on the scene (built on :mod:`.truth`), so answers are exact.

A question set is only useful if the picture is needed to answer it, so the sampling is balanced
per wording: yes/no questions decide "yes" or "no" by a coin flip before the question is drawn;
attribute questions ask about an object picked without looking at the asked attribute (which the
world draws independently of the others, so the answer is near-uniform given the words); counts
and existence questions draw a description from a fixed list, weighed by a keep probability that
turns the answer's distribution, given the description and the scene's object count (visible in
the picture, never in the words), into a fixed target: uniform for existence, favouring larger
counts for counts. That needs the world's prior of how many objects match a description, which
:func:`_count_prior` computes exactly from how scenes are drawn.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Callable, Collection, Sequence

import numpy as np

from maskvlp.data.synthetic.captions import _describe, _related_pairs
from maskvlp.data.synthetic.scenes import Scene, SceneObject, _pick
from maskvlp.data.synthetic.text import _REL_PHRASE, _words
from maskvlp.data.synthetic.truth import ObjectDescription, relation_holds
from maskvlp.data.synthetic.vocabulary import ATTRIBUTES, COLOURS, CONVERSE, MAX_OBJECTS, SHAPES

QUESTION_TYPES = ("colour", "shape", "size", "material", "count", "exist", "relation", "compositional")
NUM_HUMAN_ANSWERS = 10  # as in VQA v2

HeldoutPairs = Collection[tuple[str, str]]


# --------------------------------------------------------------------------------------------
# Questions and their answers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Query:
    """What a question asks, structured so its answer can be recomputed from any scene graph.

    ``op``: "attribute" (``attribute`` of the one object matching ``subject``), "count" (objects
    matching ``subject``), "exist" (any object matching ``subject``), "relate" (is the one
    ``subject`` object ``relation`` the one ``ground`` object) or "related_attribute"
    (``attribute`` of the one object that is ``relation`` the one ``ground`` object).
    """

    op: str
    subject: ObjectDescription = ObjectDescription()
    attribute: str | None = None
    relation: str | None = None
    ground: ObjectDescription | None = None


@dataclass(frozen=True)
class Question:
    """A question, its canonical answer, ten human-style answers and the query it was written from."""

    text: str
    answer: str
    answers: tuple[str, ...]
    question_type: str  # one of QUESTION_TYPES
    answer_type: str  # "yes/no" | "number" | "other", as in VQA v2
    heldout: bool  # the question's objects or descriptions involve a held-out colour-shape pair
    query: Query


def _only(desc: ObjectDescription, objects: Sequence[SceneObject]) -> SceneObject | None:
    """The single object matching ``desc``, or None when none or several do."""
    found = [o for o in objects if desc.matches(o)]
    return found[0] if len(found) == 1 else None


def answer_query(query: Query, scene: Scene) -> str | None:
    """The canonical answer of ``query`` on ``scene``; None when a referent is missing or not unique."""
    objs = scene.objects
    if query.op == "count":
        return str(sum(query.subject.matches(o) for o in objs))
    if query.op == "exist":
        return "yes" if any(query.subject.matches(o) for o in objs) else "no"
    if query.op == "attribute":
        obj = _only(query.subject, objs)
        return None if obj is None or query.attribute is None else str(getattr(obj, query.attribute))
    if query.ground is None or query.relation is None:
        raise ValueError(f"a {query.op!r} query needs a relation and a ground")
    ground = _only(query.ground, objs)
    if ground is None:
        return None
    if query.op == "relate":
        subject = _only(query.subject, objs)
        if subject is None or subject is ground:
            return None
        return "yes" if relation_holds(query.relation, subject, ground) else "no"
    if query.op == "related_attribute" and query.attribute is not None:
        related = [o for o in objs if o is not ground and query.subject.matches(o)
                   and relation_holds(query.relation, o, ground)]
        return str(getattr(related[0], query.attribute)) if len(related) == 1 else None
    raise ValueError(f"unknown query op {query.op!r}")


def _involved(query: Query, scene: Scene) -> list[SceneObject]:
    """The objects a question is about: its referents, or everything it counts."""
    objs = scene.objects
    if query.op in ("count", "exist", "attribute"):
        return [o for o in objs if query.subject.matches(o)]
    assert query.ground is not None and query.relation is not None
    ground = [o for o in objs if query.ground.matches(o)]
    subject = [o for o in objs if query.subject.matches(o)
               and (query.op == "relate" or any(relation_holds(query.relation, o, g) for g in ground))]
    return ground + subject


def _names_pair(desc: ObjectDescription | None, pairs: HeldoutPairs) -> bool:
    return desc is not None and (desc.colour, desc.shape) in pairs


def _touches_heldout(objects: Sequence[SceneObject], descs: Sequence[ObjectDescription | None],
                     pairs: HeldoutPairs) -> bool:
    """Whether any object is a held-out pair or any description names one."""
    return any((o.colour, o.shape) in pairs for o in objects) or any(_names_pair(d, pairs) for d in descs)


# --------------------------------------------------------------------------------------------
# Human answers
# --------------------------------------------------------------------------------------------
_DISSENTERS = (0, 0, 0, 1, 1, 2, 3)  # wrong answers per question: agreement as in VQA v2, mostly
_VARIANTS = (0, 0, 1, 1, 2)  # answers written differently that the official normalisation equates
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _equivalent_forms(answer: str, answer_type: str) -> tuple[str, ...]:
    """Spellings the official VQA normalisation maps to ``answer`` (case, punctuation, articles,
    number words); never a different word such as "grey" for "gray", which it keeps apart."""
    if answer_type == "number":
        n = int(answer)
        words = ("zero", "none") if n == 0 else (_NUMBER_WORDS[n],) if n < len(_NUMBER_WORDS) else ()
        return words + (f"{n}.",)
    if answer_type == "yes/no":
        return (answer.capitalize(), f"{answer}.", f"{answer.capitalize()}!")
    if answer in SHAPES:
        return (f"a {answer}", f"the {answer}", answer.capitalize())
    return (answer.capitalize(), f"{answer}.")


def _wrong_answers(answer: str, answer_type: str, attribute: str | None) -> tuple[str, ...]:
    """Plausible mistakes: the other yes/no, a count off by one, another value of the attribute."""
    if answer_type == "yes/no":
        return ("no",) if answer == "yes" else ("yes",)
    if answer_type == "number":
        n = int(answer)
        return tuple(str(k) for k in (n - 1, n + 1) if k >= 0)
    assert attribute is not None
    return tuple(v for v in ATTRIBUTES[attribute] if v != answer)


def _human_answers(answer: str, answer_type: str, attribute: str | None, rng: np.random.Generator) -> tuple[str, ...]:
    """Ten answers: the canonical one (always a strict majority of the raw strings, at least 5 of
    10), a few equivalent spellings, and 0-3 wrong ones so the soft VQA score is exercised."""
    dissent = _pick(rng, _DISSENTERS)
    variants = _pick(rng, _VARIANTS)
    forms, wrong = _equivalent_forms(answer, answer_type), _wrong_answers(answer, answer_type, attribute)
    out = ([answer] * (NUM_HUMAN_ANSWERS - dissent - variants) + [_pick(rng, forms) for _ in range(variants)]
           + [_pick(rng, wrong) for _ in range(dissent)])
    return tuple(out[int(k)] for k in rng.permutation(len(out)))


# --------------------------------------------------------------------------------------------
# Priors: how often a description matches, so answers can be balanced per wording
# --------------------------------------------------------------------------------------------
_FLOOR = 0.02  # answers rarer than this (given the wording and object count) are never asked for
_RATE = 0.05  # the acceptance rate every wording gets where it can (the narrowest ones reach ~0.05)


def _pair_pools(forced: bool, pairs: frozenset[tuple[str, str]]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """(colour, shape) pools objects are drawn from, as ``SyntheticWorld.scene`` draws them: in the
    heldout split one forced object from the held-out pairs and the rest from all pairs, elsewhere
    every object from the seen pairs."""
    everything = tuple((c, s) for c in COLOURS for s in SHAPES)
    if forced:
        return tuple(sorted(pairs)), everything
    return (tuple(p for p in everything if p not in pairs),)


@functools.lru_cache(maxsize=None)
def _match_probabilities(desc: ObjectDescription, forced: bool, pairs: frozenset[tuple[str, str]]) -> tuple[float, float]:
    """P(a scene's first-drawn object matches ``desc``), P(any other does): they differ where the
    heldout split forces one held-out pair in (size and material are uniform and independent)."""
    out = []
    for pool in (_pair_pools(forced, pairs)[0], _pair_pools(forced, pairs)[-1]):
        p = sum(desc.colour in (None, c) and desc.shape in (None, s) for c, s in pool) / len(pool)
        for name in ("size", "material"):
            if getattr(desc, name) is not None:
                p /= len(ATTRIBUTES[name])
        out.append(p)
    return out[0], out[1]


@functools.lru_cache(maxsize=None)
def _count_prior(desc: ObjectDescription, forced: bool, pairs: frozenset[tuple[str, str]]) -> np.ndarray:
    """float [MAX_OBJECTS, MAX_OBJECTS + 1]: row ``n - 1`` is P(exactly k of a scene's ``n``
    objects match ``desc``), k = 0..MAX_OBJECTS.

    Exact for the world's sampling (objects independent given their number) except for the rare
    large object shrunk to small when it cannot be placed. Cached and read-only.
    """
    first, other = _match_probabilities(desc, forced, pairs)
    out = np.zeros((MAX_OBJECTS, MAX_OBJECTS + 1))
    dist = np.ones(1)
    for n in range(1, MAX_OBJECTS + 1):
        p = first if n == 1 else other
        dist = np.convolve(dist, [1.0 - p, p])
        out[n - 1, : n + 1] = dist
    out.flags.writeable = False
    return out


def _keep_table(dists: np.ndarray, min_answers: int, weights: Sequence[float] = ()) -> np.ndarray:
    """float [conditions, answers]: per condition (e.g. object count), the probability of keeping
    a drawn question with each answer, from ``dists`` [conditions, answers], its prior.

    Answers with prior >= :data:`_FLOOR` are "askable"; conditions with fewer than ``min_answers``
    askable answers are dropped (a yes/no wording that is almost always "yes" is never asked). The
    keep probability ``scale * target / prior`` turns the prior into the target distribution
    (askable answers in proportion to ``weights[answer]``, equal when not given) in every condition,
    with the same acceptance rate ``scale`` in each, so a blind guesser, who cannot see the
    condition, learns only the target from the wording. ``scale`` is :data:`_RATE` unless the table
    cannot reach it, so broad wordings ("how many objects", always keepable) are not kept more
    often than narrow ones.
    """
    answers = dists.shape[1]
    w = np.array([weights[min(a, len(weights) - 1)] for a in range(answers)]) if weights else np.ones(answers)
    askable = dists >= _FLOOR
    askable &= (askable.sum(axis=1) >= min_answers)[:, None]
    target = np.where(askable, w, 0.0)
    target /= np.maximum(target.sum(axis=1, keepdims=True), 1e-300)
    safe = np.where(askable, dists, 1.0)
    scale = min(_RATE, float(np.min(safe / np.where(askable, target, 1e-300))))
    table = np.where(askable, scale * target / safe, 0.0)
    table.flags.writeable = False
    return table


@functools.lru_cache(maxsize=None)
def _count_keep(desc: ObjectDescription, forced: bool, pairs: frozenset[tuple[str, str]]) -> np.ndarray:
    """Keep probabilities of "how many <desc>", row ``n - 1`` for ``n`` objects."""
    return _keep_table(_count_prior(desc, forced, pairs), 1, _COUNT_WEIGHTS)


@functools.lru_cache(maxsize=None)
def _exist_keep(desc: ObjectDescription, forced: bool, pairs: frozenset[tuple[str, str]]) -> np.ndarray:
    """Keep probabilities of "is there a <desc>" (answer 0 = no, 1 = yes), row ``n - 1`` for ``n`` objects."""
    none = _count_prior(desc, forced, pairs)[:, 0]
    return _keep_table(np.stack([none, 1.0 - none], axis=1), 2)


# Descriptions counted or asked about, drawn without looking at the scene (attribute-name sets).
# Counting uses broad ones (a narrow one, "how many red circles", is 0 or 1: an existence question).
_COUNT_CLASSES: tuple[tuple[str, ...], ...] = (
    (), ("shape",), ("colour",), ("size",), ("material",), ("size", "material"), ("size", "shape"),
)
_EXIST_CLASSES: tuple[tuple[str, ...], ...] = (
    ("shape",), ("colour",), ("size",), ("material",),
    ("size", "shape"), ("colour", "shape"), ("material", "shape"), ("size", "colour"),
)
# Target weight of answer 0, 1, 2, 3+ among a count wording's askable answers: small scenes only
# allow small counts, so large ones are favoured where possible to keep 0..3 comparably frequent.
_COUNT_WEIGHTS = (1.0, 1.0, 2.0, 4.0)


def _descriptions(classes: tuple[tuple[str, ...], ...]) -> tuple[tuple[ObjectDescription, ...], np.ndarray]:
    """Every description of the attribute-name classes and its draw probability (a class, then its
    values, uniformly): the fixed distribution wordings come from, never looking at a scene."""
    descs, weights = [], []
    for names in classes:
        combos = list(itertools.product(*(ATTRIBUTES[n] for n in names)))
        descs.extend(ObjectDescription(**dict(zip(names, combo))) for combo in combos)
        weights.extend([1.0 / len(classes) / len(combos)] * len(combos))
    return tuple(descs), np.array(weights)


@functools.lru_cache(maxsize=None)
def _description_codes(descs: tuple[ObjectDescription, ...]) -> np.ndarray:
    """int [D, len(ATTRIBUTES)]: each description's value index per attribute, -1 for "any"."""
    return np.array([[-1 if getattr(d, n) is None else ATTRIBUTES[n].index(getattr(d, n)) for n in ATTRIBUTES]
                     for d in descs], dtype=int).reshape(len(descs), len(ATTRIBUTES))


def _match_matrix(descs: tuple[ObjectDescription, ...], scene: Scene) -> np.ndarray:
    """bool [D, M]: ``descs[d].matches(scene.objects[m])``, vectorised."""
    objects = np.array([[ATTRIBUTES[n].index(getattr(o, n)) for n in ATTRIBUTES] for o in scene.objects],
                       dtype=int).reshape(len(scene.objects), len(ATTRIBUTES))
    codes = _description_codes(descs)[:, None, :]
    return ((codes < 0) | (codes == objects[None, :, :])).all(axis=2)


@functools.lru_cache(maxsize=None)
def _naming_heldout(descs: tuple[ObjectDescription, ...], pairs: frozenset[tuple[str, str]]) -> np.ndarray:
    """bool [D]: descriptions that name a held-out pair (never used outside the heldout split,
    where held-out pairs are not mentioned, not even as absent)."""
    return np.array([_names_pair(d, pairs) for d in descs], dtype=bool)


def _draw_index(weights: np.ndarray, rng: np.random.Generator) -> int | None:
    """An index drawn with probability proportional to ``weights``; None when they are all zero."""
    cumulative = np.cumsum(weights)
    if len(cumulative) == 0 or cumulative[-1] <= 0:
        return None
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(weights) - 1)


_COUNT_DESCRIPTIONS, _COUNT_DRAW = _descriptions(_COUNT_CLASSES)
_EXIST_DESCRIPTIONS, _EXIST_DRAW = _descriptions(_EXIST_CLASSES)


@functools.lru_cache(maxsize=None)
def _question_keep(kind: str, forced: bool, pairs: frozenset[tuple[str, str]]) -> np.ndarray:
    """float [D, MAX_OBJECTS, answers]: the keep table of every count / existence description."""
    if kind == "count":
        return np.stack([_count_keep(d, forced, pairs) for d in _COUNT_DESCRIPTIONS])
    return np.stack([_exist_keep(d, forced, pairs) for d in _EXIST_DESCRIPTIONS])


def _description_weights(kind: str, ctx: _Context, answers: np.ndarray) -> np.ndarray:
    """float [D]: draw probability times keep probability of each description with its answer here
    (what drawing descriptions and keeping each with its keep probability until one is kept gives)."""
    descs, draw = (_COUNT_DESCRIPTIONS, _COUNT_DRAW) if kind == "count" else (_EXIST_DESCRIPTIONS, _EXIST_DRAW)
    n = len(ctx.scene.objects)
    keep = _question_keep(kind, ctx.forced, ctx.pairs)
    if n > keep.shape[1]:  # a hand-built scene larger than the world makes
        return np.zeros(len(descs))
    weights = draw * keep[np.arange(len(descs)), n - 1, answers]
    if not ctx.forced:
        weights[_naming_heldout(descs, ctx.pairs)] = 0.0
    return weights


def _plural(desc: ObjectDescription) -> str:
    """'red circles', 'crosses', 'objects'."""
    words = _words(desc)
    return words + ("es" if words.endswith("s") else "s")


def _indefinite(desc: ObjectDescription) -> str:
    words = _words(desc)
    return ("an " if words[0] in "aeiou" else "a ") + words


# --------------------------------------------------------------------------------------------
# Question writing
# --------------------------------------------------------------------------------------------
_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("what colour is the {d}?", "what is the colour of the {d}?", "which colour does the {d} have?"),
    "shape": ("what shape is the {d}?", "what is the shape of the {d}?", "which shape does the {d} have?"),
    "size": ("what size is the {d}?", "is the {d} small or large?", "how big is the {d}?"),
    "material": ("what material is the {d}?", "is the {d} matte or metal?", "what is the {d} made of?"),
    "count": ("how many {ds} are there?", "how many {ds} are in the picture?", "what is the number of {ds}?",
              "how many {ds} can you see?"),
    "exist": ("is there {a}?", "are there any {ds}?", "does the picture contain {a}?", "can you see {a}?"),
    "relate": ("is the {d} {rel} the {g}?", "does the {d} appear {rel} the {g}?", "is the {d} placed {rel} the {g}?"),
    "related_shape": ("what is {rel} the {g}?", "which shape is {rel} the {g}?", "what can you see {rel} the {g}?"),
    "compositional_colour": ("what colour is the object {rel} the {g}?", "what is the colour of the thing {rel} the {g}?",
                             "which colour does the object {rel} the {g} have?"),
    "compositional_shape": ("what shape is the object {rel} the {g}?", "what is the shape of the thing {rel} the {g}?",
                            "which shape does the object {rel} the {g} have?"),
}


@dataclass(frozen=True)
class _Context:
    """One scene being asked about, with what the balancing needs to know about its split."""

    scene: Scene
    pairs: frozenset[tuple[str, str]]

    @property
    def forced(self) -> bool:
        """Whether the scene was drawn as the heldout split draws (one held-out pair forced in)."""
        return self.scene.split == "heldout" and bool(self.pairs)

    def question(self, text: str, query: Query, question_type: str, answer_type: str,
                 rng: np.random.Generator) -> Question | None:
        """The question with its answer computed from the scene graph; None when it has none."""
        answer = answer_query(query, self.scene)
        if answer is None:
            return None
        attribute = query.attribute if answer_type == "other" else None
        heldout = _touches_heldout(_involved(query, self.scene), (query.subject, query.ground), self.pairs)
        return Question(text, answer, _human_answers(answer, answer_type, attribute, rng), question_type,
                        answer_type, heldout, query)


def _unique_description(obj: SceneObject, scene: Scene, allowed: Sequence[str],
                        rng: np.random.Generator) -> ObjectDescription | None:
    """A description from ``allowed`` attributes that only ``obj`` matches: a random start, then
    more attributes in random order (so the words do not depend on the asked attribute)."""
    order = [allowed[int(k)] for k in rng.permutation(len(allowed))]
    start = int(rng.integers(len(order) + 1))
    for stop in range(start, len(order) + 1):
        desc = _describe(obj, order[:stop])
        if _only(desc, scene.objects) is obj:
            return desc
    return None


def _attribute_question(ctx: _Context, rng: np.random.Generator, attribute: str) -> Question | None:
    obj = _pick(rng, ctx.scene.objects)
    desc = _unique_description(obj, ctx.scene, [n for n in ATTRIBUTES if n != attribute], rng)
    if desc is None:
        return None
    text = _pick(rng, _TEMPLATES[attribute]).format(d=_words(desc))
    return ctx.question(text, Query("attribute", desc, attribute), attribute, "other", rng)


def _count_question(ctx: _Context, rng: np.random.Generator) -> Question | None:
    descs = _COUNT_DESCRIPTIONS
    counts = _match_matrix(descs, ctx.scene).sum(axis=1)
    index = _draw_index(_description_weights("count", ctx, counts), rng)
    if index is None:
        return None
    text = _pick(rng, _TEMPLATES["count"]).format(ds=_plural(descs[index]))
    return ctx.question(text, Query("count", descs[index]), "count", "number", rng)


def _exist_question(ctx: _Context, rng: np.random.Generator) -> Question | None:
    """Yes or no by a coin flip, then a description with that answer (present or absent)."""
    want = int(rng.random() < 0.5)
    descs = _EXIST_DESCRIPTIONS
    present = _match_matrix(descs, ctx.scene).any(axis=1).astype(int)
    index = _draw_index(np.where(present == want, _description_weights("exist", ctx, present), 0.0), rng)
    if index is None:
        return None
    text = _pick(rng, _TEMPLATES["exist"]).format(a=_indefinite(descs[index]), ds=_plural(descs[index]))
    return ctx.question(text, Query("exist", descs[index]), "exist", "yes/no", rng)


def _relate_question(ctx: _Context, rng: np.random.Generator) -> Question | None:
    """"Is the A <rel> the B?": a true relation or its converse, by a coin flip (converses are
    never both true, and mirror symmetry makes each wording equally often yes and no)."""
    related = _related_pairs(ctx.scene)
    if not related:
        return None
    a, b, predicate = _pick(rng, related)
    objs, names = ctx.scene.objects, list(ATTRIBUTES)
    da, db = _unique_description(objs[a], ctx.scene, names, rng), _unique_description(objs[b], ctx.scene, names, rng)
    if da is None or db is None:
        return None
    asked = predicate if rng.random() < 0.5 else CONVERSE[predicate]
    if rng.random() < 0.5:  # the same claim from the other object's side
        da, db, asked = db, da, CONVERSE[asked]
    text = _pick(rng, _TEMPLATES["relate"]).format(d=_words(da), rel=_REL_PHRASE[asked], g=_words(db))
    return ctx.question(text, Query("relate", da, relation=asked, ground=db), "relation", "yes/no", rng)


def _single_related(scene: Scene) -> list[tuple[int, int, str]]:
    """(target, ground, predicate) where the target is the only object ``predicate`` the ground."""
    objs = scene.objects
    out = []
    for g, ground in enumerate(objs):
        for predicate in CONVERSE:
            targets = [t for t, o in enumerate(objs) if t != g and relation_holds(predicate, o, ground)]
            if len(targets) == 1:
                out.append((targets[0], g, predicate))
    return out


def _related_attribute_question(ctx: _Context, rng: np.random.Generator, attribute: str,
                                template: str, question_type: str) -> Question | None:
    candidates = _single_related(ctx.scene)
    if not candidates:
        return None
    _, g, predicate = _pick(rng, candidates)
    ground = _unique_description(ctx.scene.objects[g], ctx.scene, list(ATTRIBUTES), rng)
    if ground is None:
        return None
    text = _pick(rng, _TEMPLATES[template]).format(rel=_REL_PHRASE[predicate], g=_words(ground))
    query = Query("related_attribute", attribute=attribute, relation=predicate, ground=ground)
    return ctx.question(text, query, question_type, "other", rng)


def _relation_question(ctx: _Context, rng: np.random.Generator) -> Question | None:
    if rng.random() < 0.5:
        return _relate_question(ctx, rng)
    return _related_attribute_question(ctx, rng, "shape", "related_shape", "relation")


def _compositional_question(ctx: _Context, rng: np.random.Generator) -> Question | None:
    attribute = "colour" if rng.random() < 0.5 else "shape"
    return _related_attribute_question(ctx, rng, attribute, f"compositional_{attribute}", "compositional")


_MAKERS: dict[str, Callable[[_Context, np.random.Generator], Question | None]] = {
    "colour": functools.partial(_attribute_question, attribute="colour"),
    "shape": functools.partial(_attribute_question, attribute="shape"),
    "size": functools.partial(_attribute_question, attribute="size"),
    "material": functools.partial(_attribute_question, attribute="material"),
    "count": _count_question,
    "exist": _exist_question,
    "relation": _relation_question,
    "compositional": _compositional_question,
}


def write_questions(scene: Scene, num: int, rng: np.random.Generator, heldout_pairs: HeldoutPairs,
                    attempts: int = 16) -> list[Question]:
    """Up to ``num`` questions with distinct texts; the question types cycle in a random order.

    A type the scene cannot support (a relation in a one-object scene) passes to the next. The
    first ``k`` questions do not depend on ``num``, so asking for more only appends.
    ``heldout_pairs`` are the world's: they set each question's ``heldout`` flag, are named only
    in the heldout split, and shape the priors the balancing uses.
    """
    if not scene.objects:
        return []
    ctx = _Context(scene, frozenset(heldout_pairs))
    order = [QUESTION_TYPES[int(k)] for k in rng.permutation(len(QUESTION_TYPES))]
    texts: set[str] = set()
    out: list[Question] = []
    for slot in range(num):
        for attempt in range(attempts):
            question = _MAKERS[order[(slot + attempt) % len(order)]](ctx, rng)
            if question is not None and question.text not in texts:
                texts.add(question.text)
                out.append(question)
                break
    return out

