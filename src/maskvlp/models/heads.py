"""Small task heads on top of the encoders (contrastive projection, image-text matching, masked LM)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from maskvlp.models.transformer import init_weights


class Projection(nn.Module):
    """Linear map of a CLS state into the shared contrastive space; the caller L2-normalises."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        init_weights(self.linear)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class ITMHead(nn.Module):
    """Matched / not-matched logits (B, 2) from the fused CLS state (B, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, 2)
        init_weights(self.linear)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class MLMHead(nn.Module):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> decoder to the vocabulary, plus a bias.

    With ``word_embeddings`` the decoder weight *is* the embedding matrix (tied, as in BERT), which
    saves vocab*dim parameters and lets a BERT checkpoint's head load unchanged.
    """

    def __init__(self, dim: int, vocab_size: int, eps: float = 1e-12, word_embeddings: nn.Embedding | None = None):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.apply(init_weights)
        if word_embeddings is not None:
            if tuple(word_embeddings.weight.shape) != (vocab_size, dim):
                raise ValueError(
                    f"tied word embeddings are {tuple(word_embeddings.weight.shape)}, head needs {(vocab_size, dim)}"
                )
            self.decoder.weight = word_embeddings.weight

    def forward(self, hidden: Tensor) -> Tensor:
        """hidden (M, D) — pass only the masked positions, the vocab projection is the costly part -> (M, V)."""
        return self.decoder(self.norm(self.act(self.dense(hidden)))) + self.bias


class ClassifierHead(nn.Module):
    """Linear -> LayerNorm -> GELU -> Linear over a pooled fused state: ViLT's VQA and NLVR2 heads.

    VQA reads one fused state (``in_dim`` = width) into the answer vocabulary; NLVR2 reads the two
    images' fused states side by side (``in_dim`` = 2 x width) into true / false.
    """

    def __init__(self, in_dim: int, hidden: int, num_classes: int, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(in_dim, hidden)
        self.norm = nn.LayerNorm(hidden, eps=eps)
        self.act = nn.GELU()
        self.out = nn.Linear(hidden, num_classes)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.act(self.norm(self.dense(x))))
