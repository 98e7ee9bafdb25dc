"""BERT-style text encoder, written over the shared :class:`Block` so BERT checkpoints load into it.

After :func:`maskvlp.models.pretrained.load_bert_into` its output equals Hugging Face
``BertModel(...).last_hidden_state`` at the real-token positions.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maskvlp.config import TextConfig
from maskvlp.models.transformer import Block, Packing, init_weights


class TextEncoder(nn.Module):
    """BERT embeddings (word + position + token type, LayerNorm, dropout) and ``cfg.depth`` post-norm blocks."""

    def __init__(self, cfg: TextConfig, dropout: float = 0.0):
        super().__init__()
        self.cfg = cfg
        self.width = cfg.width
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.width)
        self.position_embeddings = nn.Embedding(cfg.max_positions, cfg.width)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.width)
        self.embed_norm = nn.LayerNorm(cfg.width, eps=cfg.layer_norm_eps)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(cfg.width, cfg.heads, cfg.intermediate, pre_norm=False, eps=cfg.layer_norm_eps, dropout=dropout)
            for _ in range(cfg.depth)
        )
        self.apply(init_weights)

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """Token embeddings before the first block: (B, L) ids -> (B, L, D)."""
        length = input_ids.shape[1]
        if length > self.cfg.max_positions:
            raise ValueError(f"text length {length} exceeds max_positions {self.cfg.max_positions}")
        positions = torch.arange(length, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(token_type_ids)
        return self.embed_drop(self.embed_norm(x))

    def forward(self, input_ids: Tensor, attention_mask: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        """input_ids (B, L); attention_mask (B, L) long or bool, 1 = real token -> hidden states (B, L, D)."""
        mask = attention_mask.to(torch.bool)
        x = self.embed(input_ids, token_type_ids)
        packing = Packing.for_mask(mask)
        for block in self.blocks:
            x = block(x, mask=mask, packing=packing)
        return x
