import pytest
import torch

from recengine.bench import train_flops
from recengine.data import Sequences
from recengine.data.batching import ClozeBatches
from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.recipe import resolve
from recengine_plugins.ilora import ILoRA, ILoRALinear, ILoRAOptions
from tests.plugins.test_lora import perturb_adapters, tiny, tokens

torch.set_num_threads(1)


def adapted(**options):
    adapter = ILoRA(ILoRAOptions(**options))
    return adapter, adapter.adapt(tiny()).eval()


def test_starts_equal_to_base_and_parameter_count_matches_plain_lora():
    _, model = adapted(rank=8, experts=4)
    assert torch.equal(model.encode(tokens()), tiny().eval().encode(tokens()))
    layer = model.model.blocks[0].attention.q
    assert layer.lora_a.shape == (8, 16) and layer.lora_b.shape == (16, 8)  # 4 experts of rank 2 = rank 8


@pytest.mark.parametrize("gate_input", ["items", "encoder"])
def test_gates_sum_to_one_and_differ_across_sequences(gate_input):
    _, model = adapted(rank=4, experts=4, gate_input=gate_input)
    weights = model.gate_weights(tokens(batch=8))
    assert weights.shape == (8, 4)
    torch.testing.assert_close(weights.sum(-1), torch.ones(8))
    assert (weights.max(0).values - weights.min(0).values).max() > 1e-3  # sequences get different mixes


def test_topk_gate_keeps_k_experts():
    _, model = adapted(rank=8, experts=4, gate="topk", top_k=2)
    weights = model.gate_weights(tokens(batch=8))
    assert ((weights > 0).sum(-1) == 2).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(8))


def test_stacked_experts_equal_the_explicit_gated_sum():
    _, model = adapted(rank=6, experts=3, alpha=3.0)
    perturb_adapters(model)
    layer: ILoRALinear = model.model.blocks[0].fc1
    x = torch.randn(5, 7, 16)
    g = torch.softmax(torch.randn(5, 3), -1)
    layer.gate = g.repeat_interleave(2, -1).unsqueeze(1)
    expected = x @ layer.weight.t() + layer.bias
    for k in range(3):
        a, b = layer.lora_a[2 * k: 2 * k + 2], layer.lora_b[:, 2 * k: 2 * k + 2]
        expected = expected + g[:, k, None, None] * (x @ a.t() @ b.t()) * (3.0 / 2)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_each_sequence_gets_its_own_update_independent_of_the_batch():
    _, model = adapted(rank=4, experts=2)
    perturb_adapters(model)
    t = tokens(batch=4)
    together = model.encode(t)
    for i in range(4):
        torch.testing.assert_close(model.encode(t[i: i + 1]), together[i: i + 1], atol=1e-5, rtol=1e-5)


def test_export_is_unmerged_and_merge_is_refused_with_the_reason():
    adapter, model = adapted(rank=4, experts=2)
    assert adapter.for_export(model) is model
    with pytest.raises(UserError, match="cannot be merged") as err:
        adapter.merge(model)
    assert "\n" not in str(err.value)


def test_merge_option_and_bad_budget_are_refused_in_the_recipe():
    registry = load_registry()
    base = {"dataset": {"name": "synthetic"}, "model": {"name": "bert4rec"}}
    with pytest.raises(UserError) as err:
        resolve({**base, "adapter": {"name": "ilora", "merge": True}}, registry, source="r.toml")
    assert str(err.value).count("\n") == 0 and "r.toml: adapter: " in str(err.value) and "cannot be merged" in str(err.value)
    with pytest.raises(UserError, match="experts \\(3\\) must divide rank \\(8\\)"):
        resolve({**base, "adapter": {"name": "ilora", "experts": 3}}, registry)
    with pytest.raises(UserError, match="adapter.targets"):
        resolve({**base, "adapter": {"name": "lora", "targets": ["q", "ffn"]}}, registry)


def test_runs_under_autocast():
    _, model = adapted(rank=4, experts=2, dropout=0.1)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.encode(tokens())
    out.float().sum().backward()
    assert model.gate.linear.weight.grad is not None and torch.isfinite(out.float()).all()


def test_bench_counts_the_wrapped_models_flops():
    # The study's MFU column was blank for iLoRA cells: the gate wrapper hid the base model's blocks.
    base = tiny()
    seqs = Sequences.from_lists([[1 + (u + i) % 40 for i in range(6 + u % 5)] for u in range(16)], num_items=base.num_items)
    batch = next(ClozeBatches(seqs, max_len=base.max_len, batch_size=16, mask_prob=0.3).epoch(0))
    _, model = adapted(rank=8, experts=4)
    assert train_flops(base, batch) is not None
    assert train_flops(model, batch) == train_flops(base, batch)
