"""Model `bert4rec`: a bidirectional transformer encoder over item ids (Sun et al., 2019).

Learned positions, a [MASK] token, pre-norm blocks with separate q/k/v/out projections and
fc1/fc2 FFN layers (so adapters can target them by name), an MLP output head as in the
paper, and a tied or untied output embedding.

Named sizes are one-line builders over `bert4rec(...)`; their parameter counts assume an
untied output: 2 x catalog x hidden + encoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from recengine.hookspecs import hookimpl
from recengine.model import SequenceModel


class EncoderOptions(BaseModel):
    """Options every transformer-encoder model shares (SASRec reuses them with its own defaults)."""

    model_config = ConfigDict(extra="forbid")
    hidden: int = Field(64, ge=8, description="Hidden size.")
    layers: int = Field(2, ge=1, description="Transformer blocks.")
    heads: int = Field(2, ge=1, description="Attention heads; must divide hidden.")
    ffn: int | None = Field(None, ge=1, description="FFN inner size (default 4 x hidden).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on embeddings, residual branches and the FFN.")
    attention_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on attention probabilities.")
    max_len: int = Field(50, ge=2, le=4096, description="Maximum sequence length, [MASK] included.")
    tied: bool = Field(False, description="Share the input item embedding with the output layer.")
    init_std: float = Field(0.02, gt=0, description="Std of the truncated-normal weight initialisation.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self):
        if self.hidden % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide hidden ({self.hidden})")
        return self


class BERT4RecOptions(EncoderOptions):
    output_head: bool = Field(True, description="Dense + GELU + LayerNorm before the output layer, as in BERT4Rec.")


ATTENTION_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def stacked_projection(projections: tuple[nn.Module, ...], x: torch.Tensor) -> torch.Tensor | None:
    """``x`` through several projections as one [..., sum of their outputs] tensor, computed by
    stacked products: plain nn.Linear layers stack their weights; adapted layers stack through
    their class's ``stacked_forward`` (LoRA, iLoRA). None when they do not stack (mixed kinds,
    no bias, or an adapter whose stacked form would compute something else), and when any of
    them has forward hooks: the stacked path never calls the modules, so hooks would not run.

    ``stacked_forward`` counts only where the class defines it itself: a subclass that changes
    ``forward`` must not inherit its parent's stacked form (it would compute the parent's)."""
    kind = type(projections[0])
    if any(type(p) is not kind or p._forward_hooks or p._forward_pre_hooks for p in projections):
        return None
    if kind is nn.Linear:
        if any(p.bias is None for p in projections):
            return None
        return F.linear(x, torch.cat([p.weight for p in projections]), torch.cat([p.bias for p in projections]))
    if "stacked_forward" not in kind.__dict__:
        return None
    return kind.stacked_forward(projections, x)


class Attention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        # Three modules, not one stacked [3h, h] layer: the state-dict keys and the adapters'
        # targets (q, k, v by name) stay those of BERT4Rec; forward stacks them itself.
        self.q, self.k, self.v, self.out = (nn.Linear(hidden, hidden) for _ in range(4))

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # q, k and v read the same input: one matmul over their stacked weights instead of three,
        # and in the backward one input-gradient product (and with an adapter, one weight-gradient
        # product) instead of three. At the 130M shape the step is bound by small kernels.
        projections = (self.q, self.k, self.v)
        stacked = stacked_projection(projections, x)
        if stacked is None:
            return tuple(p(x) for p in projections)
        return stacked.split(x.shape[-1], dim=-1)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, n, h = x.shape
        q, k, v = (t.reshape(b, n, self.heads, h // self.heads).transpose(1, 2) for t in self.project_qkv(x))
        # Not the cuDNN backend: it rebuilds its graph for every new shape (trimmed lengths
        # vary per batch), which cost ~4 ms of CPU per call on H100 (torch 2.11).
        with sdpa_kernel(ATTENTION_BACKENDS):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, n, h))


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, ffn: int, dropout: float, attention_dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.attention = Attention(hidden, heads, attention_dropout)
        self.fc1, self.fc2 = nn.Linear(hidden, ffn), nn.Linear(ffn, hidden)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attention(self.norm1(x), keep))
        return x + self.drop(self.fc2(self.drop(F.gelu(self.fc1(self.norm2(x))))))


def init_weights(model: SequenceModel, std: float) -> None:
    """Truncated-normal weights, zero biases, a zero padding embedding (shared with SASRec)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.trunc_normal_(module.weight, std=std, a=-2 * std, b=2 * std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
    if model.output_weight is not None:
        nn.init.trunc_normal_(model.output_weight, std=std, a=-2 * std, b=2 * std)
    with torch.no_grad():
        model.item_embedding.weight[0].zero_()


class BERT4Rec(SequenceModel):
    def __init__(self, num_items: int, hidden: int, layers: int, heads: int, ffn: int, dropout: float,
                 attention_dropout: float, max_len: int, tied: bool, output_head: bool, init_std: float = 0.02):
        super().__init__()
        self.num_items, self.max_len, self.tied = num_items, max_len, tied
        self.item_embedding = nn.Embedding(num_items + 2, hidden, padding_idx=0)  # + padding and [MASK]
        self.position_embedding = nn.Embedding(max_len, hidden)
        self.embed_norm = nn.LayerNorm(hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, heads, ffn, dropout, attention_dropout) for _ in range(layers))
        self.final_norm = nn.LayerNorm(hidden)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden)) if output_head else nn.Identity()
        self.output_weight = None if tied else nn.Parameter(torch.empty(num_items + 1, hidden))
        self.output_bias = nn.Parameter(torch.zeros(num_items + 1))
        init_weights(self, init_std)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        # Sequences are left-padded: the last position always gets the last position embedding.
        positions = torch.arange(self.max_len - length, self.max_len, device=tokens.device)
        x = self.drop(self.embed_norm(self.item_embedding(tokens) + self.position_embedding(positions)))
        keep = (tokens != 0)[:, None, None, :]  # attend to real items and [MASK], never to padding
        for block in self.blocks:
            x = block(x, keep)
        return self.final_norm(x)

    forward = encode

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head(hidden)

    def input_embedding(self) -> nn.Embedding | None:
        return None if self.tied else self.item_embedding

    def output_embedding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        weight = self.item_embedding.weight[: self.num_items + 1] if self.tied else self.output_weight
        return weight, self.output_bias


