import pytest
import torch
import torch.nn.functional as F

from recengine.data.batching import ClozeBatches
from recengine.data.split import leave_one_out
from recengine.errors import UserError
from recengine.recipe import TrainSection
from recengine.training import TrainStep, adamw
from recengine_plugins.bert4rec import bert4rec, bert4rec_130m
from recengine_plugins.defaults import FP32
from recengine_plugins.ilora import ILoRA, ILoRAOptions
from recengine_plugins.lora import LoRA, LoRALinear, LoRAOptions, frozen_base_low_rank, low_rank_backward_op, low_rank_op
from recengine_plugins.synthetic import synthetic

torch.set_num_threads(1)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return bert4rec(30, hidden=16, layers=1, heads=2, max_len=12, dropout=0.0, attention_dropout=0.0, **kw)


def tokens(batch=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, 31, (batch, 12), generator=g)
    t[:, :3] = 0  # left padding
    t[:, -1] = 31  # [MASK]
    return t


def perturb_adapters(model, seed=2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.3)


def test_adapted_model_starts_equal_to_base_and_only_adapters_train():
    base = tiny().eval()
    expected = base.encode(tokens())
    model = LoRA(LoRAOptions(rank=4)).adapt(tiny()).eval()
    assert torch.equal(model.encode(tokens()), expected)  # lora_b starts at zero
    trainable = LoRA(LoRAOptions()).trainable_state(model)
    assert trainable and all(".lora_a" in k or ".lora_b" in k for k in trainable)
    assert "blocks.0.attention.q.weight" in model.state_dict()  # base keys unchanged


def test_targets_select_layers_by_name():
    model = LoRA(LoRAOptions(rank=2, targets=["q", "fc2"])).adapt(tiny())
    adapted = {name for name, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert adapted == {"blocks.0.attention.q", "blocks.0.fc2"}


def test_merge_equals_unmerged_forward_and_leaves_the_model_alone():
    adapter = LoRA(LoRAOptions(rank=4, alpha=8))
    model = adapter.adapt(tiny()).eval()
    perturb_adapters(model)
    t = tokens()
    unmerged = model.encode(t)
    assert not torch.allclose(unmerged, tiny().eval().encode(t), atol=1e-3)  # the update is not trivial
    merged = adapter.for_export(model).eval()
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(merged.encode(t), unmerged, atol=1e-5, rtol=1e-5)
    assert any(isinstance(m, LoRALinear) for m in model.modules())
    assert adapter.for_inference(model) is model
    assert LoRA(LoRAOptions(merge=True)).for_inference(model) is not model


@pytest.mark.parametrize("adapter", [LoRA(LoRAOptions(rank=4)), ILoRA(ILoRAOptions(rank=4, experts=2))])
def test_base_weights_stay_bit_identical_after_adapter_training(adapter):
    data = leave_one_out(synthetic(60, 30, 8).sequences)
    model = adapter.adapt(tiny()).train()
    base_before = {k: v.clone() for k, v in model.state_dict().items() if k not in adapter.trainable_state(model)}
    adapters_before = {k: v.detach().clone() for k, v in adapter.trainable_state(model).items()}
    cfg = TrainSection(weight_decay=0.1, lr=1e-2)  # weight decay must not reach frozen weights
    step = TrainStep(model, adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, torch.device("cpu")), FP32(torch.device("cpu")),
                     lambda fn: fn, cfg)
    for batch in ClozeBatches(data.train, 12, 16, 0.2, True, "random", 0, torch.device("cpu")).epoch(0):
        step(batch, cfg.lr)
    after = model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
    assert any(not torch.equal(after[k], v) for k, v in adapters_before.items())


def test_trainable_share_of_bert4rec_130m_with_rank_8_on_attention_and_ffn():
    with torch.device("meta"):  # no 130M allocation
        model = LoRA(LoRAOptions(rank=8)).adapt(bert4rec_130m())
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    hidden, ffn, layers = 384, 1536, 4
    assert trainable == layers * 8 * (4 * (hidden + hidden) + 2 * (hidden + ffn))  # 221,184
    assert 0.0015 < trainable / total < 0.002  # ~0.17% of 130M (the catalog embeddings dominate)


def test_unknown_target_is_refused():
    with pytest.raises(UserError, match="no linear layer named"):
        LoRA(LoRAOptions.model_construct(rank=2, alpha=4.0, dropout=0.0, targets=["nope"], merge=False)).adapt(tiny())


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_forward_under_autocast_follows_fp32(dropout):
    model = LoRA(LoRAOptions(rank=4, dropout=dropout)).adapt(tiny())
    perturb_adapters(model)
    model.eval() if dropout == 0 else model.train().apply(lambda m: setattr(m, "p", 0.0) if isinstance(m, torch.nn.Dropout) else None)
    real = slice(3, None)  # tokens() left-pads 3 positions, whose outputs mean nothing
    expected = model.encode(tokens())[:, real]
    base = tiny().eval().encode(tokens())[:, real]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.encode(tokens()).float()[:, real]
    # bf16 rounding moves the output far less than the adapters do: they are applied under autocast
    assert (out - expected).abs().mean() < 0.1 * (out - base).abs().mean()


