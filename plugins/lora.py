"""Adapter `lora`: low-rank updates on chosen linear layers, base weights frozen (Hu et al., 2021).

Each targeted ``nn.Linear`` (picked by its attribute name: q, k, v, out, fc1, fc2) is swapped
for a ``LoRALinear`` that *shares* the original weight and bias Parameters, so the model's
state-dict keys are unchanged (``blocks.0.attention.q.weight`` stays where it was) and the
adapter adds only ``...q.lora_a`` / ``...q.lora_b``. ``lora_b`` starts at zero: the adapted
model starts exactly equal to the base.

How it stays fast: the update is applied through the weight, not the activations. Each
forward forms W + (alpha/rank) B A (one small addmm on [out, in]) and runs one matmul over the
tokens, as the frozen layer does; backward adds the weight-gradient matmul dy^T x and two small
products for dA and dB. The textbook form, x W^T + ((x A^T) B^T), costs six skinny matmuls and
an add per layer, each a full pass over the [tokens, hidden] activations: at the 130M shape on
an H100 with CUDA graphs, 1.58x the frozen step against this form's 1.32x (one run each, sixth
session; 1.29x by the median of six interleaved rounds in the ninth: docs/benchmarks.md).
Under bf16 autocast the effective weight is rounded to bf16, as autocast rounds any fp32
weight. Adapter dropout (``dropout`` > 0) applies to the adapter's input alone, which only the
textbook form can express, so that form is used when training with it. No data-dependent
Python control flow: it composes with autocast and torch.compile.

Memory: each adapted layer keeps its effective weight for the backward. Under autocast that
costs nothing extra (a frozen layer keeps its autocast copy of W too); in fp32 it is one more
copy of each adapted weight, and under FSDP2 without autocast that copy is unsharded. Use
`amp` there (or adapter dropout, which keeps the textbook form).
"""

from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from recengine.errors import UserError
from recengine.hookspecs import hookimpl

Target = Literal["q", "k", "v", "out", "fc1", "fc2"]
ALL_TARGETS: list[Target] = ["q", "k", "v", "out", "fc1", "fc2"]


class LoRAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rank: int = Field(8, ge=1, description="Rank of each low-rank update.")
    alpha: float = Field(16.0, gt=0, description="Scale numerator: the update is multiplied by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter's input (the base path is untouched).")
    targets: list[Target] = Field(list(ALL_TARGETS), min_length=1,
                                  description="Linear layers to adapt, by name: q, k, v, out (attention) and fc1, fc2 (FFN).")
    merge: bool = Field(False, description="Fold the update into the base weights when the run is loaded for evaluate/recommend "
                                           "(same outputs, no adapter cost). `recengine export` always merges.")


def targeted_linears(model: nn.Module, targets: list[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, linear) for every nn.Linear whose attribute name is in ``targets``."""
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if name in targets and isinstance(child, nn.Linear)]
    if not found:
        raise UserError(f"adapter.targets: no linear layer named {', '.join(targets)} in this model; "
                        f"choose among {', '.join(ALL_TARGETS)}")
    return found


def trainable_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """What an adapter checkpoint holds: the parameters that train (adapter, gate, and the
    output layer when `init.train_output` unfroze it), never the frozen base."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def add_low_rank(base: torch.Tensor, low: torch.Tensor, lora_b: torch.Tensor, scale: float) -> torch.Tensor:
    """``base + scale * low @ lora_b^T`` as one ``addmm``: in eager mode one kernel (forward and
    backward) where matmul, multiply and add were three; the scale and the sum happen in the
    matmul's epilogue. ``base`` [..., out] and ``low`` [..., r] are contiguous linear outputs."""
    out = torch.addmm(base.reshape(-1, base.shape[-1]), low.reshape(-1, low.shape[-1]), lora_b.t(), alpha=scale)
    return out.view(base.shape)


class LoRALinear(nn.Linear):
    """y = x (W + (alpha / rank) B A)^T + b, sharing W and b with the base layer (with adapter
    dropout: x W^T + b + (alpha / rank) dropout(x) A^T B^T)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        nn.Module.__init__(self)  # not nn.Linear.__init__: the weight and bias are the base's own
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        self.scale = alpha / rank
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, device=device, dtype=dtype))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # nn.Linear's own init
        self.drop = nn.Dropout(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.fused_weight()
        if weight is None:
            return add_low_rank(F.linear(x, self.weight, self.bias), F.linear(self.drop(x), self.lora_a), self.lora_b, self.scale)
        return F.linear(x, weight, self.bias)

    def fused_weight(self) -> torch.Tensor | None:
        """The one matrix this layer applies (callers may stack it with others: BERT4Rec's q, k, v),
        or None while adapter dropout makes it two paths (training with dropout > 0)."""
        if self.drop is not None and self.training:  # dropout is fixed at build time; dynamo guards on training
            return None
        return self.effective_weight()

    @staticmethod
    def stacked_forward(layers: tuple[LoRALinear, ...], x: torch.Tensor) -> torch.Tensor | None:
        """Layers reading the same input (BERT4Rec's q, k, v) as one matmul over their stacked
        effective weights; None while adapter dropout makes each two paths, or without biases."""
        weights = [layer.fused_weight() for layer in layers]
        if any(w is None for w in weights) or any(layer.bias is None for layer in layers):
            return None
        return F.linear(x, torch.cat(weights), torch.cat([layer.bias for layer in layers]))

    def effective_weight(self) -> torch.Tensor:
        """W + scale * B A as one addmm (in the autocast dtype under autocast, as F.linear would cast W)."""
        return torch.addmm(self.weight, self.lora_b, self.lora_a, alpha=self.scale)

    def merged(self) -> nn.Linear:
        """A plain nn.Linear with W + scale * B A; computed in float32, stored in the base dtype."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                           device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad(), torch.autocast(self.weight.device.type, enabled=False):  # float32 even inside autocast
            linear.weight.copy_(torch.addmm(self.weight.float(), self.lora_b.float(), self.lora_a.float(), alpha=self.scale))
            if self.bias is not None:
                linear.bias.copy_(self.bias)
        return linear.requires_grad_(False)


class LoRA:
    def __init__(self, options: LoRAOptions):
        self.options = options

    def adapt(self, model: nn.Module) -> nn.Module:
        model.requires_grad_(False)
        o = self.options
        for parent, name, linear in targeted_linears(model, o.targets):
            setattr(parent, name, LoRALinear(linear, o.rank, o.alpha, o.dropout))
        return model

    def trainable_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return trainable_tensors(model)

    def merge(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with every update folded into its base weights (``model`` is untouched)."""
        merged = copy.deepcopy(model)
        for parent in list(merged.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, LoRALinear):
                    setattr(parent, name, child.merged())
        return merged

    def for_export(self, model: nn.Module) -> nn.Module:
        return self.merge(model)

    def for_inference(self, model: nn.Module) -> nn.Module:
        return self.merge(model) if self.options.merge else model


@hookimpl
def register_adapters(register):
    register("lora", lambda options: LoRA(options), options=LoRAOptions)