def bert4rec(num_items: int, hidden: int = 64, layers: int = 2, heads: int = 2, ffn: int | None = None,
             dropout: float = 0.1, attention_dropout: float = 0.1, max_len: int = 50, tied: bool = False,
             output_head: bool = True, init_std: float = 0.02) -> BERT4Rec:
    return BERT4Rec(num_items, hidden, layers, heads, ffn or 4 * hidden, dropout, attention_dropout, max_len, tied, output_head, init_std)


def bert4rec_5m(num_items: int = 18_345, **overrides) -> BERT4Rec:
    return bert4rec(num_items, **{"hidden": 128, "layers": 2, "heads": 4, "ffn": 512, "max_len": 50, **overrides})


def bert4rec_85m(num_items: int = 160_054, **overrides) -> BERT4Rec:
    return bert4rec(num_items, **{"hidden": 256, "layers": 4, "heads": 4, "ffn": 1024, "max_len": 50, **overrides})


def bert4rec_130m(num_items: int = 160_054, **overrides) -> BERT4Rec:
    return bert4rec(num_items, **{"hidden": 384, "layers": 4, "heads": 6, "ffn": 1536, "max_len": 50, **overrides})


def bert4rec_430m(num_items: int = 160_054, **overrides) -> BERT4Rec:
    return bert4rec(num_items, **{"hidden": 1024, "layers": 8, "heads": 16, "ffn": 4096, "max_len": 50, **overrides})


@hookimpl
def register_models(register):
    register("bert4rec", lambda options, num_items: bert4rec(num_items, **options.model_dump()), options=BERT4RecOptions)
