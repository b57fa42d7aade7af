"""Dataset `synthetic`: deterministic sequences with real structure, embedded in the engine.

- Item popularity follows a power law (Zipf with `popularity_exponent`).
- Each item has a few likely successors (a sparse item-to-item transition graph, drawn by
  popularity); with probability `follow_prob` a user's next item is one of them.
- Otherwise the next item comes from the user's current taste: one of `tastes` item
  clusters, which drifts to a new cluster with probability `drift` at each step.

- `phase` simulates a later period of the same catalog (drift): phase > 0 rewires a `rewire`
  share of the items' successors and draws new users; popularity and tastes stay. Phase 0
  is the original data, unchanged by these options.

A sequential model can learn the transitions and tastes; a popularity ranking cannot,
so a trained BERT4Rec must clearly beat popularity here.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from recengine.data import Dataset, Sequences
from recengine.hookspecs import hookimpl


class SyntheticOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: int = Field(2000, ge=1, le=10_000_000, description="Number of users.")
    items: int = Field(500, ge=10, le=10_000_000, description="Catalog size.")
    mean_length: float = Field(20.0, ge=3, le=1000, description="Mean sequence length (minimum 3).")
    seed: int = Field(0, ge=0, description="Seed; the same options always give the same data.")
    popularity_exponent: float = Field(1.0, ge=0, le=3, description="Zipf exponent of item popularity.")
    successors: int = Field(4, ge=1, le=64, description="Likely next items per item.")
    follow_prob: float = Field(0.6, ge=0, le=1, description="Chance the next item follows the transition graph.")
    tastes: int = Field(20, ge=1, description="Number of taste clusters of items.")
    drift: float = Field(0.05, ge=0, le=1, description="Per-step chance that a user's taste changes.")
    phase: int = Field(0, ge=0, description="Period: 0 = original; N > 0 = a later period with a rewired transition graph and new users.")
    rewire: float = Field(0.5, ge=0, le=1, description="Share of items whose successors change in a phase > 0.")


def synthetic(users: int, items: int, mean_length: float, seed: int = 0, popularity_exponent: float = 1.0,
              successors: int = 4, follow_prob: float = 0.6, tastes: int = 20, drift: float = 0.05,
              phase: int = 0, rewire: float = 0.5) -> Dataset:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** popularity_exponent
    popularity = popularity[rng.permutation(items)]  # popularity unrelated to id order
    popularity /= popularity.sum()
    next_items = rng.choice(items, size=(items, successors), p=popularity)
    cluster = rng.integers(tastes, size=items)
    members = [np.flatnonzero(cluster == c) for c in range(tastes)]
    if phase > 0:  # a later period: same world, part of the transition graph rewired, new users
        rng = np.random.default_rng([seed, phase])
        changed = rng.random(items) < rewire
        next_items[changed] = rng.choice(items, size=(int(changed.sum()), successors), p=popularity)
    taste_of_user = rng.integers(tastes, size=users)
    lengths = 3 + rng.poisson(mean_length - 3, size=users)
    steps = int(lengths.max())

    def from_taste(taste: np.ndarray) -> np.ndarray:
        # Vectorised over users: a uniform pick inside each user's taste cluster.
        sizes = np.array([max(len(m), 1) for m in members])
        picks = (rng.random(len(taste)) * sizes[taste]).astype(np.int64)
        flat = np.concatenate([m if len(m) else np.array([0]) for m in members])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        return flat[starts[taste] + picks]

    current = from_taste(taste_of_user)
    matrix = np.empty((users, steps), dtype=np.int32)
    for t in range(steps):  # loop over positions, vectorised over users
        matrix[:, t] = current
        change = rng.random(users) < drift
        taste_of_user = np.where(change, rng.integers(tastes, size=users), taste_of_user)
        follow = rng.random(users) < follow_prob
        successor = next_items[current, rng.integers(successors, size=users)]
        current = np.where(follow, successor, from_taste(taste_of_user))
    keep = np.arange(steps)[None, :] < lengths[:, None]
    return Dataset(Sequences.from_lengths(matrix[keep] + 1, lengths, items))


@hookimpl
def register_datasets(register):
    register("synthetic", lambda options: synthetic(**options.model_dump()), options=SyntheticOptions)
