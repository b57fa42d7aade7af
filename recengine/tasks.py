"""Training tasks: how a model's training batches are made, chosen by the model itself.

A model plugin declares ``training_task`` (see ``recengine.model.SequenceModel``):
``"cloze"`` (BERT4Rec: random items replaced by [MASK]) or ``"next_item"`` (causal
models such as SASRec: every position predicts its own item from the ones before it).
Both yield ``Batch(inputs, labels, positions, targets)`` with PAD labels where there is nothing to predict,
so the losses and the training loop are the same for every task.
"""

from __future__ import annotations

import warnings

import torch

from recengine.data.batching import ClozeBatches
from recengine.data.next_item import NextItemBatches
from recengine.data.sequences import Sequences
from recengine.distributed import global_batch_size
from recengine.errors import UserError
from recengine.recipe import TrainSection

TASKS = {
    "cloze": lambda seqs, max_len, cfg, seed, device: ClozeBatches(
        seqs, max_len, cfg.batch_size, cfg.mask_prob, cfg.mask_last, cfg.window, seed, device,
        length_grouping=cfg.length_grouping, last_only_share=cfg.last_only_share,
        random_share=cfg.mask_random_share, keep_share=cfg.mask_keep_share),
    "next_item": lambda seqs, max_len, cfg, seed, device: NextItemBatches(
        seqs, max_len, cfg.batch_size, cfg.window, seed, device, length_grouping=cfg.length_grouping),
}

# [train] options that only the cloze task reads: a next-item model ignores them.
CLOZE_ONLY = ("mask_prob", "mask_last", "last_only_share", "mask_random_share", "mask_keep_share")


def warn_ignored_cloze_options(train_cfg, model_name: str) -> None:
    """One warning for cloze options a next-item model would silently ignore. Not an error:
    recipes written for BERT4Rec are run with `model.name=sasrec` to compare the two."""
    defaults = {key: TrainSection.model_fields[key].default for key in CLOZE_ONLY}
    changed = [f"train.{key} = {getattr(train_cfg, key)}" for key in CLOZE_ONLY
               if getattr(train_cfg, key, defaults[key]) != defaults[key]]  # a minimal config without them: nothing to warn of
    if changed:
        warnings.warn(f"{', '.join(changed)} ignored: {model_name} trains next-item (every position is a target), "
                      "not by masking", stacklevel=3)


def training_batches(model, seqs: Sequences, train_cfg, seed: int, device: torch.device | str, rank: int = 0, world_size: int = 1):
    """The batch stream for ``model``'s own training task.

    On ``world_size`` data-parallel ranks every rank builds the same global batches and
    keeps its own rows; ``train.batch_size_is`` says whether batch_size is global or per rank."""
    task = getattr(model, "training_task", "cloze")
    if task not in TASKS:
        raise UserError(f"model declares training_task '{task}'; known tasks: {', '.join(TASKS)}")
    if task != "cloze" and rank == 0:  # once per run, not once per process
        warn_ignored_cloze_options(train_cfg, type(model).__name__)
    if world_size > 1:
        global_size = global_batch_size(train_cfg.batch_size, train_cfg.batch_size_is, world_size)
        train_cfg = train_cfg.model_copy(update={"batch_size": global_size})
    batches = TASKS[task](seqs, model.max_len, train_cfg, seed, device)
    batches.shard(rank, world_size)
    return batches
