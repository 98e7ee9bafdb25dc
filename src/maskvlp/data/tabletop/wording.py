"""Turning a claim into words: noun phrases, relation phrases and sentence templates.

A ``Wording`` fixes every free choice, so a claim and its altered twin (a binding probe) can be
said in exactly the same words apart from the altered part.
"""
from __future__ import annotations

from dataclasses import dataclass

from maskvlp.data.tabletop.relations import family
from maskvlp.data.tabletop.truth import Claim, Mention
from maskvlp.data.tabletop.vocab import NUMBER_WORDS, PLURALS

PATTERN_AFTER = {"plain": "with no pattern", "striped": "with stripes", "dotted": "with dots"}
HEADS = ("shape", "thing")  # head noun when the shape is not named
# noun-phrase orders: 0 "a big striped teal heart", 1 "a big teal heart with stripes",
# 2 "a big heart in teal with stripes"
NP_ORDERS = 3

# Three phrasings per relation, aligned so that phrasing k of a relation and of its converse match.
REL_PHRASES: dict[str, tuple[str, str, str]] = {
    "left of": ("to the left of", "left of", "on the left side of"),
    "right of": ("to the right of", "right of", "on the right side of"),
    "over": ("above", "higher up than", "over"),
    "beneath": ("beneath", "lower down than", "under"),
    "bigger than": ("bigger than", "larger than", "bigger than"),
    "smaller than": ("smaller than", "tinier than", "smaller than"),
    "nearer the centre than": ("nearer the centre than", "closer to the middle than", "more central than"),
    "farther from the centre than": ("farther from the centre than", "further from the middle than",
                                     "less central than"),
}
FRONTED = {"left of": "left of", "right of": "right of", "over": "above", "beneath": "beneath"}
PRONOUN = {"left of": "to its left", "right of": "to its right", "over": "above it", "beneath": "beneath it"}

# {a}/{b}: indefinite noun phrases of mentions 0/1; {A}/{B}: the same without the article (after
# "the"); {rel}: relation phrase; {front}, {pron}: spatial forms; {bare}: phrase without "than".
RELATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "spatial": ("{a} {rel} {b}", "there is {a} {rel} {b}", "the {A} is {rel} the {B}", "{a} sits {rel} {b}",
                "{front} the {B} is {a}", "{b} with {a} {pron}"),
    "compare": ("{a} {rel} {b}", "there is {a} {rel} {b}", "the {A} is {rel} the {B}", "{a} that is {rel} {b}",
                "compared with the {B}, the {A} is {bare}"),
}
SINGLE_TEMPLATES = ("{a}", "there is {a}", "{a} is on the table", "the picture shows {a}",
                    "somewhere on the table lies {a}", "you can spot {a} here")
PAIR_TEMPLATES = ("{a} and {b}", "{a} along with {b}", "there is {a} and also {b}", "the table has {a} and {b} on it",
                  "both {a} and {b} can be seen")
COUNT_TEMPLATES = ("{c}", "there {be} {c}", "i count {c}", "{c} in all", "exactly {c}")
INVENTORY_TEMPLATES = ("only {l}", "{l} and nothing else", "{n}: {l}", "the table holds just {l}",
                       "just {l} on the table")

TEMPLATES: dict[str, tuple[str, ...]] = {"single": SINGLE_TEMPLATES, "pair": PAIR_TEMPLATES, "count": COUNT_TEMPLATES,
                                         "inventory": INVENTORY_TEMPLATES}


@dataclass(frozen=True)
class Wording:
    """Every free choice of a sentence: template, noun-phrase order, phrasing, head noun."""

    template: int = 0
    order: int = 0
    phrase: int = 0
    head: int = 0


def article(phrase: str) -> str:
    first = phrase.split()[0]
    return ("an " if first[0] in "aeiou" or first == "hourglass" else "a ") + phrase


def bare_phrase(m: Mention, order: int, head: int) -> str:
    """The mention as a noun phrase without article: "big striped teal heart"."""
    words = [m.size] if m.size else []
    if m.pattern and order == 0:
        words.append(m.pattern)
    if m.colour and order != 2:
        words.append(m.colour)
    words.append(m.shape or HEADS[head % len(HEADS)])
    if m.colour and order == 2:
        words.append(f"in {m.colour}")
    if m.pattern and order != 0:
        words.append(PATTERN_AFTER[m.pattern])
    return " ".join(words)


def template_for(claim: Claim, wording: Wording) -> str:
    if claim.kind == "relation":
        assert claim.relation is not None
        options = RELATION_TEMPLATES["spatial" if family(claim.relation) in ("side", "level") else "compare"]
    else:
        options = TEMPLATES[claim.kind]
    return options[wording.template % len(options)]


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _group(m: Mention, n: int, wording: Wording, numeral: bool) -> str:
    """"two hearts", "a ring" or "one ring", "three teal shapes"."""
    head = m.shape or HEADS[wording.head % len(HEADS)]
    lead = f"{m.colour} " if m.colour else ""
    if n == 1:
        return ("one " + lead + head) if numeral or wording.phrase % 2 else article(lead + head)
    return f"{NUMBER_WORDS[n]} {lead}{PLURALS.get(head, head + 's')}"


def say(claim: Claim, wording: Wording) -> str:
    """The claim in words, as ``wording`` chooses."""
    template = template_for(claim, wording)
    np = [bare_phrase(m, wording.order, wording.head) for m in claim.mentions]
    if claim.kind == "count":
        # "one arrow in all", never "an arrow in all"
        numeral = template.startswith("exactly") or len(claim.mentions) == 1
        groups = [_group(m, n, wording, numeral) for m, n in zip(claim.mentions, claim.counts)]
        return template.format(c=_join(groups), be="is" if claim.counts[0] == 1 else "are")
    if claim.kind == "inventory":
        total = claim.total or len(np)
        things = f"{NUMBER_WORDS[total]} {'thing' if total == 1 else 'things'}"
        return template.format(l=_join([article(p) for p in np]), n=things)
    fields = {"a": article(np[0]), "A": np[0]}
    if len(np) > 1:
        fields |= {"b": article(np[1]), "B": np[1]}
    if claim.relation is not None:
        rel = REL_PHRASES[claim.relation][wording.phrase % 3]
        fields |= {"rel": rel, "bare": rel.removesuffix(" than"), "front": FRONTED.get(claim.relation, ""),
                   "pron": PRONOUN.get(claim.relation, "")}
    return template.format(**fields)
