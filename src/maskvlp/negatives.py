"""Rule-based hard negative captions: a caption with two attribute words of one kind exchanged, or a
spatial word replaced by its converse ("a red circle left of a blue square" -> "a blue circle left of a
red square" / "... right of ...").

Why: a random batch almost never holds two captions with the same words bound differently, so neither
ITC nor ITM is ever asked which object is red, and both learn a bag of words (Yuksekgonul et al., 2023,
"When and why vision-language models behave like bags-of-words", NegCLIP; Doveh et al., 2023, SVLC,
"Teaching Structured Vision&Language Concepts": rule-based negatives from attribute and relation word
lists). The perturbation works on token ids with a fixed list of common English words, so it needs no
parser and applies to any caption a user brings; a caption with nothing to perturb gets no negative.
Like NegCLIP's, a perturbed caption can by chance still be true of its image (a scene holding both a red
circle and a blue one, say); such rare false negatives are accepted, as there.

Words are matched whole: a word is a WordPiece token with its ``##`` continuations, so "reddish" is
not "red", and multi-piece words ("cyan" = cy ##an) are swapped as units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch

# Attribute words that describe one object; two of one kind in a caption are exchanged.
ATTRIBUTE_WORDS: dict[str, tuple[str, ...]] = {
    "colour": ("red", "green", "blue", "yellow", "purple", "cyan", "orange", "gray", "grey", "white", "black",
               "brown", "pink", "gold", "silver", "beige", "violet", "magenta", "turquoise", "maroon", "navy"),
    "size": ("small", "large", "big", "tiny", "little", "huge", "tall", "short", "long", "giant"),
    "material": ("metal", "metallic", "matte", "wooden", "plastic", "glass", "rubber", "shiny", "leather",
                 "stone", "paper", "ceramic", "fabric"),
}
# Spatial (and temporal) words and their converses; one is replaced by the other.
CONVERSE_WORDS: tuple[tuple[str, str], ...] = (
    ("left", "right"), ("above", "below"), ("over", "under"), ("top", "bottom"), ("inside", "outside"),
    ("before", "after"), ("larger", "smaller"), ("bigger", "smaller"), ("up", "down"), ("upwards", "downwards"),
)
# An objective's ``text_negatives`` parameter is "none" or "swap" (this module's perturbation); its valid
# values are declared with the objectives' parameters, maskvlp.config.objective_params.TEXT_NEGATIVES.


class _Tokenizer(Protocol):
    continuation_ids: frozenset[int]

    def tokenize(self, text: str) -> list[str]: ...
    def token_id(self, token: str) -> int: ...


Word = tuple[int, ...]


@dataclass(frozen=True)
class WordLexicon:
    """The word lists in a tokenizer's ids: which kind each attribute word is, and each converse."""

    kind: dict[Word, str]
    converse: dict[Word, Word]
    continuation: frozenset[int]  # ids of ``##`` pieces, which continue the word before them

    @classmethod
    def from_tokenizer(cls, tokenizer: _Tokenizer) -> "WordLexicon":
        def ids(word: str) -> Word:
            return tuple(tokenizer.token_id(piece) for piece in tokenizer.tokenize(word))

        kind = {ids(w): k for k, words in ATTRIBUTE_WORDS.items() for w in words}
        converse: dict[Word, Word] = {}
        for a, b in CONVERSE_WORDS:
            converse.setdefault(ids(a), ids(b))
            converse.setdefault(ids(b), ids(a))
        return cls(kind, converse, tokenizer.continuation_ids)


def split_words(ids: list[int], continuation: frozenset[int]) -> list[Word]:
    """Group ids into words: each id with the ``##`` continuation pieces after it."""
    words: list[list[int]] = []
    for i in ids:
        if words and i in continuation:
            words[-1].append(i)
        else:
            words.append([i])
    return [tuple(w) for w in words]


def perturb_caption(ids: list[int], lexicon: WordLexicon, generator: torch.Generator) -> list[int] | None:
    """One rule-based negative of a caption's ids, or None when no rule applies.

    The rule is drawn uniformly among those that apply (a swap per attribute kind with two different
    words of that kind; the converse of a spatial word), then the words uniformly within it.
    """
    words = split_words(ids, lexicon.continuation)
    by_kind: dict[str, list[int]] = {}
    for pos, w in enumerate(words):
        if w in lexicon.kind:
            by_kind.setdefault(lexicon.kind[w], []).append(pos)
    rules: list[list[tuple[int, int]]] = []  # each rule: its candidate edits
    for kind in sorted(by_kind):
        pos = by_kind[kind]
        pairs = [(p, q) for a, p in enumerate(pos) for q in pos[a + 1:] if words[p] != words[q]]
        if pairs:
            rules.append(pairs)
    spatial = [(p, p) for p, w in enumerate(words) if w in lexicon.converse]
    if spatial:
        rules.append(spatial)
    if not rules:
        return None
    edits = rules[int(torch.randint(len(rules), (1,), generator=generator))]
    p, q = edits[int(torch.randint(len(edits), (1,), generator=generator))]
    if p == q:
        words[p] = lexicon.converse[words[p]]
    else:
        words[p], words[q] = words[q], words[p]
    return [i for w in words for i in w]


def perturb_batch(input_ids: torch.Tensor, attention_mask: torch.Tensor, lexicon: WordLexicon,
                  row_generator: Callable[[int], torch.Generator], pad_id: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negatives of the rows that have one: (ids, mask) padded to their longest, and the bool rows they came from.

    ``row_generator(r)`` gives row r its own generator, so a row's negative does not depend on which
    other rows share its process (DDP draws what one process draws).
    """
    made: list[list[int]] = []
    valid = torch.zeros(input_ids.shape[0], dtype=torch.bool)
    for r, (row, m) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
        neg = perturb_caption([i for i, keep in zip(row, m) if keep], lexicon, row_generator(r))
        if neg is not None:
            made.append(neg)
            valid[r] = True
    width = max((len(n) for n in made), default=0)
    ids = torch.full((len(made), width), pad_id, dtype=input_ids.dtype)
    mask = torch.zeros((len(made), width), dtype=attention_mask.dtype)
    for r, neg in enumerate(made):
        ids[r, : len(neg)] = torch.tensor(neg, dtype=input_ids.dtype)
        mask[r, : len(neg)] = 1
    device = input_ids.device
    return ids.to(device), mask.to(device), valid.to(device)
