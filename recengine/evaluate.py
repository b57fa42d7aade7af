"""Evaluation under an explicit protocol, batched on the device with no per-user Python loop.

Each user's input is the last ``max_len - 1`` items of their history followed by [MASK];
the model's scores at that final position rank the candidates:

- protocol "full": the whole catalog. Items in the user's history are excluded from the
  ranking by default (``exclude_history``).
- protocol "sampled": the target against N negatives per user, drawn once from a fixed
  seed among the items outside the user's whole sequence, uniformly or by popularity,
  stored in the run directory (``negatives.safetensors``) and reused by every evaluation
  of every checkpoint, so checkpoints stay comparable.

Ties count against the target (see ``recengine.metrics``). Per-user ranks and hit counts
are integers gathered over all batches, so results do not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save

from recengine.checkpoint import atomic_write_bytes
from recengine.data.batching import gather_windows
from recengine.data.sequences import Sequences
from recengine.data.split import EvalSet
from recengine.distributed import Single
from recengine.errors import UserError
from recengine.metrics import DEFAULT_KS, coverage, metrics_from_ranks, recall, sampled_ranks, target_ranks, topk_thresholds
from recengine.model import SequenceModel, item_scores

Scorer = Callable[[torch.Tensor], torch.Tensor]  # [B, L] tokens -> [B, num_items + 1] scores
NEGATIVES_FILE = "negatives.safetensors"


def model_scorer(model: SequenceModel) -> Scorer:
    def score(tokens: torch.Tensor) -> torch.Tensor:
        return item_scores(model, model.encode(tokens)[:, -1])

    return score


def popularity_scorer(item_counts: np.ndarray, device: torch.device | str = "cpu") -> Scorer:
    """The popularity baseline: every user gets the catalog ranked by training counts."""
    popularity = torch.from_numpy(item_counts.astype(np.float32)).to(device)
    popularity[0] = float("-inf")
    return lambda tokens: popularity.expand(tokens.shape[0], -1).clone()


# --- sampled negatives ------------------------------------------------------------------


@dataclass(frozen=True)
class SampledNegatives:
    """``items[i]`` are the N negatives of dataset user ``users[i]`` (``users`` sorted)."""

    users: np.ndarray  # int64 [U]
    items: np.ndarray  # int64 [U, N]
    sampling: str
    seed: int

    @property
    def count(self) -> int:
        return self.items.shape[1]

    def describe(self) -> str:
        return f"sampled ranking against {self.count} {self.sampling} negatives (seed {self.seed})"

    def for_users(self, users: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self.users, users)
        if np.any(rows >= len(self.users)) or np.any(self.users[np.minimum(rows, len(self.users) - 1)] != users):
            raise UserError(f"{NEGATIVES_FILE} has no negatives for some evaluated users; delete it to draw them again")
        return self.items[rows]


def draw_negatives(seqs: Sequences, users: np.ndarray, count: int, sampling: str, seed: int,
                   item_counts: np.ndarray | None = None, chunk: int = 1024) -> SampledNegatives:
    """``count`` distinct negatives per user among the items outside the user's whole sequence.

    Uniform sampling, or popularity sampling (probability proportional to ``item_counts``),
    without replacement via the Gumbel-top-k trick: one random key per catalog item, history
    items removed, the ``count`` largest keys kept. Vectorised over chunks of users.
    """
    users = np.unique(np.asarray(users, dtype=np.int64))
    num_items = seqs.num_items
    if sampling == "popularity":
        if item_counts is None:
            raise ValueError("popularity sampling needs item_counts")
        with np.errstate(divide="ignore"):  # an item never seen is never drawn: log 0 = -inf
            log_weight = torch.from_numpy(np.log(item_counts[: num_items + 1].astype(np.float64))).float()
    else:
        log_weight = torch.zeros(num_items + 1)
    log_weight[0] = float("-inf")  # never the padding id
    g = torch.Generator().manual_seed(seed)
    out = np.empty((len(users), count), dtype=np.int64)
    for lo in range(0, len(users), chunk):
        history = seqs.select(users[lo : lo + chunk])
        u = torch.rand((history.num_users, num_items + 1), generator=g, dtype=torch.float64).clamp_(min=1e-300)
        keys = log_weight[None, :] - torch.log(-torch.log(u)).float()  # log w + Gumbel noise
        rows = torch.repeat_interleave(torch.arange(history.num_users), torch.from_numpy(history.lengths))
        keys[rows, torch.from_numpy(history.items).long()] = float("-inf")
        top = keys.topk(count, dim=1)
        if torch.isinf(top.values[:, -1]).any():
            raise UserError(f"eval.negatives = {count}: some users have fewer than {count} items outside their history; lower it")
        out[lo : lo + history.num_users] = top.indices.numpy()
    return SampledNegatives(users, out, sampling, seed)


def load_or_draw_negatives(path: Path, seqs: Sequences, users: np.ndarray, count: int, sampling: str, seed: int,
                           item_counts: np.ndarray | None = None) -> SampledNegatives:
    """The run's stored negatives; drawn and stored (atomically) the first time."""
    expected = {"count": str(count), "sampling": sampling, "seed": str(seed), "num_items": str(seqs.num_items)}
    if path.is_file():
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
        if {k: meta.get(k) for k in expected} != expected:
            raise UserError(f"{path}: drawn for {meta}, but the recipe asks for {expected}; delete the file to draw new negatives")
        tensors = load_file(str(path))
        return SampledNegatives(tensors["users"], tensors["items"], sampling, seed)
    negatives = draw_negatives(seqs, users, count, sampling, seed, item_counts)
    atomic_write_bytes(path, save({"users": negatives.users, "items": negatives.items}, metadata=expected))
    return negatives


