"""Training loss: cross-entropy over the whole catalog, at masked positions only.

Only the N masked positions are scored, so the [N, catalog] logits exist but a
[batch, length, catalog] tensor never does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recengine.data.sequences import PAD
from recengine.model import SequenceModel


def masked_cross_entropy(model: SequenceModel, hidden: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    selected = labels != PAD
    queries = model.project(hidden[selected])
    weight, bias = model.output_embedding()
    logits = queries @ weight.t()
    if bias is not None:
        logits = logits + bias
    return F.cross_entropy(logits.float(), labels[selected], label_smoothing=label_smoothing)
