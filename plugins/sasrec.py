"""Model `sasrec`: a causal self-attention encoder trained next-item (Kang & McAuley, 2018).

It fulfils the same ``SequenceModel`` contract as BERT4Rec: the hidden state at position t
scores the item *at* t. A causal model must not see that item, so ``encode`` shifts the
input one step right before its causal blocks: position t attends to the items at
positions < t only. Evaluation appends [MASK] after the history, and the shift simply
drops it, so the engine's evaluation and inference work unchanged.

It declares ``training_task = "next_item"``: every position of a training window is a
target (``recengine/data/next_item.py``), trained by default with full softmax
cross-entropy, as in "gSASRec" and Klenitskiy & Vasilev (2023) rather than the paper's
one-negative BCE (choose ``train.loss = "gbce"`` for that family).

The transformer blocks are BERT4Rec's pre-norm blocks, given a causal attention mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from recengine.hookspecs import hookimpl
from recengine.model import SequenceModel
from recengine_plugins.bert4rec import Block, EncoderOptions, init_weights


class SASRecOptions(EncoderOptions):
    heads: int = Field(1, ge=1, description="Attention heads; must divide hidden.")
    ffn: int | None = Field(None, ge=1, description="FFN inner size (default hidden, as in SASRec).")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings, residual branches and the FFN.")
    attention_dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on attention probabilities.")
    max_len: int = Field(50, ge=2, le=4096, description="Maximum sequence length (the last slot is the one predicted).")
    tied: bool = Field(True, description="Share the input item embedding with the output layer, as in SASRec.")


class SASRec(SequenceModel):
    training_task = "next_item"

    def __init__(self, num_items: int, hidden: int, layers: int, heads: int, ffn: int, dropout: float,
                 attention_dropout: float, max_len: int, tied: bool, init_std: float = 0.02):
        super().__init__()
        self.num_items, self.max_len, self.tied = num_items, max_len, tied
        self.item_embedding = nn.Embedding(num_items + 2, hidden, padding_idx=0)  # + padding and [MASK]
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, ffn, dropout, attention_dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden)
        self.output_weight = None if tied else nn.Parameter(torch.empty(num_items + 1, hidden))
        self.register_buffer("causal", torch.ones(max_len, max_len, dtype=torch.bool).tril(), persistent=False)
        init_weights(self, init_std)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        seen = F.pad(tokens[:, :-1], (1, 0), value=0)  # position t sees the items before t only
        positions = torch.arange(self.max_len - length, self.max_len, device=tokens.device)
        x = self.drop(self.item_embedding(seen) + self.position_embedding(positions))
        real = seen != 0
        # Causal, never attending to padding; a position with nothing to attend to attends to
        # itself, which keeps the softmax finite (its output is never a prediction).
        diagonal = torch.eye(length, dtype=torch.bool, device=tokens.device)
        keep = self.causal[:length, :length] & (real[:, None, None, :] | diagonal)
        for block in self.blocks:
            x = block(x, keep)
        return self.final_norm(x)

    forward = encode

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden

    def input_embedding(self) -> nn.Embedding | None:
        return None if self.tied else self.item_embedding

    def output_embedding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = self.item_embedding.weight[: self.num_items + 1] if self.tied else self.output_weight
        return weight, None


def sasrec(num_items: int, hidden: int = 64, layers: int = 2, heads: int = 1, ffn: int | None = None, dropout: float = 0.2,
           attention_dropout: float = 0.2, max_len: int = 50, tied: bool = True, init_std: float = 0.02) -> SASRec:
    return SASRec(num_items, hidden, layers, heads, ffn or hidden, dropout, attention_dropout, max_len, tied, init_std)


@hookimpl
def register_models(register):
    register("sasrec", lambda options, num_items: sasrec(num_items, **options.model_dump()), options=SASRecOptions)