# --- evaluation -------------------------------------------------------------------------


class _Tally:
    """Per-user integers (one slot per user, filled batch by batch); metrics are computed
    once at the end. Data-parallel ranks fill disjoint users and all-reduce the tables."""

    def __init__(self, ks: tuple[int, ...], users: int, num_items: int, device):
        self.ks, self.num_items = ks, num_items
        self.ranks = torch.zeros(users, dtype=torch.long, device=device)
        self.hits = torch.zeros(len(ks), users, dtype=torch.long, device=device)
        self.held_out = torch.zeros(users, dtype=torch.long, device=device)
        self.recommended = torch.zeros(len(ks), num_items + 1, dtype=torch.bool, device=device)
        self.with_coverage = True

    def combine(self, dist: Single) -> None:
        """Sum the per-user tables over ranks (each user was filled by exactly one rank)."""
        table = dist.sum_tensor(torch.cat([self.ranks[None], self.hits, self.held_out[None]]))
        self.ranks, self.hits, self.held_out = table[0], table[1:-1], table[-1]
        self.recommended = dist.sum_tensor(self.recommended.long()) > 0

    def metrics(self) -> dict[str, float]:
        out = metrics_from_ranks(self.ranks.cpu(), self.ks)
        held_out = self.held_out.cpu()
        for i, k in enumerate(self.ks):
            out[f"recall@{k}"] = recall(self.hits[i].cpu(), held_out) if len(held_out) else 0.0
            if self.with_coverage:
                out[f"coverage@{k}"] = coverage(self.recommended[i].cpu(), self.num_items)
        return out


@torch.no_grad()
def evaluate(
    scorer: Scorer,
    eval_set: EvalSet,
    max_len: int,
    mask_token: int,
    ks: tuple[int, ...] = DEFAULT_KS,
    exclude_history: bool = True,
    batch_size: int = 1024,
    device: torch.device | str = "cpu",
    on_batch: Callable[[int], None] = lambda n: None,
    negatives: SampledNegatives | None = None,
    dist: Single = Single(),
) -> dict[str, float]:
    """HR@K, NDCG@K, MRR, Recall@K (and, for full ranking, coverage@K) over ``eval_set``.

    With ``dist`` (data-parallel ranks) each rank scores whole batches of its own and the
    per-user integers are all-reduced: the metrics equal one process's exactly."""
    ks = tuple(ks)
    seqs, held = eval_set.inputs, eval_set.all_held_out
    items = torch.from_numpy(seqs.items).to(device)
    offsets = torch.from_numpy(seqs.offsets).to(device)
    held_items = torch.from_numpy(held.items).to(device).long()
    held_offsets = torch.from_numpy(held.offsets).to(device)
    targets = torch.from_numpy(eval_set.targets).to(device)
    sampled = torch.from_numpy(negatives.for_users(eval_set.users)).to(device) if negatives is not None else None
    n, max_k = len(eval_set), max(ks)
    tally = _Tally(ks, n, seqs.num_items, device)
    tally.with_coverage = sampled is None  # coverage is a property of full-catalog rankings

    def window(lo: int, hi: int) -> torch.Tensor:
        tokens = gather_windows(items, offsets[lo:hi], offsets[lo + 1 : hi + 1], max_len - 1)
        return torch.cat([tokens, tokens.new_full((hi - lo, 1), mask_token)], dim=1)

    for b in dist.my_batches(-(-n // batch_size)):
        if b is None:  # FSDP2 ranks must run forwards in lockstep: a forward that is not counted
            scorer(window(0, min(n, batch_size)))
            continue
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        scores = scorer(window(lo, hi)).float()
        if sampled is None and exclude_history:  # sampled negatives are never in the history
            lengths = offsets[lo + 1 : hi + 1] - offsets[lo:hi]
            rows = torch.repeat_interleave(torch.arange(hi - lo, device=device), lengths)
            scores[rows, items[offsets[lo] : offsets[hi]].long()] = float("-inf")
        held_rows = torch.repeat_interleave(torch.arange(hi - lo, device=device), held_offsets[lo + 1 : hi + 1] - held_offsets[lo:hi])
        held_scores = scores[held_rows, held_items[held_offsets[lo] : held_offsets[hi]]]
        if sampled is None:
            tally.ranks[lo:hi] = target_ranks(scores, targets[lo:hi])
            values, indices = topk_thresholds(scores, max_k)
            for i, k in enumerate(ks):
                in_top = held_scores > values[held_rows, k]
                tally.hits[i, lo:hi].index_add_(0, held_rows, in_top.long())
                top = indices[:, :k][values[:, :k] > values[:, k : k + 1]]
                tally.recommended[i, top] = True
        else:
            batch_negatives = sampled[lo:hi]
            tally.ranks[lo:hi] = sampled_ranks(scores, targets[lo:hi], batch_negatives)
            ahead = (scores.gather(1, batch_negatives)[held_rows] >= held_scores[:, None]).sum(dim=1)
            for i, k in enumerate(ks):
                tally.hits[i, lo:hi].index_add_(0, held_rows, (ahead < k).long())
        tally.held_out[lo:hi] = held_offsets[lo + 1 : hi + 1] - held_offsets[lo:hi]
        on_batch(hi - lo)
    tally.combine(dist)
    return tally.metrics()


def protocol_name(split: str, exclude_history: bool, negatives: SampledNegatives | None) -> str:
    """The one line every results table and JSON carries."""
    split_name = split.replace("_", "-")
    if negatives is not None:
        return f"{negatives.describe()}, {split_name} split"
    return f"full ranking, {split_name} split, exclude_history={exclude_history}"
