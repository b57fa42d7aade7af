import warnings

import pytest
import torch

from recengine.plugins import load_registry
from recengine_plugins import torch_compile as plugin


def _compiler(**options):
    return load_registry().get("compiler", "torch-compile").build(options)


def test_options_are_validated():
    entry = load_registry().get("compiler", "torch-compile")
    with pytest.raises(Exception):
        entry.build({"mode": "fastest"})


def test_inductor_options_are_checked_and_go_over_the_modes_own():
    entry = load_registry().get("compiler", "torch-compile")
    with pytest.raises(Exception, match="did you mean 'combo_kernels'"):
        entry.build({"inductor": {"combo_kernel": True}})
    with pytest.raises(Exception, match='need backend = "inductor"'):
        entry.build({"inductor": {"combo_kernels": True}, "backend": "eager"})
    with pytest.raises(Exception, match="'combo_kernels' takes bool, not 1"):  # torch.compile would raise outside the fallback
        entry.build({"inductor": {"combo_kernels": 1}})
    assert plugin.CompileOptions(inductor={"triton": {"cudagraphs": True}}).inductor == {"triton.cudagraphs": True}  # TOML's nesting
    assert plugin.CompileOptions(inductor={"cpu_gpu_bw": 50}).inductor == {"cpu_gpu_bw": 50.0}  # a whole number for a float
    # None defaults: the annotation says what they take
    assert plugin.CompileOptions(inductor={"reorder_prefetch_limit": 4}).inductor == {"reorder_prefetch_limit": 4}
    with pytest.raises(Exception, match="'reorder_prefetch_limit' takes int, not 'x'"):
        plugin.CompileOptions(inductor={"reorder_prefetch_limit": "x"})
    with pytest.raises(Exception, match="'post_grad_custom_pre_pass' takes a value of a kind recipes cannot hold"):
        plugin.CompileOptions(inductor={"post_grad_custom_pre_pass": "x"})
    assert plugin.CompileOptions(inductor={"triton": {"max_tiles": 2}}).inductor == {"triton.max_tiles": 2}  # sub-config: int | None
    with pytest.raises(Exception, match="'triton.max_tiles' takes int, not True"):
        plugin.CompileOptions(inductor={"triton.max_tiles": True})
    with pytest.raises(Exception, match="cannot hold"):  # Callable[[int], int] | None: the int inside is no member
        plugin.CompileOptions(inductor={"bucket_all_reduces_fx_bucket_size_determinator": 4})
    options = plugin.CompileOptions(mode="reduce-overhead", inductor={"combo_kernels": True})
    assert plugin.mode_and_options(options) == {"options": {"triton.cudagraphs": True, "combo_kernels": True}}
    assert plugin.mode_and_options(plugin.CompileOptions(mode="reduce-overhead")) == {"mode": "reduce-overhead"}
    assert plugin.mode_and_options(plugin.CompileOptions()) == {"mode": None}
    # CUDA graphs need a step marker per call, whether the mode or an option turns them on
    assert plugin.uses_cuda_graphs(plugin.CompileOptions(mode="reduce-overhead"))
    assert plugin.uses_cuda_graphs(plugin.CompileOptions(inductor={"triton.cudagraphs": True}))
    assert not plugin.uses_cuda_graphs(plugin.CompileOptions(mode="reduce-overhead", inductor={"triton.cudagraphs": False}))
    assert not plugin.uses_cuda_graphs(plugin.CompileOptions())


def test_compiled_function_gives_the_same_result():
    fn = _compiler(backend="eager")(lambda x, y: torch.tanh(x) * y + 1)
    x, y = torch.randn(5), torch.randn(5)
    torch.testing.assert_close(fn(x, y), torch.tanh(x) * y + 1)


def test_falls_back_to_eager_with_one_warning_when_compile_fails(monkeypatch):
    calls = {"compiled": 0}

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls["compiled"] += 1
            raise RuntimeError("InductorError: no working C compiler found\nmore details")
        return run

    monkeypatch.setattr(plugin.torch, "compile", broken_compile)
    fn = _compiler()(lambda x: x * 2)
    with pytest.warns(plugin.CompileFallbackWarning, match="no working C compiler"):
        assert fn(torch.tensor(3.0)).item() == 6.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, no second compile attempt
        assert fn(torch.tensor(4.0)).item() == 8.0
    assert calls["compiled"] == 1


def test_an_error_eager_also_raises_is_not_hidden(monkeypatch):
    monkeypatch.setattr(plugin.torch, "compile", lambda fn, **kw: fn)

    def bad(x):
        raise ValueError("real bug")

    with pytest.raises(ValueError, match="real bug"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _compiler()(bad)(torch.tensor(1.0))


def test_grouped_batches_of_every_length_and_mask_count_share_one_dynamic_graph():
    # The fast path (bf16 autocast, dynamic shapes) must not specialise on the trimmed length,
    # the masked-slot budget or a short last batch: one compiled graph serves them all, so
    # train.length_grouping costs one compile, not one per shape. A Python int taken from a
    # batch dimension inside the step would break this.
    import itertools

    from recengine.bench import batch_stream, shape_of

    from ..conftest import random_batches, tiny_train_step

    compiled = []

    @torch._dynamo.register_backend(name="counting_test_backend")
    def counting(gm, example_inputs):
        compiled.append(gm)
        return gm.forward

    batches = random_batches(50, 32, 0.15, min_length=5)
    model, step = tiny_train_step(50, precision={"name": "amp"},
                                  compiler={"name": "torch-compile", "backend": "counting_test_backend", "dynamic": True})
    torch._dynamo.reset()
    shapes = set()
    try:
        for batch in itertools.islice(batch_stream(batches, 0), 12):  # crosses the short last batch (10 per epoch)
            shapes.add(shape_of(batch))
            step(batch, 1e-3)
    finally:
        torch._dynamo.reset()
    assert len({s[0][1] for s in shapes}) >= 3 and len({s[1] for s in shapes}) >= 2  # lengths, mask budgets
    assert len({s[0][0] for s in shapes}) == 2  # the short last batch came too
    assert len(compiled) == 1
