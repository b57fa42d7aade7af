"""Training, top to bottom: build the components, loop, validate, checkpoint, evaluate.

Every feature is a plugin object that is a no-op when off (fp32 precision has a disabled
GradScaler, the eager compiler returns its function, the `none` profiler does nothing),
so the loop below never branches on a feature.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from rich.console import Console

from recengine import checkpoint, distributed
from recengine.components import Monitors
from recengine.data.sequences import Dataset
from recengine.data.split import EvalSet, LeaveOneOut, make_split
from recengine.distributed import Single
from recengine.ema import MODEL_FILE, RAW_FILE, NoAverage, WeightAverage, weight_average
from recengine.errors import UserError
from recengine.evaluate import NEGATIVES_FILE, SampledNegatives, evaluate, load_or_draw_negatives, model_scorer, popularity_scorer, protocol_name
from recengine.finetune import init_from_run, train_output_layer
from recengine.guards import NonFiniteGuard
from recengine.hardware import hardware_info
from recengine.losses import Objective, build_loss
from recengine.model import count_parameters
from recengine.progress import progress_bar
from recengine.recipe import Recipe
from recengine.runs import RunDir
from recengine.schedule import warmup_cosine
from recengine.tasks import training_batches


@dataclass
class LoopState:
    epoch: int = 0  # epochs completed
    batch: int = 0  # batches done in the current epoch
    step: int = 0  # optimizer steps done
    best_metric: float = float("-inf")
    best_epoch: int = 0
    bad_validations: int = 0
    finished: bool = False
    skipped_steps: int = 0  # steps skipped by the non-finite guard


def resolve_device(name: str, option: str = "run.device") -> torch.device:
    """``name`` ('auto', 'cpu', 'cuda', 'cuda:N'...) as a device; ``option`` is where the user
    wrote it (a recipe key or a CLI flag), named in the error."""
    use_cpu = f"{option} cpu" if option.startswith("--") else f'{option}="cpu"'
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # what the engine runs on
        raise UserError(f"{option}: '{name}' is not a device recengine runs on; choose auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{option}: '{name}' asked for, but no CUDA device is available; use {use_cpu}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"{option}: '{name}' asked for, but this machine has {torch.cuda.device_count()} GPU(s): "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def build_model(recipe: Recipe, num_items: int, run: RunDir | None = None):
    """The model as the recipe describes it, with its adapter applied: (model, adapter).

    With ``[init] from_run`` the base run's weights are loaded before the adapter wraps the
    model (and, given ``run``, checked against the base reference it recorded)."""
    model = recipe.model.build(num_items=num_items)
    init_from_run(model, recipe.init, run)
    adapter = recipe.adapter.build()
    model = adapter.adapt(model)
    if recipe.init.train_output:
        train_output_layer(model)
    return model, adapter


def exchanged_table(model, input_embedding_grads: str, batch_size: int, batch_size_is: str, world_size: int) -> dict[str, Any]:
    """`Distributed.wrap`'s ``input_table`` and ``ids_per_rank`` for ``distributed.input_embedding_grads``."""
    if input_embedding_grads == "all-reduce":
        return {}
    table = model.input_embedding()
    if table is None:
        raise UserError('distributed.input_embedding_grads: "touched-rows" needs an input item table looked up with the '
                        "batch's ids alone, which this model does not declare (a tied model shares it with the output layer: "
                        'set model.tied = false), or use "all-reduce"')
    rows = -(-distributed.global_batch_size(batch_size, batch_size_is, world_size) // world_size)  # a rank's most rows
    return {"input_table": table, "ids_per_rank": rows * model.max_len}


def load_data(recipe: Recipe) -> tuple[Dataset, LeaveOneOut]:
    dataset = recipe.dataset.build()
    return dataset, make_split(dataset, recipe.eval.split, tuple(recipe.eval.temporal_quantiles))


def eval_negatives(recipe: Recipe, run: RunDir, dataset: Dataset, split: LeaveOneOut) -> SampledNegatives | None:
    """The run's stored sampled negatives (drawn the first time), or None for full ranking."""
    ev = recipe.eval
    if ev.protocol == "full":
        return None
    users = np.union1d(split.valid.users, split.test.users)
    return load_or_draw_negatives(run.path / NEGATIVES_FILE, dataset.sequences, users, ev.negatives, ev.sampling, ev.seed,
                                  dataset.sequences.item_counts())


def validation_subset(valid: EvalSet, users: int, seed: int) -> EvalSet:
    if users == 0 or users >= len(valid):
        return valid
    rows = np.sort(np.random.default_rng(seed).choice(len(valid), size=users, replace=False))
    return valid.subset(rows)


def adamw(model: torch.nn.Module, lr: float, weight_decay: float, betas, device: torch.device) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},  # biases and norms
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")


