"""Typed TOML recipes, validated in two phases.

1. Structure: the core sections (``run``, ``train``, ``eval``, ``init``) and the plugin sections
   (``dataset``, ``model``, ``precision``, ``compiler``, ``adapter``, ``profiler``,
   ``[[monitors]]``), each plugin section naming its plugin with ``name``.
2. Each plugin section's other keys against the options model of the plugin it names.

Every problem is reported at once, one line each, as ``file: section.key: message``.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from recengine.errors import UserError
from recengine.plugins import Entry, Registry, unknown_name_message


def _two_values(value: Any, expected: str) -> Any:
    # pydantic's own errors for a pair of the wrong length name an index ("train.betas.1: required key is
    # missing") or speak of tuples; a custom error type keeps the line free of its "Value error, " prefix.
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise PydanticCustomError("two_values", f"expected two values {expected}")
    return value


class Section(BaseModel):
    # NaN and inf pass `gt=0`-style bounds (inf > 0), so they are refused outright.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class RunSection(Section):
    name: str = Field("run", min_length=1, description="Run name; the run directory defaults to <output_dir>/<name>-<time>.")
    seed: int = Field(0, ge=0, description="Seed for initialisation, data order and masking.")
    output_dir: str = Field("runs", description="Where run directories are created.")
    device: str = Field("auto", description="'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.")


class TrainSection(Section):
    epochs: int = Field(20, ge=1, description="Maximum number of epochs.")
    batch_size: int = Field(128, ge=1, description="Sequences per optimizer step.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay (not applied to biases and norm weights).")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas.")
    warmup_steps: int = Field(100, ge=0, description="Linear warm-up steps, then cosine decay to min_lr_ratio x lr.")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Final learning rate as a share of lr.")
    grad_clip: float = Field(1.0, gt=0, description="Maximum global gradient norm.")
    mask_prob: float = Field(0.2, gt=0, lt=1, description="Share of items replaced by [MASK] in the cloze task.")
    mask_last: bool = Field(True, description="Always mask the last item of a training window (the next-item task).")
    last_only_share: float = Field(0.0, ge=0, le=1, description="Share of training windows whose last item is their only [MASK] "
                                   "(BERT4Rec paper, section 3.6): a context as clean as at test time. Needs mask_last. "
                                   "It lowered accuracy on Video Games (docs/results.md).")
    mask_random_share: float = Field(0.0, ge=0, le=1, description="Share of masked items shown as a random item instead of [MASK], "
                                     "still with the original as the target (BERT's 10%); never the always-masked last item.")
    mask_keep_share: float = Field(0.0, ge=0, le=1, description="Share of masked items shown unchanged, still a target (BERT's 10%); "
                                   "never the always-masked last item.")
    length_grouping: int = Field(0, ge=0, description="Sort users by length within pools of this many batches, so batches trim to "
                                 "short lengths (0: off, plain shuffling; e.g. 64 trains much faster on short sequences, "
                                 "but length-sorted batches can cost accuracy: -0.019 NDCG@10 on Video Games, docs/results.md).")
    window: Literal["random", "last", "prefix"] = Field(
        "random", description="Which window of a history to train on each epoch: a random max_len window of a long history, the last one, "
                              "or the last max_len items of a random prefix (two items or more), so any item after the first can be the masked last one.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy.")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="Validate, checkpoint and serve an exponential moving average of the "
                             "trainable weights with this decay per step (0: off; e.g. 0.999), while training continues on the raw weights.")
    patience: int = Field(5, ge=1, description="Stop after this many validations without a better validation metric.")
    eval_every_epochs: int = Field(1, ge=1, description="Validate every N epochs.")
    checkpoint_every_steps: int = Field(0, ge=0, description="Also checkpoint every N steps within an epoch (0: at validation only).")
    keep_last: int = Field(2, ge=1, description="Checkpoints to keep besides the best one.")
    log_every_steps: int = Field(10, ge=1, description="Send loss and learning rate to the monitors every N steps.")
    max_bad_steps: int = Field(20, ge=1, description="Stop after this many steps in a row with a non-finite loss or gradient (each is skipped, never applied).")
    loss: Literal["ce", "sampled_softmax", "gbce", "focal"] = Field(
        "ce", description="Training loss: full softmax cross-entropy, sampled softmax with log-Q correction, gBCE (gSASRec) or focal.")
    loss_negatives: int = Field(256, ge=1, description="Negatives per step for sampled_softmax and gbce (shared by the batch).")
    loss_sampling: Literal["popularity", "uniform"] = Field(
        "popularity", description="How sampled_softmax draws its negatives (log-Q corrects for it); gbce always samples uniformly.")
    gbce_t: float = Field(0.75, ge=0, le=1, description="gBCE calibration t: 0 is plain BCE, 1 fully calibrated.")
    focal_gamma: float = Field(2.0, ge=0, description="Focal loss exponent gamma (0 is cross-entropy).")
    batch_size_is: Literal["global", "per_gpu"] = Field(
        "global", description="With several processes (torchrun): 'global' keeps batch_size sequences per step over all ranks; "
        "'per_gpu' gives each rank batch_size, so a step holds batch_size x ranks and an epoch has that many times fewer steps "
        "(warm-up and cosine decay are in steps and follow; lr is not rescaled).")

    @field_validator("last_only_share")
    @classmethod
    def _last_only_needs_mask_last(cls, share: float, info: ValidationInfo) -> float:
        if share > 0 and not info.data.get("mask_last", True):
            raise PydanticCustomError("needs_mask_last", "windows masked at their last item alone need train.mask_last = true "
                                      "(or set train.last_only_share = 0)")
        return share

    @field_validator("mask_keep_share")
    @classmethod
    def _shares_of_masked_items(cls, keep: float, info: ValidationInfo) -> float:
        if keep + info.data.get("mask_random_share", 0.0) > 1:
            raise PydanticCustomError("shares_over_one", "train.mask_random_share + train.mask_keep_share is over 1: they are shares "
                                      "of the same masked items (BERT: 0.1 and 0.1)")
        return keep

    @field_validator("betas", mode="before")
    @classmethod
    def _betas_pair(cls, betas: Any) -> Any:
        return _two_values(betas, "[beta1, beta2], e.g. [0.9, 0.999]")


class EvalSection(Section):
    ks: list[int] = Field([1, 5, 10, 20], min_length=1, description="Cut-offs for HR@K and NDCG@K.")
    # validate_default: the default ndcg@10 must be checked too, or eval.ks = [5] fails mid-training.
    metric: str = Field("ndcg@10", validate_default=True, description="Validation metric for early stopping and the best checkpoint.")
    exclude_history: bool = Field(True, description="Exclude items already in the user's history from the ranking.")
    batch_size: int = Field(1024, ge=1, description="Users per evaluation batch (results do not depend on it).")
    valid_users: int = Field(0, ge=0, description="Validate during training on a fixed random subset of this many users (0: all).")
    protocol: Literal["full", "sampled"] = Field("full", description="Rank the whole catalog, or the target against sampled negatives.")
    negatives: int = Field(100, ge=1, description="Sampled protocol: negatives per user.")
    sampling: Literal["uniform", "popularity"] = Field("uniform", description="Sampled protocol: how negatives are drawn (SASRec: uniform; BERT4Rec: popularity).")
    seed: int = Field(0, ge=0, description="Sampled protocol: seed of the negatives, drawn once and stored in the run directory.")
    split: Literal["leave_one_out", "temporal"] = Field("leave_one_out", description="Leave-one-out, or a global temporal split (needs timestamps).")
    temporal_quantiles: tuple[float, float] = Field(
        (0.8, 0.9), description="Temporal split: the validation and test cut-off times, as quantiles of all interaction times.")

    @field_validator("temporal_quantiles", mode="before")
    @classmethod
    def _quantiles_pair(cls, q: Any) -> Any:
        return _two_values(q, "[validation quantile, test quantile], e.g. [0.8, 0.9]")

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, ks: list[int]) -> list[int]:
        if any(k < 1 for k in ks):
            raise ValueError("every K must be >= 1")
        return ks

    @field_validator("metric")
    @classmethod
    def _metric_known(cls, metric: str, info: ValidationInfo) -> str:
        if "ks" not in info.data:  # eval.ks itself is wrong and says so
            return metric
        allowed = {"mrr"} | {f"{m}@{k}" for k in info.data["ks"] for m in ("hr", "ndcg", "recall", "coverage")}
        if metric not in allowed:
            raise PydanticCustomError("metric_not_computed", f"'{metric}' is not computed with eval.ks = {info.data['ks']}; "
                                      f"add its K to eval.ks, or choose one of {', '.join(sorted(allowed))}")
        return metric

    @field_validator("temporal_quantiles")
    @classmethod
    def _quantiles_ordered(cls, q: tuple[float, float]) -> tuple[float, float]:
        if not 0 < q[0] <= q[1] < 1:
            raise ValueError("expected 0 < validation quantile <= test quantile < 1, e.g. [0.8, 0.9]")
        return q


class InitSection(Section):
    from_run: str | None = Field(None, description="Fine-tune: start from this run's best checkpoint (e.g. \"runs/base-...\"); "
                                                  "with an adapter only the adapter trains and checkpoints hold it alone.")
    train_output: bool = Field(False, description="With from_run and an adapter: also train the output layer (untied models).")


class DistributedSection(Section):
    """Under torchrun. The keys after `strategy` are DDP's: FSDP2 ignores them, and refuses touched rows."""

    strategy: Literal["ddp", "fsdp2"] = Field(
        "ddp", description="Under torchrun: 'ddp' replicates the model on every rank; 'fsdp2' shards parameters, gradients "
        "and optimizer state (torch.distributed.fsdp.fully_shard) for models that do not fit one GPU.")
    bucket_cap_mb: float = Field(25, gt=0, description="DDP: gradient bucket size in MiB (torch's default 25); "
                                 "each bucket's all-reduce starts as soon as its gradients are ready.")
    gradient_as_bucket_view: bool = Field(True, description="DDP: gradients become views into the all-reduce buckets, "
                                          "which saves copying the averaged gradients back out of the buckets.")
    grad_compression: Literal["none", "bf16", "fp16"] = Field(
        "none", description="DDP: all-reduce gradients in bfloat16 (CUDA + NCCL only) or float16 (torch's "
        "bf16/fp16_compress_hook): half the traffic; gradients are rounded before they are averaged.")
    input_embedding_grads: Literal["all-reduce", "touched-rows"] = Field(
        "all-reduce", description="DDP: 'touched-rows' takes the input item table out of DDP's all-reduce and exchanges "
        "only the rows this step's ids touched: the same sums, and faster with large catalogs (measured at 500k items; "
        "no reliable gain at 160k). Untied models only.")

    @field_validator("input_embedding_grads")
    @classmethod
    def _touched_rows_under_ddp(cls, value: str, info: ValidationInfo) -> str:
        if value == "touched-rows" and info.data.get("strategy") == "fsdp2":
            raise PydanticCustomError("ddp_only", '"touched-rows" is a DDP option (FSDP2 shards the table and reduce-scatters '
                                      'its gradient): set distributed.strategy = "ddp", or this key to "all-reduce"')
        return value


