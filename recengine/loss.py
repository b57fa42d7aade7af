"""Training loss: cross-entropy over the whole catalog, at masked positions only.

Only the masked positions are scored, and even those are scored a chunk of rows at a
time: ``chunked_cross_entropy`` never holds the full [masked tokens, catalog] fp32 logits.
Its backward recomputes each chunk's logits from the saved log-sum-exp instead of keeping
them, so peak memory is one chunk, not the whole matrix, while the result (values and
gradients) is that of ``F.cross_entropy`` on the full logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recengine.model import SequenceModel, compute_dtype, output_logits

IGNORE = -100  # target of a padding slot in a fixed-size batch of masked positions (F.cross_entropy's ignore_index)
CHUNK_ELEMENTS = 2**26  # logits per chunk: 256 MB in fp32


def _compute_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype:
    # The custom Function runs its matmuls in the dtype autocast would have picked.
    return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else dtype


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, queries, weight, bias, targets, label_smoothing: float, chunk: int, dtype: torch.dtype):
        q, w = queries.to(dtype), weight.to(dtype)
        n, classes = q.shape[0], w.shape[0]
        valid = targets != IGNORE
        safe_targets = torch.where(valid, targets, 0)
        losses = []
        lse_parts = []
        for lo in range(0, n, chunk):
            z = _logits(q[lo : lo + chunk], w, bias)
            lse = torch.logsumexp(z, dim=1)
            row_loss = lse - (1 - label_smoothing) * z.gather(1, safe_targets[lo : lo + chunk, None]).squeeze(1)
            if label_smoothing:
                row_loss = row_loss - label_smoothing / classes * z.sum(dim=1)
            losses.append(row_loss)
            lse_parts.append(lse)
        count = valid.sum()
        loss = torch.where(valid, torch.cat(losses), 0.0).sum() / count
        ctx.save_for_backward(q, w, bias if bias is not None else torch.empty(0), safe_targets, valid, torch.cat(lse_parts), count)
        ctx.has_bias, ctx.label_smoothing, ctx.chunk = bias is not None, label_smoothing, chunk
        ctx.input_dtypes = (queries.dtype, weight.dtype)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        q, w, bias, targets, valid, lse, count = ctx.saved_tensors
        bias = bias if ctx.has_bias else None
        eps, chunk, classes = ctx.label_smoothing, ctx.chunk, w.shape[0]
        row_grad = torch.where(valid, grad_loss / count, 0.0)  # d loss / d row loss
        grad_q = torch.empty(q.shape, dtype=ctx.input_dtypes[0], device=q.device)
        acc = torch.promote_types(w.dtype, torch.float32)  # gradients accumulate over chunks in (at least) fp32
        grad_w = torch.zeros(w.shape, dtype=acc, device=w.device)
        grad_b = torch.zeros(classes, dtype=acc, device=w.device) if bias is not None else None
        for lo in range(0, q.shape[0], chunk):
            hi = min(lo + chunk, q.shape[0])
            z = _logits(q[lo:hi], w, bias)
            # d row loss / d z = softmax(z) - (1 - eps) one_hot(target) - eps / classes
            g = torch.exp(z - lse[lo:hi, None])
            if eps:
                g = g - eps / classes
            g.scatter_add_(1, targets[lo:hi, None], torch.full((hi - lo, 1), -(1 - eps), dtype=g.dtype, device=g.device))
            g = g * row_grad[lo:hi, None]
            if grad_b is not None:
                grad_b += g.sum(dim=0)
            g = g.to(w.dtype)
            grad_q[lo:hi] = (g @ w).to(grad_q.dtype)
            grad_w += g.t() @ q[lo:hi]
        grad_w = grad_w.to(ctx.input_dtypes[1])
        return grad_q, grad_w, (grad_b.to(bias.dtype) if grad_b is not None else None), None, None, None, None


def _logits(q: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    # Matmul in the compute dtype, then fp32 (as autocast's matmul + fp32 bias promotion does).
    z = q @ w.t()
    z = z.to(torch.promote_types(z.dtype, torch.float32))
    return z + bias if bias is not None else z


def chunked_cross_entropy(queries: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                          label_smoothing: float = 0.0, chunk: int | None = None) -> torch.Tensor:
    """``F.cross_entropy(queries @ weight.T + bias, targets, ignore_index=IGNORE, label_smoothing=...)``,
    computed ``chunk`` rows at a time (default: as many rows as fit ``CHUNK_ELEMENTS`` logits)."""
    chunk = chunk or max(1, CHUNK_ELEMENTS // weight.shape[0])
    dtype = _compute_dtype(queries.device.type, queries.dtype)
    return _ChunkedCrossEntropy.apply(queries, weight, bias, targets, float(label_smoothing), int(chunk), dtype)


def low_precision_cross_entropy(queries: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                                label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy on bf16/fp16 logits: the [masked, catalog] matrix exists only in the low
    precision (never in fp32), and ``F.cross_entropy`` accumulates its softmax in fp32
    internally. Four passes over the logits instead of the chunked version's ~20, and plain
    ops that torch.compile can fuse."""
    logits = output_logits(queries, weight, bias)
    if label_smoothing:  # smoothing averages over every class: leave out the -inf padding columns
        logits = logits[:, : weight.shape[0]]
    with torch.autocast(queries.device.type, enabled=False):  # autocast would upcast the whole matrix to fp32
        return F.cross_entropy(logits, targets, ignore_index=IGNORE, label_smoothing=label_smoothing)


def cross_entropy_at(model: SequenceModel, hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor,
                     label_smoothing: float = 0.0, chunk: int | None = None) -> torch.Tensor:
    """Loss at a fixed-size set of flat ``positions`` into ``hidden`` [B, L, H]; slots whose
    target is ``IGNORE`` are padding. A fixed size means no host sync and static shapes.
    Under bf16/fp16 autocast the logits stay in that precision; in fp32 they are chunked."""
    queries = model.project(hidden.reshape(-1, hidden.shape[-1])[positions])
    weight, bias = model.output_embedding()
    if compute_dtype(queries) in (torch.bfloat16, torch.float16):
        return low_precision_cross_entropy(queries, weight, bias, targets, label_smoothing)
    return chunked_cross_entropy(queries, weight, bias, targets, label_smoothing, chunk)