def gradient_clipper(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, max_norm: float):
    """``clip(params) -> global grad norm``, scaling the gradients to at most ``max_norm``.

    With a fused AdamW and no loss scaling the clip is folded into the optimizer kernel: its
    ``grad_scale`` divides every gradient as it is read, which saves a whole pass that reads
    and writes every gradient (0.39 ms of a 6.3 ms step at 130M on H100). Otherwise it is
    ``clip_grad_norm_``. Both scale by min(1, max_norm / (norm + 1e-6))."""

    def folded(params):
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm([p.grad for p in params if p.grad is not None])))
        optimizer.grad_scale = ((norm + 1e-6) / max_norm).clamp(min=1.0)
        return norm

    if optimizer.defaults.get("fused") and not scaler.is_enabled():
        return folded
    return lambda params: torch.nn.utils.clip_grad_norm_(params, max_norm)


class TrainStep:
    """One optimizer step: forward + loss under the precision's autocast, backward through
    its scaler, clipping, the step. Built once; shared by `train` and `recengine bench`.

    ``objective`` is the model's `Objective` (model + loss as one module), wrapped by DDP or
    FSDP2 when distributed (``dist``); the loss returned is the global batch's mean, the same
    on every rank, and the non-finite guard decides on it, so every rank decides alike."""

    def __init__(self, model, optimizer, precision, compiler, train_cfg, guard: NonFiniteGuard | None = None, item_counts=None,
                 dist: Single = Single(), objective: torch.nn.Module | None = None):
        self.model, self.optimizer, self.precision, self.cfg, self.dist = model, optimizer, precision, train_cfg, dist
        self.guard = guard or NonFiniteGuard(train_cfg.max_bad_steps)
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.clip = gradient_clipper(optimizer, precision.scaler, train_cfg.grad_clip)
        if objective is None:
            objective = Objective(model, build_loss(model, train_cfg, item_counts))  # the loss is chosen once: train.loss
        # Fixed-size masked positions (see data/batching.py): no host sync inside the step.
        self.loss_fn = compiler(lambda inputs, positions, targets, scale: objective(inputs, positions, targets, scale))

    def __call__(self, batch, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.precision.autocast():
            loss = self.loss_fn(batch.inputs, batch.positions, batch.targets, batch.loss_scale)
        self.optimizer.zero_grad(set_to_none=True)
        self.precision.scaler.scale(loss).backward()
        self.dist.after_backward(batch.inputs)  # gradient exchange DDP leaves out (distributed.input_embedding_grads)
        self.precision.scaler.unscale_(self.optimizer)
        grad_norm = self.clip(self.trainable)
        loss = self.dist.mean_scalar(loss.detach())  # ranks' scaled losses average to the global mean
        self.guard.step(self.precision.scaler, self.optimizer, loss, grad_norm)  # skips non-finite steps
        self.precision.scaler.update()
        return loss, grad_norm


def save_checkpoint(run: RunDir, model, adapter, optimizer, state: LoopState, keep_last: int, best: bool,
                    dist: Single = Single(), scaler: torch.amp.GradScaler | None = None,
                    average: WeightAverage | NoAverage = NoAverage()) -> None:
    """Every rank calls this (FSDP2 gathers the full state collectively); rank 0 writes.

    model.safetensors holds the weights that validation scored: the average with ``train.ema_decay``
    (the raw weights, to resume from, then go to raw.safetensors)."""
    if not (dist.is_main or dist.gathers_state):
        return  # DDP: nothing below is a collective, and only rank 0 writes (its replica is every rank's)
    keys = adapter.trainable_state(model).keys()
    weights = average.checkpoint_weights(lambda: dist.model_state(model, keys))
    optim_tensors, optim_meta = checkpoint.state_dict_to_tensors(dist.optimizer_state(model, optimizer))
    if not dist.is_main:
        return
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    name = f"step-{state.step:08d}"
    checkpoint.save(
        run.checkpoints,
        name,
        {**weights, "optimizer.safetensors": optim_tensors, "rng.safetensors": rng},
        # The fp16 loss scale (empty for a disabled scaler): without it a resumed run restarts at
        # 65,536 and skips steps while the scale backs off again.
        {"loop": dataclasses.asdict(state), "optimizer": optim_meta, "rng": host_rng_state(),
         "scaler": scaler.state_dict() if scaler is not None else {}},
    )
    if best:  # before `latest`: a kill in between resumes earlier and redoes this validation
        checkpoint.set_pointer(run.checkpoints, "best", name)
    checkpoint.set_pointer(run.checkpoints, "latest", name)
    best_path = checkpoint.read_pointer(run.checkpoints, "best")
    checkpoint.prune(run.checkpoints, keep_last, protect={best_path.name} if best_path else set())


def host_rng_state() -> dict[str, Any]:
    """Python's and NumPy's global RNG states as JSON (plugins may draw from either)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}


def set_host_rng_state(saved: dict[str, Any]) -> None:
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def load_weights(run: RunDir, model, adapter, which: str = "best", dist: Single = Single()) -> Path:
    """Load checkpoint ``which``'s model.safetensors (the averaged weights of a run with
    ``train.ema_decay``) into ``model``; returns the checkpoint's path."""
    path = run.checkpoint(which)
    checkpoint.verify(path)
    load_weights_file(path, MODEL_FILE, model, adapter, dist)
    return path