class PluginSection(BaseModel):
    """A plugin section in phase 1: its ``name``; the other keys are the plugin's options."""

    model_config = ConfigDict(extra="allow")
    name: str


# kind -> (recipe key, default plugin name or None when required)
PLUGIN_SECTIONS: dict[str, tuple[str, str | None]] = {
    "dataset": ("dataset", None),
    "model": ("model", None),
    "precision": ("precision", "fp32"),
    "compiler": ("compiler", "eager"),
    "adapter": ("adapter", "none"),
    "profiler": ("profiler", "none"),
}


@dataclass
class Choice:
    """A plugin chosen by the recipe, with its validated options."""

    entry: Entry
    options: BaseModel

    @property
    def name(self) -> str:
        return self.entry.name

    def build(self, **runtime: Any) -> Any:
        return self.entry.factory(self.options, **runtime)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.entry.name, **self.options.model_dump(mode="json")}


@dataclass
class Recipe:
    run: RunSection
    train: TrainSection
    eval: EvalSection
    dataset: Choice
    model: Choice
    precision: Choice
    compiler: Choice
    adapter: Choice
    profiler: Choice
    monitors: list[Choice] = field(default_factory=list)
    source: str = "<recipe>"
    init: InitSection = field(default_factory=InitSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run": self.run.model_dump(mode="json"),
            "train": self.train.model_dump(mode="json"),
            "eval": self.eval.model_dump(mode="json"),
            "init": self.init.model_dump(mode="json"),
            "distributed": self.distributed.model_dump(mode="json"),
        }
        for kind in PLUGIN_SECTIONS:
            out[kind] = getattr(self, kind).to_dict()
        out["monitors"] = [m.to_dict() for m in self.monitors]
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(drop_none(self.to_dict()))


