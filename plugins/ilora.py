"""Adapter `ilora`: instance-wise LoRA, after Kong et al. (NeurIPS 2024).

Each adapted linear layer holds K LoRA experts sharing the rank budget (rank 8 as 4 experts
of rank 2, so the parameter count matches plain LoRA). A gate reads the sequence's own
representation and gives per-sequence expert weights (summing to 1); the *same* weights mix
the experts in every adapted layer, so each sequence gets its own low-rank update.

How it stays fast: the K experts of a layer are stored stacked as one rank-(K*r) pair
(A: [K*r, in], B: [out, K*r]). Mixing experts with gate g is then plain LoRA with the
rank-space activations scaled by g (each expert's r columns by its weight):
    delta(x) = ((x A^T) * repeat(g, r)) B^T
two small matmuls and one multiply per layer, for dense and top-k gates alike (top-k zeros
the other weights; no data-dependent branching), so it composes with autocast and compile.

The gate is computed once per forward by ``GatedModel.encode`` and handed to the adapted
layers through a plain attribute (``layer.gate``), because the base model's blocks only
pass hidden states between them.

It cannot be merged into the base weights: the update differs for every sequence.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from recengine.errors import UserError
from recengine.hookspecs import hookimpl
from recengine.model import SequenceModel
from recengine_plugins.lora import ALL_TARGETS, Target, add_low_rank, targeted_linears, trainable_tensors

NO_MERGE = ("ilora cannot be merged into the base weights: its low-rank update is mixed per sequence by the gate, "
            "so no single weight matrix reproduces it; serve it unmerged (or train with adapter.name=\"lora\" to merge)")


class ILoRAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1, description="Total rank budget per layer, shared by the experts (rank / experts each).")
    experts: int = Field(4, ge=1, description="K, the number of LoRA experts per adapted layer; must divide rank.")
    alpha: float = Field(16.0, gt=0, description="Scale numerator: alpha / (rank / experts), so a uniform gate scales like plain LoRA.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapters' input.")
    targets: list[Target] = Field(list(ALL_TARGETS), min_length=1,
                                  description="Linear layers to adapt, by name: q, k, v, out (attention) and fc1, fc2 (FFN).")
    gate: Literal["softmax", "topk"] = Field("softmax", description="Dense softmax over experts, or softmax over the top_k experts only.")
    top_k: int = Field(1, ge=1, description="Experts kept per sequence with gate = \"topk\".")
    gate_input: Literal["items", "encoder"] = Field(
        "items", description="What the gate reads: 'items' = mean input item embedding (cheap); "
                             "'encoder' = mean frozen encoder output (one extra no-grad forward per step).")
    merge: bool = Field(False, description="Always refused: ilora cannot be merged (kept so the refusal can say why).")

    @model_validator(mode="after")
    def _check(self):
        if self.merge:
            raise ValueError(NO_MERGE)
        if self.rank % self.experts:
            raise ValueError(f"experts ({self.experts}) must divide rank ({self.rank}), e.g. rank=8 experts=4")
        if self.top_k > self.experts:
            raise ValueError(f"top_k ({self.top_k}) cannot exceed experts ({self.experts})")
        return self


class ILoRALinear(nn.Linear):
    """The base linear plus K gated LoRA experts, stacked; shares W and b with the base layer."""

    def __init__(self, base: nn.Linear, rank: int, experts: int, alpha: float, dropout: float):
        nn.Module.__init__(self)  # not nn.Linear.__init__: the weight and bias are the base's own
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.expert_rank = rank // experts
        self.scale = alpha / self.expert_rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))  # K blocks of r rows
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        for block in self.lora_a.data.split(self.expert_rank):
            nn.init.kaiming_uniform_(block, a=math.sqrt(5))
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.gate: torch.Tensor | None = None  # [B, 1, K*r], set by GatedModel.encode before each forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = F.linear(self.drop(x), self.lora_a)
        low = low * self.gate.to(low.dtype)  # [B, L, K*r]: each expert's r columns weighted by its gate
        return add_low_rank(F.linear(x, self.weight, self.bias), low, self.lora_b, self.scale)

    @staticmethod
    def stacked_forward(layers: tuple[ILoRALinear, ...], x: torch.Tensor) -> torch.Tensor | None:
        """Layers reading the same input (BERT4Rec's q, k, v) in three products instead of nine:
        the base weights stacked, the experts' A stacked, and their B as one block-diagonal matrix
        (zeros between layers: rank-sized, so cheap) in the addmm that adds the update. None with
        adapter dropout while training (one shared mask would differ from each layer's own) or
        without biases."""
        if any(layer.bias is None or (layer.training and not isinstance(layer.drop, nn.Identity)) for layer in layers):
            return None
        if len({layer.scale for layer in layers}) > 1:
            return None
        base = F.linear(x, torch.cat([layer.weight for layer in layers]), torch.cat([layer.bias for layer in layers]))
        low = F.linear(x, torch.cat([layer.lora_a for layer in layers]))
        low = low * torch.cat([layer.gate for layer in layers], dim=-1).to(low.dtype)
        return add_low_rank(base, low, torch.block_diag(*[layer.lora_b for layer in layers]), layers[0].scale)


class Gate(nn.Module):
    """Per-sequence expert weights from a [B, H] representation: [B, K], each row summing to 1."""

    def __init__(self, hidden: int, experts: int, kind: str, top_k: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)  # the frozen embeddings are tiny (init std 0.02): normalise first
        self.linear = nn.Linear(hidden, experts)
        self.kind, self.top_k = kind, top_k

    def forward(self, representation: torch.Tensor) -> torch.Tensor:
        logits = self.linear(self.norm(representation)).float()
        if self.kind == "topk":  # fixed at build time, not data-dependent: compile sees one branch
            kept = logits.topk(self.top_k, dim=-1).indices
            logits = torch.full_like(logits, float("-inf")).scatter(-1, kept, logits.gather(-1, kept))
        return logits.softmax(dim=-1)


def masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the positions where ``keep`` ([B, L] bool) is true: [B, L, H] -> [B, H]."""
    keep = keep.unsqueeze(-1).to(values.dtype)
    return (values * keep).sum(1) / keep.sum(1).clamp(min=1)


class GatedModel(SequenceModel):
    """The base model with iLoRA layers inside, plus the gate that drives them."""

    def __init__(self, model: SequenceModel, layers: list[ILoRALinear], options: ILoRAOptions):
        super().__init__()
        self.model = model
        self.num_items, self.max_len = model.num_items, model.max_len
        self.layers = layers  # a plain list: they are already registered inside self.model
        self.expert_rank, self.gate_input = options.rank // options.experts, options.gate_input
        hidden = model.item_embedding.embedding_dim
        self.gate = Gate(hidden, options.experts, options.gate, options.top_k)

    def representation(self, tokens: torch.Tensor) -> torch.Tensor:
        """What the gate reads: a [B, H] summary of each sequence's real items (padding and [MASK] left out)."""
        items = (tokens != 0) & (tokens != self.mask_token)
        if self.gate_input == "encoder":
            with torch.no_grad():  # the frozen encoder without adapters (a zero gate switches them off)
                self._set_gate(tokens.new_zeros(tokens.shape[0], 1, self.layers[0].lora_a.shape[0], dtype=torch.float32))
                return masked_mean(self.model.encode(tokens), items)
        return masked_mean(self.model.item_embedding(tokens), items)

    def gate_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, K] expert weights of each sequence."""
        return self.gate(self.representation(tokens))

    def _set_gate(self, gate: torch.Tensor | None) -> None:
        for layer in self.layers:
            layer.gate = gate

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        weights = self.gate_weights(tokens)
        self._set_gate(weights.repeat_interleave(self.expert_rank, dim=-1).unsqueeze(1))
        hidden = self.model.encode(tokens)
        self._set_gate(None)  # autograd keeps what backward needs; don't pin this batch's graph to the layers
        return hidden

    forward = encode

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.model.project(hidden)

    def input_embedding(self) -> nn.Embedding | None:
        return self.model.input_embedding()  # the gate looks it up with the same batch ids

    def output_embedding(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.model.output_embedding()


class ILoRA:
    def __init__(self, options: ILoRAOptions):
        self.options = options

    def adapt(self, model: nn.Module) -> nn.Module:
        if not isinstance(getattr(model, "item_embedding", None), nn.Embedding):
            raise UserError("adapter: ilora needs a model with an `item_embedding` (nn.Embedding) for its gate; bert4rec has one")
        model.requires_grad_(False)
        o = self.options
        layers = []
        for parent, name, linear in targeted_linears(model, o.targets):
            layers.append(ILoRALinear(linear, o.rank, o.experts, o.alpha, o.dropout))
            setattr(parent, name, layers[-1])
        return GatedModel(model, layers, o)

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return trainable_tensors(model)

    def merge(self, model: nn.Module) -> nn.Module:
        raise UserError(NO_MERGE)

    def for_export(self, model: nn.Module) -> nn.Module:
        return model  # unmerged, gate included

    def for_inference(self, model: nn.Module) -> nn.Module:
        return model


@hookimpl
def register_adapters(register):
    register("ilora", lambda options: ILoRA(options), options=ILoRAOptions)