def load_weights_file(path: Path, filename: str, model, adapter, dist: Single = Single()) -> None:
    checkpoint.load_into_model(model, checkpoint.load_tensors(path, filename), path, adapter.trainable_state(model).keys(),
                               load=dist.load_model_state)


def resume_state(run: RunDir, model, adapter, optimizer, dist: Single = Single(),
                 scaler: torch.amp.GradScaler | None = None, average: WeightAverage | NoAverage = NoAverage()) -> LoopState:
    path = load_weights(run, model, adapter, "latest", dist)
    average.reset()  # the average resumes from model.safetensors, which holds it when the run had one
    if (path / RAW_FILE).is_file():  # written with a weight average: the raw weights, which training continues from
        load_weights_file(path, RAW_FILE, model, adapter, dist)
    saved = checkpoint.load_state(path)
    dist.load_optimizer_state(model, optimizer, checkpoint.tensors_to_state_dict(
        checkpoint.load_tensors(path, "optimizer.safetensors"), saved["optimizer"]))
    rng = checkpoint.load_tensors(path, "rng.safetensors")
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])
    if "rng" in saved:  # absent in checkpoints written before host RNG states were saved
        set_host_rng_state(saved["rng"])
    if scaler is not None and scaler.is_enabled() and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    state = LoopState(**saved["loop"])
    if state.batch == 0 and state.epoch > 0 and state.best_epoch == state.epoch and dist.is_main:
        # This checkpoint was written by the validation that set the best metric. A kill between
        # writing it and updating the `best` pointer would otherwise leave `best` on an older
        # checkpoint for good: the restored best_metric means no later validation re-points it.
        checkpoint.set_pointer(run.checkpoints, "best", path.name)
    return state