def drop_none(value: Any) -> Any:
    # TOML has no null: an unset optional is simply left out (it reloads as its default).
    if isinstance(value, dict):
        return {k: drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [drop_none(v) for v in value]
    return value


def _loc(loc: tuple) -> str:
    return ".".join(str(part) for part in loc)


def _model_at(model: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that validates the table at ``loc`` inside ``model`` (None if not one)."""
    for part in loc:
        field = model.model_fields.get(part) if model is not None and isinstance(part, str) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
    return model


def _error_lines(source: str, prefix: tuple, err: ValidationError, model: type[BaseModel] | None = None) -> list[str]:
    """One ``source: section.key: message`` line per error; an unknown key of a table that
    ``model`` describes gets the closest known key as a suggestion."""
    lines = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            table = _model_at(model, tuple(e["loc"][:-1]))
            close = difflib.get_close_matches(str(e["loc"][-1]), list(table.model_fields), n=1) if table else []
            msg += f"; did you mean '{close[0]}'?" if close else ""
        elif e["type"] == "missing":
            msg = "required key is missing"
        lines.append(f"{source}: {_loc(prefix + tuple(e['loc']))}: {msg}")
    return lines


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe not found (is the path right? `recengine recipes list` shows the bundled ones)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected a TOML recipe)") from None
    except RecursionError:  # tomllib recurses once per level of [ or {
        raise UserError(f"{path}: arrays or tables nested too deeply to be a recipe") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.lr=3e-4`` -> (["train", "lr"], 0.0003). Values are TOML; bare words are strings."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"override '{text}': expected section.key=value, for example train.lr=3e-4")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    except RecursionError:
        raise UserError(f"override '{text[:40]}...': value nested too deeply") from None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"override '{text}': '{part}' is not an index of that list")
                node = node[int(part)]
            else:
                node = node.setdefault(part, {})
            if not isinstance(node, (dict, list)):
                raise UserError(f"override '{text}': '{part}' is a value, not a section")
        if isinstance(node, list):
            raise UserError(f"override '{text}': cannot set a whole list entry; name a key inside it")
        node[path[-1]] = value
    return data


CORE_SECTIONS: dict[str, type[Section]] = {"run": RunSection, "train": TrainSection, "eval": EvalSection, "init": InitSection,
                                          "distributed": DistributedSection}


def resolve(data: dict[str, Any], registry: Registry, source: str = "<recipe>") -> Recipe:
    """Validate recipe data in two phases; raise one UserError listing every problem.

    Each section is checked on its own, so a mistake in one never hides a mistake in another.
    """
    errors: list[str] = []
    known = set(CORE_SECTIONS) | {key for key, _ in PLUGIN_SECTIONS.values()} | {"monitors"}
    errors += [f"{source}: {key}: unknown section (sections: {', '.join(sorted(known))})" for key in data if key not in known]

    def validate(model: type[BaseModel], value: Any, path: tuple) -> Any:
        try:
            return model.model_validate(value)
        except ValidationError as err:
            errors.extend(_error_lines(source, path, err, model))
            return None

    def choose(kind: str, value: Any, path: tuple) -> Choice | None:
        section = validate(PluginSection, value, path)
        if section is None:
            return None
        if section.name not in registry.entries[kind]:
            errors.append(f"{source}: {_loc(path + ('name',))}: {unknown_name_message(kind, section.name, registry.names(kind))}")
            return None
        entry = registry.entries[kind][section.name]
        options = validate(entry.options, section.model_extra or {}, path)
        return Choice(entry, options) if options is not None else None

    core = {key: validate(model, data.get(key, {}), (key,)) for key, model in CORE_SECTIONS.items()}
    chosen = {}
    for kind, (key, default) in PLUGIN_SECTIONS.items():
        if key not in data and default is None:
            errors.append(f"{source}: {key}: required section is missing (it needs at least name = \"...\")")
            continue
        chosen[kind] = choose(kind, data.get(key, {"name": default}), (key,))
    monitors = data.get("monitors", [])
    if not isinstance(monitors, list):
        errors.append(f"{source}: monitors: expected a list of tables ([[monitors]])")
        monitors = []
    chosen_monitors = [choose("monitor", m, ("monitors", i)) for i, m in enumerate(monitors)]
    if errors:
        raise UserError("\n".join(errors))
    return Recipe(monitors=chosen_monitors, source=source, **core, **chosen)  # type: ignore[arg-type]


def load_recipe(path: str | Path, registry: Registry, overrides: list[str] = ()) -> Recipe:
    data = apply_overrides(read_toml(path), list(overrides))
    return resolve(data, registry, source=str(path))
