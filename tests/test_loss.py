import pytest
import torch
import torch.nn.functional as F

from recengine.loss import IGNORE, chunked_cross_entropy


def _inputs(n=37, h=16, v=53, seed=0, bias=True, ignore=5):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(n, h, generator=g, dtype=torch.float64).requires_grad_()
    w = torch.randn(v, h, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(v, generator=g, dtype=torch.float64).requires_grad_() if bias else None
    t = torch.randint(0, v, (n,), generator=g)
    t[torch.randperm(n, generator=g)[:ignore]] = IGNORE
    return q, w, b, t


def _grads(loss, tensors):
    return torch.autograd.grad(loss, [x for x in tensors if x is not None])


@pytest.mark.parametrize("chunk", [1, 7, 37, 1000])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("bias", [True, False])
def test_chunked_equals_full_cross_entropy_values_and_grads(chunk, smoothing, bias):
    q, w, b, t = _inputs(seed=chunk, bias=bias)
    logits = q @ w.t() + (b if b is not None else 0)
    ref = F.cross_entropy(logits, t, ignore_index=IGNORE, label_smoothing=smoothing)
    got = chunked_cross_entropy(q, w, b, t, label_smoothing=smoothing, chunk=chunk)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    for g_got, g_ref in zip(_grads(got, (q, w, b)), _grads(ref, (q, w, b))):
        torch.testing.assert_close(g_got, g_ref, rtol=1e-10, atol=1e-12)


def test_chunked_float32_close_to_float64_reference():
    q, w, b, t = _inputs(n=64, h=32, v=301, seed=3)
    ref = F.cross_entropy(q @ w.t() + b, t, ignore_index=IGNORE)
    q32, w32, b32 = (x.detach().float().requires_grad_() for x in (q, w, b))
    got = chunked_cross_entropy(q32, w32, b32, t, chunk=10)
    assert abs(got.item() - ref.item()) / abs(ref.item()) < 1e-5
    for g_got, g_ref in zip(_grads(got, (q32, w32, b32)), _grads(ref, (q, w, b))):
        assert ((g_got.double() - g_ref).norm() / g_ref.norm()).item() < 1e-5


def test_chunked_under_bf16_autocast_matches_plain_autocast_path():
    q, w, b, t = _inputs(n=40, h=32, v=97, seed=4)
    q, w, b = (x.detach().float().requires_grad_() for x in (q, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = F.cross_entropy((q @ w.t() + b).float(), t, ignore_index=IGNORE)
        got = chunked_cross_entropy(q, w, b, t, chunk=16)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    for g_got, g_ref in zip(_grads(got, (q, w, b)), _grads(ref, (q, w, b))):
        assert g_got.dtype == torch.float32
        assert ((g_got - g_ref).norm() / g_ref.norm()).item() < 2e-2


def test_all_ignored_gives_nan_like_cross_entropy():
    q, w, b, t = _inputs(n=4, ignore=4)
    assert torch.isnan(chunked_cross_entropy(q, w, b, t, chunk=2))
    assert torch.isnan(F.cross_entropy(q @ w.t() + b, t, ignore_index=IGNORE))