@pytest.mark.parametrize("bias", [True, False])
def test_effective_weight_form_equals_the_textbook_form_with_its_gradients(bias):
    # Without dropout the layer runs x (W + s B A)^T; training with dropout, x W^T + s (drop(x) A^T) B^T.
    # With the dropout probability at 0 the two forms must agree on outputs and every gradient.
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 24, bias=bias).requires_grad_(False)  # as LoRA.adapt leaves it
    layers = [LoRALinear(base, rank=4, alpha=8.0, dropout=p) for p in (0.0, 0.1)]
    layers[1].drop.p = 0.0  # training mode keeps the textbook form; no dropout keeps it comparable
    with torch.no_grad():
        layers[0].lora_b.normal_()
        layers[1].lora_a.copy_(layers[0].lora_a)
        layers[1].lora_b.copy_(layers[0].lora_b)
    x = torch.randn(5, 7, 16)
    outputs, grads = [], []
    for layer in layers:
        xi = x.clone().requires_grad_(True)
        y = layer(xi)
        (y * torch.linspace(-1, 1, 24)).sum().backward()
        outputs.append(y)
        grads.append((xi.grad, layer.lora_a.grad, layer.lora_b.grad))
    assert layers[0].drop is None and layers[1].drop is not None
    torch.testing.assert_close(outputs[0], outputs[1])
    for merged, textbook in zip(*grads):
        torch.testing.assert_close(merged, textbook)
    assert base.weight.grad is None and (base.bias is None or base.bias.grad is None)


def test_compiled_effective_weight_matches_eager():
    # The compiled layer (what a torch-compile run trains) must give eager's outputs and gradients.
    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(16, 24).requires_grad_(False), rank=4, alpha=8.0, dropout=0.0)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(5, 16)
    results = []
    for run in (layer, torch.compile(layer, backend="aot_eager", fullgraph=True)):
        layer.zero_grad()
        y = run(x)
        (y * torch.linspace(-1, 1, 24)).sum().backward()
        results.append((y.detach(), layer.lora_a.grad.clone(), layer.lora_b.grad.clone()))
    for eager, compiled in zip(*results):
        torch.testing.assert_close(compiled, eager)


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [LoRA(LoRAOptions(rank=4)), LoRA(LoRAOptions(rank=4, dropout=0.1)), ILoRA(ILoRAOptions(rank=4, experts=2, gate="topk")),
                                     ILoRA(ILoRAOptions(rank=4, experts=2, gate_input="encoder"))])
def test_adapted_encode_traces_without_graph_breaks(adapter):
    model = adapter.adapt(tiny()).train()
    explanation = torch._dynamo.explain(model.encode)(tokens())
    assert explanation.graph_break_count == 0, explanation.break_reasons
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    step = torch.compile(lambda t: model.encode(t).sum(), backend="aot_eager")
    for seed in range(3):  # the gate attribute set per call must not trigger recompiles
        step(tokens(seed=seed)).backward()
    assert counters["stats"]["unique_graphs"] == 1


def low_rank_inputs():
    torch.manual_seed(0)
    weight, bias = torch.randn(24, 16), torch.randn(24)
    x = torch.randn(4, 5, 16, requires_grad=True)
    lora_a, lora_b = torch.randn(3, 16, requires_grad=True), torch.randn(24, 3, requires_grad=True)
    return x, weight, bias, lora_a, lora_b


@pytest.mark.parametrize("only_lora_a", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_frozen_base_low_rank_matches_plain_autograd(autocast, only_lora_a):
    # The custom op's hand-written backward must give autograd's gradients of the plain formula,
    # in each input's dtype (under autocast too: the casts happen outside the op), also when only
    # some of x, A and B want one.
    def plain(x, weight, bias, lora_a, lora_b, scale):
        return F.linear(x, weight, bias) + scale * F.linear(F.linear(x, lora_a), lora_b)

    x, weight, bias, lora_a, lora_b = low_rank_inputs()
    if only_lora_a:
        x.requires_grad_(False)
        lora_b.requires_grad_(False)
    inputs = [t for t in (x, lora_a, lora_b) if t.requires_grad]
    results = []
    for fn in (plain, frozen_base_low_rank):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = fn(x, weight, bias, lora_a, lora_b, 0.5)
        results.append((y, torch.autograd.grad((y.float() * torch.linspace(-1, 1, 24)).sum(), inputs)))
    (y_plain, grads_plain), (y_op, grads_op) = results
    assert y_op.dtype == y_plain.dtype  # bf16 under autocast, as F.linear's
    if autocast:  # the op computes in bf16, not in fp32 with its output cast afterwards
        dtypes = []
        with torch.autocast("cpu", dtype=torch.bfloat16), pytest.MonkeyPatch.context() as spy:
            spy.setattr("recengine_plugins.lora.low_rank_op", lambda *a: dtypes.append({t.dtype for t in a[:5] if t is not None})
                        or low_rank_op(*a))
            frozen_base_low_rank(x, weight, bias, lora_a, lora_b, 0.5)
        assert dtypes == [{torch.bfloat16}]
    tolerance = {"atol": 0.1, "rtol": 0.02} if autocast else {}
    torch.testing.assert_close(y_op, y_plain, **tolerance)
    for got, expected, given in zip(grads_op, grads_plain, inputs):
        assert got.dtype == given.dtype
        torch.testing.assert_close(got, expected, **tolerance)


def lora_loss_and_grads(model, t, encode=None):
    model.zero_grad()
    loss = ((encode or model.encode)(t) * torch.linspace(-1, 1, 16)).sum()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_same_loss_and_grads(got, expected):
    (loss, grads), (expected_loss, expected_grads) = got, expected
    torch.testing.assert_close(loss, expected_loss, atol=1e-4, rtol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], expected_grads[name], atol=1e-3, rtol=1e-4)  # gradients of about 100: sums reassociated