def release() -> None:
    """Free what one run left behind, so the next run in this process starts clean.

    torch.compile caches compiled graphs per Python function, process-wide, and every
    TrainStep compiles the same function (its step lambda). Runs made one after another in one
    process (study cells, tuning trials, bench settings) would pile their graphs onto that one
    cache until dynamo's recompile limit (8) is hit, after which it runs eagerly without a
    word: in a 4 x H100 study the later compiled cells were silently eager. So such runners call
    this between runs: compile caches, then Python garbage, then the CUDA allocator's cache
    (an out-of-memory run must not starve the next one)."""
    torch._dynamo.reset()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def train(recipe: Recipe, run: RunDir, resume: bool = False, console: Console | None = None,
          on_validation: Callable[[int, dict[str, float]], None] = lambda epoch, metrics: None) -> dict[str, Any]:
    """Train ``recipe`` into ``run``. ``on_validation(epoch, metrics)`` is called after every
    validation (a tuner uses it to prune); an exception raised there stops training."""
    cfg, ev = recipe.train, recipe.eval
    torch.manual_seed(recipe.run.seed)
    random.seed(recipe.run.seed)
    np.random.seed(recipe.run.seed)
    device = resolve_device(recipe.run.device)
    # Under torchrun: one rank of a data-parallel job; otherwise a no-op (recengine/distributed.py).
    dist = distributed.setup(recipe.distributed.strategy, device)
    device = dist.device(device)
    console = (console or Console(stderr=True)) if dist.is_main else Console(quiet=True)
    dataset, split = load_data(recipe)
    if dist.is_main:
        run.write_json(run.data, {"num_items": dataset.num_items, "item_ids": dataset.item_ids})
        run.write_json(run.hardware, hardware_info(device))  # so `recengine report` can tell machines apart
    model, adapter = build_model(recipe, dataset.num_items, run)
    model.to(device)
    # Model and loss as one module, wrapped before the optimizer is built: FSDP2 replaces the parameters.
    ddp = recipe.distributed
    objective = dist.wrap(Objective(model, build_loss(model, cfg, split.train.item_counts())),
                          bucket_cap_mb=ddp.bucket_cap_mb, gradient_as_bucket_view=ddp.gradient_as_bucket_view,
                          grad_compression=ddp.grad_compression,
                          **exchanged_table(model, ddp.input_embedding_grads, cfg.batch_size, cfg.batch_size_is, dist.world_size))
    optimizer = adamw(model, cfg.lr, cfg.weight_decay, cfg.betas, device)
    precision = recipe.precision.build(device=device)
    # train.ema_decay: an average of the trainable weights that validation and checkpoints use (recengine/ema.py).
    average = weight_average(model, cfg.ema_decay, on_swap=lambda: dist.reshard(objective))
    state = resume_state(run, model, adapter, optimizer, dist, precision.scaler, average) if resume else LoopState()

    dist.seed_per_rank(recipe.run.seed)  # the weights are built alike on every rank; dropout must not be
    compiler = recipe.compiler.build()
    train_step = TrainStep(model, optimizer, precision, compiler, cfg, NonFiniteGuard(cfg.max_bad_steps, state.skipped_steps),
                           dist=dist, objective=objective)
    scorer = compiler(lambda tokens: objective(tokens))
    batches = training_batches(model, split.train, cfg, recipe.run.seed, device, dist.rank, dist.world_size)
    negatives = dist.main_first(lambda: eval_negatives(recipe, run, dataset, split))  # rank 0 draws and stores them
    protocol = protocol_name(ev.split, ev.exclude_history, negatives)
    valid = validation_subset(split.valid, ev.valid_users, recipe.run.seed)
    monitors = Monitors([m.build(log_dir=run.tensorboard) for m in recipe.monitors] if dist.is_main else [])
    profiler = recipe.profiler.build(out_dir=run.profile)
    total_steps = cfg.epochs * len(batches)
    global_batch = batches.batch_size
    console.print(
        f"[bold]{recipe.run.name}[/]: {count_parameters(model):,} parameters ({count_parameters(model, True):,} trainable, "
        f"{count_parameters(model, True) / count_parameters(model):.2%}), "
        f"{dataset.num_items:,} items, {split.train.num_users:,} training sequences, device {device}"
        + (f", {dist.world_size} processes ({recipe.distributed.strategy}), global batch {global_batch}" if dist.world_size > 1 else "")
    )

    def validate() -> dict[str, float]:
        model.eval()
        with average.swapped(), precision.autocast():
            metrics = evaluate(scorer, valid, model.max_len, model.mask_token, tuple(ev.ks), ev.exclude_history, ev.batch_size, device,
                               negatives=negatives, dist=dist)
        model.train()
        return metrics

    model.train()
    with profiler, progress_bar("samples", console) as progress:
        per_epoch = split.train.num_users  # samples per epoch: the last batch of an epoch is partial
        task = progress.add_task("train", total=cfg.epochs * per_epoch,
                                 completed=min(state.epoch * per_epoch + state.batch * global_batch, cfg.epochs * per_epoch))
        while state.epoch < cfg.epochs and not state.finished:
            progress.update(task, description=f"epoch {state.epoch + 1}/{cfg.epochs}")
            for batch in batches.epoch(state.epoch, start_batch=state.batch):
                lr = warmup_cosine(state.step, cfg.lr, cfg.warmup_steps, total_steps, cfg.min_lr_ratio)
                loss, grad_norm = train_step(batch, lr)
                profiler.step()
                state.step, state.batch = state.step + 1, state.batch + 1
                average.update(state.step)
                progress.advance(task, len(batch) * dist.world_size)
                if state.step % cfg.log_every_steps == 0:
                    state.skipped_steps = train_step.guard.skipped  # a host sync, like loss.item(): only at log steps
                    monitors.log_scalars(state.step, {"train/loss": loss.item(), "train/lr": lr, "train/grad_norm": grad_norm.item(),
                                                      "train/skipped_steps": state.skipped_steps,
                                                      "train/samples_per_s": progress.tasks[task].speed or 0.0})
                if cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0:
                    state.skipped_steps = train_step.guard.skipped
                    save_checkpoint(run, model, adapter, optimizer, state, cfg.keep_last, best=False, dist=dist,
                                    scaler=precision.scaler, average=average)
            state.epoch, state.batch = state.epoch + 1, 0
            state.skipped_steps = train_step.guard.skipped
            if state.epoch % cfg.eval_every_epochs and state.epoch < cfg.epochs:
                continue
            metrics = validate()
            improved = metrics[ev.metric] > state.best_metric
            if improved:
                state.best_metric, state.best_epoch, state.bad_validations = metrics[ev.metric], state.epoch, 0
            else:
                state.bad_validations += 1
            state.finished = state.bad_validations >= cfg.patience
            monitors.log_scalars(state.step, {f"valid/{k}": v for k, v in metrics.items()})
            if dist.is_main:
                run.append_metrics({"split": "valid", "epoch": state.epoch, "step": state.step, "protocol": protocol, **metrics})
            progress.console.print(f"epoch {state.epoch}: valid {ev.metric} {metrics[ev.metric]:.4f}" + (" (best)" if improved else ""))
            save_checkpoint(run, model, adapter, optimizer, state, cfg.keep_last, best=improved, dist=dist, scaler=precision.scaler,
                            average=average)
            on_validation(state.epoch, metrics)

    dist.barrier()  # rank 0 has finished writing the checkpoint the ranks are about to read
    results = final_evaluation(recipe, run, model, adapter, dataset, split, precision, device, console, negatives, dist, objective)
    results["best_epoch"], results["epochs_run"] = state.best_epoch, state.epoch
    if dist.is_main:
        run.write_json(run.results, results)
    monitors.log_hparams(hparams(recipe), {f"hparam/test_{k}": v for k, v in results["test"]["model"].items()})
    monitors.close()
    dist.close()
    return results


