"""Data-parallel training on PyTorch's own stack: torchrun, DDP and FSDP2.

``setup(strategy, device)`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK).
Without WORLD_SIZE it returns `Single`, a no-op with the same methods, so the training
loop never asks whether it is distributed.

Semantics shared by every strategy:
- the data order and the global batch do not depend on the number of processes: every rank
  builds global batch b of an epoch whole and keeps its contiguous rows
  (`ClozeBatches.shard`, recengine/data/batching.py);
- the loss is the mean over the *global* batch's masked positions: each rank's mean is
  scaled by its share of the global count (`Batch.loss_scale`, `losses.Objective`), so the
  gradients DDP/FSDP2 average equal a single process's at the same global batch;
- with ``distributed.input_embedding_grads = "touched-rows"`` the input item table's gradient
  leaves DDP and is exchanged as the rows this step's ids touched (`TouchedRows`);
- evaluation deals whole evaluation batches to ranks (`my_batches`) and all-reduces the
  per-user integer ranks and hit counts (`sum_tensor`): every user is counted once, never
  padded, and the metrics are computed from the same integers as on one process.
"""

from __future__ import annotations

import datetime
import inspect
import os
from typing import Any, Callable, Literal, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from recengine.errors import UserError

Strategy = Literal["ddp", "fsdp2"]
T = TypeVar("T")


NO_FORWARD_BUFFER_SYNC = ({"forward_sync_buffers": False}
                          if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                          else {"broadcast_buffers": False})


