"""Recommending from a trained run: ``recengine.load(RUN_DIR).recommend(histories, k)``.

Input handling, shared by the Python API, ``recengine recommend`` and exported artifacts:

- item ids are the original ids of the dataset (compared as strings, so ``12`` and ``"12"``
  are the same item); an id not seen in training is rejected, naming it;
- an empty history is rejected;
- a history longer than ``max_len - 1`` items is truncated to its last ``max_len - 1`` items
  (one position is kept for the [MASK] token whose prediction is the recommendation).
  The Python API and the CLI still exclude every item of the full history; an exported
  artifact only sees, and so only excludes, the window it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from recengine.data.batching import gather_windows
from recengine.errors import UserError
from recengine.model import SequenceModel, item_scores
from recengine.plugins import Registry, load_registry
from recengine.recipe import read_toml, resolve
from recengine.runs import RunDir
from recengine.training import build_model, load_weights, resolve_device

Recommendations = list[list[tuple[str, float]]]


class ItemIndex:
    """Original item ids <-> model ids (1..num_items; 0 is padding), with the input checks."""

    def __init__(self, item_ids: Sequence[str]):
        self.item_ids = [str(i) for i in item_ids]
        self.index = {item: i for i, item in enumerate(self.item_ids) if i > 0}

    def encode(self, history: Iterable, where: str) -> list[int]:
        """Model ids for one history; ``where`` names it in error messages (e.g. 'line 3')."""
        if isinstance(history, (str, bytes)) or not isinstance(history, Iterable):
            raise UserError(f"{where}: a history must be a list of item ids, got {history!r}")
        history = [str(h) for h in history]
        if not history:
            raise UserError(f"{where}: empty history; give at least one item id")
        unknown = [h for h in dict.fromkeys(history) if h not in self.index]
        if unknown:
            shown = ", ".join(unknown[:10]) + (f" ... ({len(unknown)} in all)" if len(unknown) > 10 else "")
            raise UserError(f"{where}: unknown item id(s) {shown}; only ids seen in training can be used (e.g. {self.item_ids[1]})")
        return [self.index[h] for h in history]

    def encode_all(self, histories: Iterable) -> list[list[int]]:
        return [self.encode(h, f"histories[{i}]") for i, h in enumerate(histories)]

    def decode(self, ids: list[int], scores: list[float]) -> list[tuple[str, float]]:
        """(original id, score) pairs, leaving out excluded items (score -inf)."""
        return [(self.item_ids[i], s) for i, s in zip(ids, scores) if s > float("-inf")]


def left_padded(encoded: list[list[int]], length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[B, length] int64: each history's last ``length`` items, left-padded with 0."""
    lengths = torch.tensor([len(h) for h in encoded], dtype=torch.long, device=device)
    items = torch.tensor([i for h in encoded for i in h], dtype=torch.long, device=device)
    ends = lengths.cumsum(0)
    return gather_windows(items, ends - lengths, ends, length)


class TopK(nn.Module):
    """What an exported artifact computes: left-padded histories [B, max_len - 1] (int64,
    0 = padding) -> (top-k model ids [B, k] int64, their scores [B, k] float32).

    A [MASK] is appended and its prediction scores the catalog; with ``exclude_history``
    the items in the window get -inf (padding, id 0, always does).
    """

    def __init__(self, model: SequenceModel, k: int, exclude_history: bool = True):
        super().__init__()
        self.model, self.k, self.exclude_history = model, min(k, model.num_items), exclude_history
        self.num_items, self.max_len = model.num_items, model.max_len

    def scores(self, tokens: torch.Tensor) -> torch.Tensor:
        masks = torch.full_like(tokens[:, :1], self.model.mask_token)
        hidden = self.model.encode(torch.cat([tokens, masks], dim=1))[:, -1]
        return item_scores(self.model, hidden)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.scores(tokens)
        if self.exclude_history:
            scores = scores.scatter(1, tokens, float("-inf"))
        top = scores.topk(self.k, dim=1)
        return top.indices, top.values


class Recommender:
    """A trained model plus its item-id mapping; takes and returns original item ids."""

    def __init__(self, model: SequenceModel, item_ids: list[str] | None, device: torch.device, adapter=None):
        self.model, self.device, self.adapter = model.eval(), device, adapter
        self.items = ItemIndex(item_ids or [str(i) for i in range(model.num_items + 1)])
        self.scorer = TopK(self.model, model.num_items)
        self.max_len = model.max_len

    @property
    def item_ids(self) -> list[str]:
        return self.items.item_ids

    def recommend(self, histories: Sequence[Sequence], k: int = 10, exclude_history: bool = True,
                  batch_size: int = 512) -> Recommendations:
        """Top-k (original item id, score) pairs for each history (oldest item first).

        Histories are validated up front (unknown ids and empty histories raise
        ``UserError``), then scored ``batch_size`` at a time on the model's device.
        """
        encoded = self.items.encode_all(histories)
        out: Recommendations = []
        for start in range(0, len(encoded), batch_size):
            out += self.recommend_encoded(encoded[start:start + batch_size], k, exclude_history)
        return out

    @torch.no_grad()
    def recommend_encoded(self, encoded: list[list[int]], k: int, exclude_history: bool = True) -> Recommendations:
        """``recommend`` for one batch of already-encoded (model id) histories."""
        if k < 1:
            raise UserError(f"k must be at least 1 (got {k})")
        if not encoded:
            return []
        scores = self.scorer.scores(left_padded(encoded, self.max_len - 1, self.device))
        if exclude_history:  # the whole history, not only the window the model saw
            rows = torch.repeat_interleave(torch.arange(len(encoded), device=self.device),
                                           torch.tensor([len(h) for h in encoded], device=self.device))
            scores[rows, torch.tensor([i for h in encoded for i in h], device=self.device)] = float("-inf")
        top = scores.topk(min(k, self.model.num_items), dim=1)
        return [self.items.decode(ids, vals) for ids, vals in zip(top.indices.tolist(), top.values.tolist())]


def load_run_recipe(run: RunDir, registry: Registry, overrides: list[str] = ()):
    from recengine.recipe import apply_overrides

    return resolve(apply_overrides(read_toml(run.recipe), list(overrides)), registry, source=str(run.recipe))


def load_model(run_dir: str | Path, checkpoint: str = "best", registry: Registry | None = None):
    """(model with trained weights, its adapter, original item ids) of a run, on the CPU."""
    run = RunDir.open(run_dir)
    recipe = load_run_recipe(run, registry or load_registry())
    info = run.read_data_info()
    model, adapter = build_model(recipe, info["num_items"], run)
    load_weights(run, model, adapter, checkpoint)
    model = adapter.for_inference(model)
    return model.eval(), adapter, info["item_ids"]


def load(run_dir: str | Path, device: str = "auto", checkpoint: str = "best", registry: Registry | None = None) -> Recommender:
    """A ``Recommender`` for the run's ``checkpoint`` ('best', 'latest' or a step directory name)."""
    model, adapter, item_ids = load_model(run_dir, checkpoint, registry)
    dev = resolve_device(device)
    return Recommender(model.to(dev), item_ids, dev, adapter)
