"""Adapter `lora`: low-rank updates on chosen linear layers, base weights frozen (Hu et al., 2021).

Each targeted ``nn.Linear`` (picked by its attribute name: q, k, v, out, fc1, fc2) is swapped
for a ``LoRALinear`` that *shares* the original weight and bias Parameters, so the model's
state-dict keys are unchanged (``blocks.0.attention.q.weight`` stays where it was) and the
adapter adds only ``...q.lora_a`` / ``...q.lora_b``. ``lora_b`` starts at zero: the adapted
model starts exactly equal to the base.

How it stays fast: the update is applied through the weight, not the activations. Each
forward forms W + (alpha/rank) B A (one small addmm on [out, in]) and runs one matmul over the
tokens, as the frozen layer does. The textbook form, x W^T + ((x A^T) B^T), costs six skinny
matmuls and an add per layer, each a full pass over the [tokens, hidden] activations: at the
130M shape on an H100 with CUDA graphs, 1.58x the frozen step against the effective weight's
1.32x (one run each, sixth session; 1.29x by the median of six interleaved rounds in the
ninth: docs/benchmarks.md). Autograd through the effective weight, though, forms the full
weight gradient dy^T x of every adapted layer, as large a product as its forward, only to
reach dA and dB (most of LoRA's extra time at 430M, tenth session). So while training with the
base frozen the layer runs a custom op (``frozen_base_low_rank``) whose hand-written backward
gets them through skinny products instead: with g = dy B and h = x A^T, dA = s g^T x and
dB = s dy^T h; dx stays the effective weight's one product. It is a ``torch.library`` op, not
an autograd.Function, so that torch.compile neither traces nor fuses its backward: written as
an autograd.Function, the same backward was traced by inductor, and under CUDA graphs every
run of it hung or segfaulted (eleventh session). As an op it runs there: on one H200, LoRA's
430M step is 1.245x the frozen step, against 1.315x for the effective weight alone (thirteenth
session, docs/benchmarks.md). Under bf16 autocast the effective weight is rounded to bf16, as autocast
rounds any fp32 weight. Adapter dropout (``dropout`` > 0) applies to the adapter's input alone,
which only the textbook form can express, so that form is used when training with it. No
data-dependent Python control flow: it composes with autocast and torch.compile.

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
from recengine.model import compute_dtype

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


def trains_frozen_base(layers) -> bool:
    """Whether these adapted layers run ``frozen_base_low_rank``: training with grad, base frozen.
    Inference, `recengine export` (eval, grad on) and no-grad passes keep plain ops, which every
    exporter understands; a trainable base weight would need the weight gradient the op never
    computes."""
    return torch.is_grad_enabled() and all(
        layer.training and not layer.weight.requires_grad and (layer.bias is None or not layer.bias.requires_grad) for layer in layers)


# The forward returns the effective weight W' = W + scale B A as a second output, for the
# backward (a custom op returns no alias of an input, and W' is a fresh addmm).
@torch.library.custom_op("recengine::frozen_base_low_rank", mutates_args=(),
                         schema="(Tensor x, Tensor weight, Tensor? bias, Tensor lora_a, Tensor lora_b, float scale) -> (Tensor, Tensor)")
def low_rank_op(x, weight, bias, lora_a, lora_b, scale):
    weight = torch.addmm(weight, lora_b, lora_a, alpha=scale)
    return F.linear(x, weight, bias), weight


@low_rank_op.register_fake
def _(x, weight, bias, lora_a, lora_b, scale):
    return x.new_empty((*x.shape[:-1], weight.shape[0])), weight.new_empty(weight.shape)


# (dx, dA, dB) for ``needs`` (three bools); one not wanted comes back empty (an op returns no None).
@torch.library.custom_op("recengine::frozen_base_low_rank_backward", mutates_args=(),
                         schema="(Tensor dy, Tensor x, Tensor weight, Tensor lora_a, Tensor lora_b, float scale, bool[] needs) "
                                "-> (Tensor, Tensor, Tensor)")
def low_rank_backward_op(dy, x, weight, lora_a, lora_b, scale, needs):
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, dy.shape[-1]).to(weight.dtype)
    dx = (dy2 @ weight).view(x.shape) if needs[0] else x.new_empty(0)  # weight is W' here
    d_a = scale * ((dy2 @ lora_b).t() @ x2) if needs[1] else x.new_empty(0)  # g = dy B, [tokens, rank]
    d_b = scale * (dy2.t() @ (x2 @ lora_a.t())) if needs[2] else x.new_empty(0)  # h = x A^T, [tokens, rank]
    return dx, d_a, d_b


@low_rank_backward_op.register_fake
def _(dy, x, weight, lora_a, lora_b, scale, needs):
    return tuple(t.new_empty(t.shape) if need else x.new_empty(0) for t, need in zip((x, lora_a, lora_b), needs))


def setup_low_rank_op(ctx, inputs, output):
    x, weight, bias, lora_a, lora_b, scale = inputs
    ctx.scale = scale
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, output[1], lora_a, lora_b)


def backward_low_rank_op(ctx, dy, _):
    assert not (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]), "frozen_base_low_rank: the base weight and bias must be frozen"
    needs = [ctx.needs_input_grad[i] for i in (0, 3, 4)]
    grads = low_rank_backward_op(dy, *ctx.saved_tensors, ctx.scale, needs)
    d_x, d_a, d_b = (d if need else None for d, need in zip(grads, needs))
    return d_x, None, None, d_a, d_b, None


low_rank_op.register_autograd(backward_low_rank_op, setup_context=setup_low_rank_op)


def frozen_base_low_rank(x, weight, bias, lora_a, lora_b, scale):
    """``x (W + scale B A)^T + b`` through the custom op, W and b frozen. Autocast does not reach
    into a custom op, so the inputs are cast here to the dtype F.linear would compute in (no-ops
    outside autocast): autograd sees these casts and returns each gradient in its input's own dtype."""
    dtype = compute_dtype(x)
    x, weight, lora_a, lora_b = (t.to(dtype) for t in (x, weight, lora_a, lora_b))
    bias = None if bias is None else bias.to(dtype)
    return low_rank_op(x, weight, bias, lora_a, lora_b, scale)[0]


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
        if self.textbook_form():
            return add_low_rank(F.linear(x, self.weight, self.bias), F.linear(self.drop(x), self.lora_a), self.lora_b, self.scale)
        if trains_frozen_base((self,)):
            return frozen_base_low_rank(x, self.weight, self.bias, self.lora_a, self.lora_b, self.scale)
        return F.linear(x, self.effective_weight(), self.bias)

    def textbook_form(self) -> bool:
        """Whether adapter dropout makes this layer two paths (training with dropout > 0), so no
        single matrix (the effective weight) applies."""
        return self.drop is not None and self.training  # dropout is fixed at build time; dynamo guards on training

    @staticmethod
    def stacked_forward(layers: tuple[LoRALinear, ...], x: torch.Tensor) -> torch.Tensor | None:
        """Layers reading the same input (BERT4Rec's q, k, v) as one matmul over their stacked
        effective weights; None while adapter dropout makes each two paths, or without biases."""
        if any(layer.textbook_form() or layer.bias is None for layer in layers):
            return None
        bias = torch.cat([layer.bias for layer in layers])
        if trains_frozen_base(layers) and len({layer.scale for layer in layers}) == 1:
            # [W_q; W_k; W_v] + s blockdiag(B_q, B_k, B_v) [A_q; A_k; A_v] is the stacked effective weight
            return frozen_base_low_rank(x, torch.cat([layer.weight for layer in layers]), bias, torch.cat([layer.lora_a for layer in layers]),
                                        torch.block_diag(*[layer.lora_b for layer in layers]), layers[0].scale)
        return F.linear(x, torch.cat([layer.effective_weight() for layer in layers]), bias)

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