# All-gather into one flat tensor; torch 2.13 renamed it (the old name warns there).
ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class Single:
    """One process: every method is the identity or a no-op."""

    rank, world_size, is_main = 0, 1, True
    lockstep = False  # whether every rank must run the same number of forward passes
    gathers_state = False  # whether reading the model's or optimizer's state is a collective (every rank takes part)

    def device(self, device: torch.device) -> torch.device:
        return device

    def my_batches(self, num_batches: int) -> list[int | None]:
        return list(range(num_batches))

    def seed_per_rank(self, seed: int) -> None:
        """One process keeps its random stream (results do not change with this method)."""

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def mean_scalar(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def wrap(self, objective: nn.Module, *, bucket_cap_mb: float = 25, gradient_as_bucket_view: bool = True,
             grad_compression: str = "none", input_table: nn.Embedding | None = None, ids_per_rank: int = 0) -> nn.Module:
        return objective

    def after_backward(self, inputs: torch.Tensor) -> None:
        """Gradient exchange DDP does not do itself (see `TouchedRows`); nothing on one process."""

    def reshard(self, module: nn.Module) -> None:
        """Drop gathered copies of ``module``'s parameters (FSDP2's), so that the next forward reads
        the parameters as they are now; nothing to drop when parameters are not sharded."""

    def model_state(self, model: nn.Module, keys) -> dict[str, torch.Tensor]:
        state = model.state_dict()
        return {k: state[k] for k in keys}

    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(tensors, strict=False)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def barrier(self) -> None:
        pass

    def main_first(self, fn: Callable[[], T]) -> T:
        """``fn()`` on rank 0, then on the other ranks once it is done (e.g. rank 0 writes a
        file the others then read)."""
        return fn()

    def close(self) -> None:
        pass


class Distributed(Single):
    """One rank of a torchrun job; replicated (DDP) or sharded (FSDP2) parameters."""

    def __init__(self, strategy: Strategy, rank: int, world_size: int, local_rank: int):
        self.strategy, self.rank, self.world_size, self.local_rank = strategy, rank, world_size, local_rank
        self.is_main = rank == 0
        # FSDP2 all-gathers parameters inside every forward, so ranks must run them in lockstep.
        self.lockstep = strategy == "fsdp2"
        self.gathers_state = strategy == "fsdp2"  # DDP: each rank holds the whole state; rank 0 reads its own

    def seed_per_rank(self, seed: int) -> None:
        """Every rank starts from the same seed (identical initial weights); once the model is
        built, each rank needs its own stream, or the dropout masks of rank r's rows repeat those
        of every other rank's, step after step, where one process draws them independently."""
        torch.manual_seed(seed + self.rank)

    def device(self, device: torch.device) -> torch.device:
        if device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def my_batches(self, num_batches: int) -> list[int | None]:
        mine: list[int | None] = list(range(self.rank, num_batches, self.world_size))
        if self.lockstep:  # None: a forward whose result is thrown away, to keep ranks in step
            mine += [None] * (-(-num_batches // self.world_size) - len(mine))
        return mine

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    def mean_scalar(self, t: torch.Tensor) -> torch.Tensor:
        return self.sum_tensor(t.detach().float()) / self.world_size

    def wrap(self, objective: nn.Module, *, bucket_cap_mb: float = 25, gradient_as_bucket_view: bool = True,
             grad_compression: str = "none", input_table: nn.Embedding | None = None, ids_per_rank: int = 0) -> nn.Module:
        """DDP or FSDP2 around ``objective``; the keyword options are DDP's (FSDP2 ignores them).

        ``input_table`` (a trainable part of ``objective``): leave its gradient out of DDP and
        exchange only the rows of each step's ids, at most ``ids_per_rank`` ids per rank
        (`TouchedRows`, which then becomes ``after_backward``)."""
        if self.strategy == "ddp":
            if grad_compression == "bf16" and dist.get_backend() != "nccl":
                raise UserError("distributed.grad_compression = \"bf16\" needs CUDA GPUs (NCCL); "
                                "use \"fp16\" or \"none\" on CPU")
            if input_table is not None and input_table.weight.requires_grad:
                name = next((n for n, p in objective.named_parameters() if p is input_table.weight), None)
                if name is None:
                    raise ValueError("input_table is not a part of the wrapped module")
                nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(objective, [name])
                dist.broadcast(input_table.weight.data, 0)  # DDP's start-up copy from rank 0 skips it now
                self.after_backward = TouchedRows(input_table.weight, ids_per_rank, self.world_size)
            device_ids = [self.local_rank] if next(objective.parameters()).is_cuda else None
            # No buffer sync in forward: nothing in a sequence model changes its buffers, and a
            # broadcast inside every forward would force evaluation into lockstep too. torch 2.13
            # renamed the option (the old name warns there); the new one still copies rank 0's
            # buffers once at construction, which is harmless while buffers are built alike.
            ddp = nn.parallel.DistributedDataParallel(objective, device_ids=device_ids, **NO_FORWARD_BUFFER_SYNC,
                                                      bucket_cap_mb=bucket_cap_mb,
                                                      gradient_as_bucket_view=gradient_as_bucket_view)
            if grad_compression != "none":
                from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

                hook = {"bf16": default_hooks.bf16_compress_hook, "fp16": default_hooks.fp16_compress_hook}
                ddp.register_comm_hook(None, hook[grad_compression])
            return ddp
        if input_table is not None:
            raise UserError('distributed.input_embedding_grads = "touched-rows" is a DDP option; FSDP2 shards the table '
                            'and reduce-scatters its gradient instead: use "all-reduce" with distributed.strategy = "fsdp2"')
        from torch.distributed.fsdp import fully_shard

        # Shard each transformer block on its own so only one block is gathered at a time,
        # then the root (embeddings, norms, output layer).
        for module in list(objective.modules()):
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block)
        fully_shard(objective)
        return objective

    def reshard(self, module: nn.Module) -> None:
        # After a forward without backward (evaluation) FSDP2 keeps the root module's gathered
        # parameters, and its next forward reuses them: writes into the sharded parameters since
        # (the weight average's swap) would go unseen until a backward or a state_dict reshards.
        if self.strategy == "fsdp2":
            from torch.distributed.fsdp import FSDPModule

            for m in module.modules():
                if isinstance(m, FSDPModule):
                    m.reshard()

    # --- checkpoints: always the full, unsharded state, so any process count can resume ---

    def _options(self, **kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kw)

    def model_state(self, model: nn.Module, keys) -> dict[str, torch.Tensor]:
        if self.strategy == "ddp":  # no collective: only rank 0, which writes, needs the tensors
            return super().model_state(model, keys) if self.is_main else {}
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        full = get_model_state_dict(model, options=self._options(cpu_offload=True))  # a collective: every rank calls it
        return {k: full[k] for k in keys if k in full}

    def load_model_state(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        if self.strategy == "ddp":
            return super().load_model_state(model, tensors)
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, tensors, options=self._options(strict=False))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.strategy == "ddp":
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer, options=self._options(cpu_offload=True))
        return _by_index(full) if full else {"state": {}, "param_groups": []}  # with cpu_offload only rank 0 gets it

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        if self.strategy == "ddp":
            return optimizer.load_state_dict(state)
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, _by_name(state, model, optimizer), options=self._options())

    def barrier(self) -> None:
        dist.barrier()

    def main_first(self, fn: Callable[[], T]) -> T:
        result = fn() if self.is_main else None
        dist.barrier()
        return result if self.is_main else fn()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


