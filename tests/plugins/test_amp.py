import torch

from recengine.plugins import load_registry


def _build(options=None, device="cpu"):
    return load_registry().get("precision", "amp").build(options, device=torch.device(device))


def test_bf16_is_the_default_and_autocast_is_active():
    amp = _build()
    assert not amp.scaler.is_enabled()
    with amp.autocast():
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        out = torch.randn(4, 8) @ torch.randn(8, 3)
    assert out.dtype == torch.bfloat16
    assert not torch.is_autocast_enabled("cpu")


def test_fp16_enables_the_grad_scaler():
    amp = _build({"dtype": "fp16"})
    assert amp.scaler.is_enabled()
    with amp.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.float16


def test_amp_runs_a_train_step_on_cpu():
    from recengine.training import TrainStep, adamw
    from recengine.data.batching import ClozeBatches
    from recengine.data.sequences import Sequences
    from recengine_plugins.bert4rec import bert4rec
    from recengine.recipe import TrainSection

    torch.manual_seed(0)
    model = bert4rec(30, hidden=16, layers=1, heads=2, max_len=8)
    seqs = Sequences.from_lists([[1 + (i + j) % 30 for j in range(3 + i % 6)] for i in range(32)], 30)
    cfg = TrainSection()
    step = TrainStep(model, adamw(model, 1e-3, 0.0, (0.9, 0.999), torch.device("cpu")), _build(), lambda fn: fn, cfg)
    batch = next(iter(ClozeBatches(seqs, 8, 16, 0.3).epoch(0)))
    before = model.output_weight.detach().clone()
    loss, grad_norm = step(batch, 1e-3)
    assert torch.isfinite(loss) and torch.isfinite(grad_norm)
    assert model.output_weight.dtype == torch.float32
    assert not torch.equal(before, model.output_weight)
