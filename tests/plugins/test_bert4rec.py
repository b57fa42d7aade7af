import pytest
import torch
from torch import nn

from recengine_plugins.bert4rec import Attention
from recengine_plugins.ilora import ILoRALinear
from recengine_plugins.lora import LoRALinear

torch.set_num_threads(1)


def attention_and_input(seed=0):
    torch.manual_seed(seed)
    return Attention(hidden=16, heads=2, dropout=0.0), torch.randn(3, 5, 16, requires_grad=True)


def separately(attention, x):
    return [p(x) for p in (attention.q, attention.k, attention.v)]


def calls_to(attention, monkeypatch):
    """Calls of the projections' forward (patched on their classes: a forward hook would itself
    switch the stacked path off)."""
    calls = []
    for kind in {type(p) for p in (attention.q, attention.k, attention.v)}:
        monkeypatch.setattr(kind, "forward", lambda self, x, forward=kind.forward: (calls.append(self), forward(self, x))[1])
    return calls


def adapt(attention, make):
    for name in ("q", "k", "v"):
        setattr(attention, name, make(getattr(attention, name)))
        with torch.no_grad():
            getattr(attention, name).lora_b.normal_()  # a nonzero update, so the adapter counts


def adapted(adapter, dropout=0.0):
    attention, x = attention_and_input()
    if adapter == "lora":
        adapt(attention, lambda base: LoRALinear(base, rank=2, alpha=4.0, dropout=dropout))
    if adapter == "ilora":
        adapt(attention, lambda base: ILoRALinear(base, rank=4, experts=2, alpha=4.0, dropout=dropout))
        for p in (attention.q, attention.k, attention.v):  # [B, 1, K*r] as GatedModel sets it; one per layer here,
            p.gate = torch.softmax(torch.randn(3, 1, 2), dim=-1).repeat_interleave(2, dim=-1)  # so each must be its own
    return attention, x


@pytest.mark.parametrize("adapter", ["none", "lora", "ilora"])
def test_q_k_v_run_as_stacked_products_with_the_same_values_and_gradients(adapter, monkeypatch):
    attention, x = adapted(adapter)
    calls = calls_to(attention, monkeypatch)
    stacked = attention.project_qkv(x)
    assert not calls, "the stacked path calls no projection module"
    monkeypatch.undo()
    expected = separately(attention, x)
    params = [p for m in (attention.q, attention.k, attention.v) for p in m.parameters() if p.requires_grad] + [x]
    weights = [torch.randn_like(t) for t in expected]
    got_grads = torch.autograd.grad(sum((t * w).sum() for t, w in zip(stacked, weights)), params)
    want_grads = torch.autograd.grad(sum((t * w).sum() for t, w in zip(expected, weights)), params)
    for got, want in zip(stacked, expected):
        torch.testing.assert_close(got, want)
    for got, want in zip(got_grads, want_grads):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("adapter", ["lora", "ilora"])
def test_adapters_training_with_dropout_run_separately_and_stack_again_in_eval(adapter, monkeypatch):
    attention, x = adapted(adapter, dropout=0.5)
    calls = calls_to(attention, monkeypatch)
    attention.project_qkv(x)
    assert len(calls) == 3, "one shared dropout mask would differ from each layer's own"
    attention.eval()
    calls.clear()
    attention.project_qkv(x)
    assert not calls


def test_mixed_kinds_and_missing_biases_run_separately(monkeypatch):
    attention, x = adapted("lora")
    attention.k = nn.Linear(16, 16)
    calls = calls_to(attention, monkeypatch)
    attention.project_qkv(x)
    assert len(calls) == 3
    monkeypatch.undo()
    attention, x = attention_and_input()
    attention.k = nn.Linear(16, 16, bias=False)
    calls = calls_to(attention, monkeypatch)
    attention.project_qkv(x)
    assert len(calls) == 3


def test_ilora_layers_with_different_scales_run_separately(monkeypatch):
    attention, x = adapted("ilora")
    attention.k.scale = 2 * attention.k.scale
    calls = calls_to(attention, monkeypatch)
    attention.project_qkv(x)
    assert len(calls) == 3


class Doubled(LoRALinear):  # a third-party variant: its own forward, no stacked_forward of its own
    def forward(self, x):
        return 2 * super().forward(x)


def test_a_subclass_does_not_inherit_its_parents_stacked_form():
    attention, x = attention_and_input()
    adapt(attention, lambda base: Doubled(base, rank=2, alpha=4.0, dropout=0.0))
    for got, want in zip(attention.project_qkv(x), separately(attention, x)):
        torch.testing.assert_close(got, want)


def test_forward_hooks_on_a_projection_still_run():
    attention, x = attention_and_input()
    seen = []
    attention.k.register_forward_hook(lambda *_: seen.append(1))
    attention.project_qkv(x)
    assert seen == [1]


def test_attention_is_softmax_attention_over_q_k_v():
    attention, x = attention_and_input()
    keep = torch.ones(3, 1, 1, 5, dtype=torch.bool)
    keep[0, ..., :2] = False
    q, k, v = (t.view(3, 5, 2, 8).transpose(1, 2) for t in separately(attention, x))
    scores = (q @ k.transpose(-1, -2) / 8 ** 0.5).masked_fill(~keep, float("-inf"))
    want = attention.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, 16))
    torch.testing.assert_close(attention(x, keep), want)