def final_evaluation(recipe, run, model, adapter, dataset, split, precision, device, console, negatives=None,
                     dist: Single = Single(), objective=None) -> dict[str, Any]:
    """Evaluate the best checkpoint (its averaged weights with ``train.ema_decay``) and the popularity
    baseline on the validation and test splits."""
    load_weights(run, model, adapter, "best", dist)
    model.eval()
    results = evaluate_splits(recipe, model, split, ["valid", "test"], precision, device, console, negatives, dist, objective)
    if dist.is_main:
        for name in ("valid", "test"):
            run.append_metrics({"split": name, "final": True, "protocol": results["protocol"], **results[name]["model"]})
    return results


def evaluate_splits(recipe: Recipe, model, data: LeaveOneOut, splits: list[str], precision, device, console,
                    negatives: SampledNegatives | None = None, dist: Single = Single(), objective=None) -> dict[str, Any]:
    """Model and popularity-baseline metrics on each named split (``valid``/``test``); ``objective``
    is the (DDP/FSDP2-wrapped) model to score with when distributed."""
    ev = recipe.eval
    popularity = popularity_scorer(data.train.item_counts(), device)
    scorer = model_scorer(model) if objective is None else (lambda tokens: objective(tokens))
    kw = dict(max_len=model.max_len, mask_token=model.mask_token, ks=tuple(ev.ks), exclude_history=ev.exclude_history,
              batch_size=ev.batch_size, device=device, negatives=negatives, dist=dist)
    out: dict[str, Any] = {"protocol": protocol_name(ev.split, ev.exclude_history, negatives)}
    with progress_bar("users", console) as progress:
        for name in splits:
            eval_set = getattr(data, name)
            task = progress.add_task(f"evaluate {name}", total=len(eval_set))
            started = time.perf_counter()
            with precision.autocast():
                model_metrics = evaluate(scorer, eval_set, **kw, on_batch=lambda n: progress.advance(task, n))
            out[name] = {"model": model_metrics, "popularity": evaluate(popularity, eval_set, **kw),
                         "users": len(eval_set), "seconds": time.perf_counter() - started}
    return out


def hparams(recipe: Recipe) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in recipe.to_dict().items():
        if isinstance(values, dict):
            for key, value in values.items():
                flat[f"{section}.{key}"] = value if isinstance(value, (int, float, str, bool)) else json.dumps(value)
    return flat