def plain_ops(monkeypatch):
    """Switches the custom op off: every LoRA layer trains through autograd of its effective weight."""
    monkeypatch.setattr("recengine_plugins.lora.trains_frozen_base", lambda layers: False)


def test_training_path_gives_the_plain_paths_gradients(monkeypatch):
    # In training the adapted layers (stacked q/k/v included) run the custom op; switched off, the
    # plain ops. Same model, same batch: same loss and gradients.
    model = LoRA(LoRAOptions(rank=4)).adapt(tiny()).train()
    perturb_adapters(model)
    calls = []
    with monkeypatch.context() as counting:
        counting.setattr("recengine_plugins.lora.low_rank_op", lambda *a: calls.append(1) or low_rank_op(*a))
        got = lora_loss_and_grads(model, tokens())
    assert len(calls) == 4  # stacked q/k/v, out, fc1, fc2 of the one block
    plain_ops(monkeypatch)
    assert_same_loss_and_grads(got, lora_loss_and_grads(model, tokens()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bias", [True, False])
def test_low_rank_custom_ops_pass_opcheck(bias, dtype):
    # Schema, fake (meta) kernels, autograd registration and dynamic-shape tracing of both ops; in
    # bf16 too, as they run under autocast (a fake kernel with a fixed dtype gave NaN gradients there).
    x, weight, b, lora_a, lora_b = (t.detach().to(dtype).requires_grad_(t.requires_grad) for t in low_rank_inputs())
    b = b if bias else None
    torch.library.opcheck(low_rank_op, (x, weight, b, lora_a, lora_b, 0.5))
    y, effective = low_rank_op(x, weight, b, lora_a, lora_b, 0.5)
    saved = (x.detach(), effective.detach(), lora_a.detach(), lora_b.detach())  # what the forward saves for the backward
    for needs in ([True, True, True], [False, True, True]):
        torch.library.opcheck(low_rank_backward_op, (torch.randn_like(y), *saved, 0.5, needs))


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])  # inductor: about 20 s on CPU
def test_compiled_op_path_gives_eager_gradients_without_graph_breaks(backend, autocast, monkeypatch):
    # Under torch.compile(dynamic=True): one graph with the custom ops opaque in it, and the loss and
    # gradients of the plain ops run eagerly (an independent reference: a wrong op backward would
    # match itself), in fp32 and under bf16 autocast (where the fake kernels' dtypes matter).
    from torch._dynamo.utils import counters

    model = LoRA(LoRAOptions(rank=4)).adapt(tiny()).train()
    perturb_adapters(model)
    batches = [tokens(batch=6), tokens(batch=5, seed=3)]  # a second batch size: the dynamic graph, no recompile
    cast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)  # noqa: E731
    with monkeypatch.context() as plain, cast():
        plain_ops(plain)
        expected = [lora_loss_and_grads(model, t) for t in batches]
    with cast():
        explanation = torch._dynamo.explain(model.encode)(batches[0])
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert "recengine.frozen_base_low_rank" in "".join(g.code for g in explanation.graphs)  # the op, not a fallback to plain ops
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(model.encode, backend=backend, dynamic=True, fullgraph=True)
    for t, eager in zip(batches, expected):
        with cast():
            got = lora_loss_and_grads(model, t, compiled)
        if autocast:  # bf16 rounding differs between the op's products and the plain ops'
            torch.testing.assert_close(got[0], eager[0], atol=1e-2, rtol=1e-3)
            for name in got[1]:
                torch.testing.assert_close(got[1][name], eager[1][name], atol=0.5, rtol=0.01)
        else:
            assert_same_loss_and_grads(got, eager)
    assert counters["stats"]["unique_graphs"] == 1
