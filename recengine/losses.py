"""The training losses a recipe can choose (``train.loss``), each built once.

Every loss takes (hidden [B, L, H], positions [K], targets [K]): a fixed-size list of flat
positions to score and their target items, with ``IGNORE`` in padding slots (see
``recengine.data.batching``), so no loss needs a host sync. The default full cross-entropy
is ``recengine.loss.cross_entropy_at``, chunked over the catalog.

- ``ce``: full softmax cross-entropy over the catalog (with label smoothing).
- ``sampled_softmax``: softmax over the target and N negatives shared by the batch, drawn
  by popularity (or uniformly); every logit is corrected by -log Q(item), the log of its
  sampling probability, so the sampled loss estimates the full softmax without a
  popularity bias (the log-Q correction of Yi et al., RecSys 2019).
- ``gbce``: gSASRec's generalised binary cross-entropy (Petrov & Macdonald, RecSys 2023):
  BCE over the target and N uniform negatives with the positive probability raised to
  beta = alpha (t (1 - 1/alpha) + 1/alpha), alpha = N / (num_items - 1), which undoes
  the overconfidence that negative sampling causes.
- ``focal``: full softmax with the focal factor (1 - p_target)^gamma (Lin et al. 2017),
  which down-weights easy (often popular) targets.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recengine.loss import IGNORE, cross_entropy_at
from recengine.model import SequenceModel, item_scores

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (hidden, positions, targets) -> scalar


def _queries(model: SequenceModel, hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor):
    """(queries [K, H'], targets with padding slots pointing at item 1, valid-slot mask [K])."""
    valid = targets != IGNORE
    queries = model.project(hidden.reshape(-1, hidden.shape[-1])[positions])
    return queries, torch.where(valid, targets, 1), valid


def _mean(per_slot: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return (per_slot * valid).sum() / valid.sum().clamp(min=1)


def _candidate_logits(model: SequenceModel, queries: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(target logits [N], negative logits [N, S]); a negative equal to the target is -inf."""
    weight, bias = model.output_embedding()
    positive = (queries * weight[targets]).sum(-1)
    negative = queries @ weight[negatives].t()
    if bias is not None:
        positive, negative = positive + bias[targets], negative + bias[negatives]
    negative = negative.float().masked_fill(negatives[None, :] == targets[:, None], float("-inf"))
    return positive.float(), negative


def full_cross_entropy(model: SequenceModel, label_smoothing: float = 0.0) -> Loss:
    return lambda hidden, positions, targets: cross_entropy_at(model, hidden, positions, targets, label_smoothing)


def sampled_softmax(model: SequenceModel, negatives: int, item_counts: np.ndarray | None, sampling: str = "popularity") -> Loss:
    weights = np.ones(model.num_items + 1) if sampling == "uniform" or item_counts is None else item_counts[: model.num_items + 1] + 1.0
    weights = weights.astype(np.float64)
    weights[0] = 0.0
    probs = torch.from_numpy(weights / weights.sum()).float()
    cdf = torch.cumsum(probs, 0)
    log_q = torch.log(probs.clamp(min=1e-30))

    def loss(hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        queries, targets, valid = _queries(model, hidden, positions, targets)
        draws = torch.rand(negatives, device=hidden.device)
        sampled = torch.searchsorted(cdf.to(hidden.device), draws * cdf[-1]).clamp(1, model.num_items)
        positive, negative = _candidate_logits(model, queries, targets, sampled)
        q = log_q.to(hidden.device)
        logits = torch.cat([(positive - q[targets])[:, None], negative - q[sampled][None, :]], dim=1)
        return _mean(F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=hidden.device), reduction="none"), valid)

    return loss


def gbce(model: SequenceModel, negatives: int, t: float) -> Loss:
    alpha = negatives / max(model.num_items - 1, 1)
    beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
    # Unlike a softmax, BCE is not shift-invariant: from scores near 0 its first move is to push
    # *every* score down to log(beta / N), where constant scores have the lowest loss. A model
    # without a large output bias builds that offset as q . w: every query turns to one shared
    # direction, and they stay there (measured: by step 25 the queries are one vector across users,
    # and training never leaves the popularity level). Shifting every logit by that level leaves
    # rankings, so evaluation, unchanged and takes the offset off the model; sigmoid(score + shift)
    # is the calibrated probability.
    shift = math.log(beta / negatives)

    def loss(hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        queries, targets, valid = _queries(model, hidden, positions, targets)
        sampled = torch.randint(1, model.num_items + 1, (negatives,), device=hidden.device)
        positive, negative = _candidate_logits(model, queries, targets, sampled)
        positive, negative = positive + shift, negative + shift
        # -log(sigmoid(s)^beta) = beta * softplus(-s); -log(1 - sigmoid(s)) = softplus(s)
        per_position = beta * F.softplus(-positive) + F.softplus(negative).sum(dim=1)
        return _mean(per_position, valid) / (negatives + 1)

    return loss


def focal(model: SequenceModel, gamma: float) -> Loss:
    def loss(hidden: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        queries, targets, valid = _queries(model, hidden, positions, targets)
        weight, bias = model.output_embedding()
        logits = queries @ weight.t()
        if bias is not None:
            logits = logits + bias
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, targets[:, None]).squeeze(1)
        return _mean(-((1 - log_p.exp()) ** gamma) * log_p, valid)

    return loss


def build_loss(model: SequenceModel, train_cfg, item_counts: np.ndarray | None = None) -> Loss:
    """The loss ``train_cfg.loss`` names, built once for ``model``."""
    builders: dict[str, Callable[[], Loss]] = {
        "ce": lambda: full_cross_entropy(model, train_cfg.label_smoothing),
        "sampled_softmax": lambda: sampled_softmax(model, train_cfg.loss_negatives, item_counts, train_cfg.loss_sampling),
        "gbce": lambda: gbce(model, train_cfg.loss_negatives, train_cfg.gbce_t),
        "focal": lambda: focal(model, train_cfg.focal_gamma),
    }
    return builders[getattr(train_cfg, "loss", "ce")]()


class Objective(nn.Module):
    """The model's two uses as one module, so DDP and FSDP2 see them as ``forward`` calls
    (their hooks run only there): ``(inputs, positions, targets[, scale])`` -> training loss,
    ``(tokens)`` -> catalog scores at the last position, for evaluation.

    ``scale`` (data-parallel ranks only, see ``Batch.loss_scale``) turns this rank's mean
    into its share of the global batch's mean; without it the loss is returned untouched."""

    def __init__(self, model: SequenceModel, loss: Loss):
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, inputs: torch.Tensor, positions: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.model.encode(inputs)
        if positions is None:
            return item_scores(self.model, hidden[:, -1])
        loss = self.loss(hidden, positions, targets)
        if scale is None:
            return loss
        # A rank with nothing to predict has scale 0 and a 0/0 mean: count it as 0, with zero gradients.
        return torch.where(scale > 0, loss, 0.0) * scale