class TouchedRows:
    """Averages an input item table's gradient over the ranks by exchanging only the rows that
    this step's input ids touched, in place of DDP's all-reduce of the whole table.

    Why: the gradient of a table looked up with the batch's ids is zero outside those rows, yet
    DDP all-reduces it whole; and the input table's gradient is the last one the backward
    produces, so its all-reduce overlaps no compute (655 MB at the 430M shape, against 26 MB of
    touched rows per rank at batch 128 x 50).

    How: each rank sorts its ids (padded to a fixed ``ids_per_rank`` with repeats of its first
    id), zeroes the rows of repeated ids, and all-gathers ids and rows; every rank then zeroes
    its own touched rows (which leaves the whole gradient zero) and adds every rank's rows in
    rank order. Every rank ends with the same sum, divided by the world size as DDP does; shapes
    are fixed and nothing waits on the host. The rows travel in full precision whatever
    ``grad_compression`` says (that hook compresses DDP's buckets only)."""

    def __init__(self, weight: nn.Parameter, ids_per_rank: int, world_size: int):
        if ids_per_rank <= 0:
            raise ValueError("ids_per_rank must be positive")
        self.weight, self.ids_per_rank, self.world_size = weight, ids_per_rank, world_size

    def __call__(self, inputs: torch.Tensor) -> None:
        grad = self.weight.grad
        ids = inputs.flatten()
        if ids.numel() > self.ids_per_rank:
            raise ValueError(f"{ids.numel()} input ids on this rank, more than the {self.ids_per_rank} planned for")
        ids = torch.cat([ids, ids[:1].expand(self.ids_per_rank - ids.numel())]).sort().values
        first = torch.ones_like(ids, dtype=grad.dtype)
        first[1:] = (ids[1:] != ids[:-1]).to(grad.dtype)
        rows = grad[ids] * first[:, None] / self.world_size  # divided, as DDP divides its buckets
        all_ids, all_rows = ids.new_empty(self.world_size * len(ids)), rows.new_empty(self.world_size * len(rows), rows.shape[1])
        ALL_GATHER(all_ids, ids)
        ALL_GATHER(all_rows, rows)
        grad.index_fill_(0, ids, 0)
        for r_ids, r_rows in zip(all_ids.chunk(self.world_size), all_rows.chunk(self.world_size)):
            grad.index_add_(0, r_ids, r_rows)  # one index_add_ per rank, in rank order: each adds every row once


def _param_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[list[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    return [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]


def _by_index(full: dict[str, Any]) -> dict[str, Any]:
    """A name-keyed optimizer state (torch.distributed.checkpoint) in ``optimizer.state_dict()``'s
    integer-keyed form, so checkpoints look the same whatever wrote them."""
    index, groups = {}, []
    for group in full["param_groups"]:
        ids = []
        for name in group["params"]:
            index[name] = len(index)
            ids.append(index[name])
        groups.append({**group, "params": ids})
    return {"state": {index[name]: value for name, value in full["state"].items()}, "param_groups": groups}


def _by_name(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    names = [n for group in _param_names(model, optimizer) for n in group]
    groups = [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]
    return {"state": {names[int(i)]: value for i, value in state["state"].items()}, "param_groups": groups}


def global_batch_size(batch_size: int, batch_size_is: str, world_size: int) -> int:
    """Sequences per optimizer step over all ranks: ``train.batch_size`` itself when it is
    "global", else ``batch_size`` per rank times the number of ranks."""
    return batch_size if batch_size_is == "global" else batch_size * world_size


def setup(strategy: Strategy = "ddp", device: torch.device | None = None) -> Single:
    """`Distributed` when launched by torchrun (WORLD_SIZE set), else `Single`."""
    if "WORLD_SIZE" not in os.environ:
        return Single()
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    backend = "nccl" if device is not None and device.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return Distributed(strategy, rank, world_size, local_rank)
