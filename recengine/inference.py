"""Loading a trained run for recommendation: ``recengine.inference.load(RUN_DIR)``."""

from __future__ import annotations

from pathlib import Path

import torch

from recengine.data.batching import gather_windows
from recengine.errors import UserError
from recengine.model import item_scores
from recengine.plugins import Registry, load_registry
from recengine.recipe import read_toml, resolve
from recengine.runs import RunDir
from recengine.training import build_model, load_weights, resolve_device


class Recommender:
    """A trained model plus its item-id mapping; takes and returns original item ids."""

    def __init__(self, model, item_ids: list[str] | None, device: torch.device):
        self.model, self.device = model.eval(), device
        self.item_ids = item_ids or [str(i) for i in range(model.num_items + 1)]
        self.index = {item: i for i, item in enumerate(self.item_ids) if i > 0}

    def encode_history(self, history: list[str]) -> list[int]:
        unknown = [str(h) for h in history if str(h) not in self.index]
        if unknown:
            shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise UserError(f"unknown item id(s) in history: {shown} (ids must be ones seen in training, e.g. {self.item_ids[1]})")
        return [self.index[str(h)] for h in history]

    @torch.no_grad()
    def recommend(self, histories: list[list[str]], k: int = 10, exclude_history: bool = True) -> list[list[tuple[str, float]]]:
        if k < 1:
            raise UserError(f"k must be at least 1 (got {k})")
        encoded = [self.encode_history(h) for h in histories]
        if any(len(h) == 0 for h in encoded):
            raise UserError("a history is empty: give at least one item id")
        lengths = torch.tensor([len(h) for h in encoded], device=self.device)
        items = torch.tensor([i for h in encoded for i in h], device=self.device)
        offsets = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])
        tokens = gather_windows(items, offsets[:-1], offsets[1:], self.model.max_len - 1)
        tokens = torch.cat([tokens, tokens.new_full((len(encoded), 1), self.model.mask_token)], dim=1)
        scores = item_scores(self.model, self.model.encode(tokens)[:, -1])
        if exclude_history:
            scores[torch.repeat_interleave(torch.arange(len(encoded), device=self.device), lengths), items] = float("-inf")
        top = scores.topk(min(k, self.model.num_items), dim=1)
        return [[(self.item_ids[i], s) for i, s in zip(ids, vals) if s > float("-inf")]
                for ids, vals in zip(top.indices.tolist(), top.values.tolist())]


def load_run_recipe(run: RunDir, registry: Registry, overrides: list[str] = ()):
    from recengine.recipe import apply_overrides

    return resolve(apply_overrides(read_toml(run.recipe), list(overrides)), registry, source=str(run.recipe))


def load(run_dir: str | Path, device: str = "auto", checkpoint: str = "best", registry: Registry | None = None) -> Recommender:
    run = RunDir.open(run_dir)
    recipe = load_run_recipe(run, registry or load_registry())
    info = run.read_data_info()
    model, adapter = build_model(recipe, info["num_items"], run)
    load_weights(run, model, adapter, checkpoint)
    model = adapter.for_inference(model)
    dev = resolve_device(device)
    return Recommender(model.to(dev), info["item_ids"], dev)
