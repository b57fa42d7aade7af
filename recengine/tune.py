"""Hyperparameter search over a recipe with Optuna (the optional extra ``recengine[tune]``).

One trial = one in-process `training.train` of the base recipe with the sampled values set.
The trial reports the validation metric after every epoch; the pruner (median by default)
stops trials that fall behind. The study lives in a database (SQLite by default), so an
interrupted search resumes: ``n_trials`` is the study's total, and a rerun only runs the
trials still missing. A trial that raises (out of memory, a combination of values the recipe
rejects, ...) is recorded as failed and the search goes on.

Outputs, in ``out_dir``:

    study.db               the Optuna study (unless --storage points elsewhere)
    trials/trial-NNNN/     each trial's run directory (recipe.toml, metrics.jsonl, checkpoints, ...)
    best.toml              the best trial as a complete recipe, ready for `recengine train`
    trials.csv, trials.md  one row per trial: state, value, parameters, epochs, seconds, error
    history.png            optimisation history
    importance.png         parameter importances (once >= 2 trials completed with varying values)
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import optuna
from rich.console import Console

from recengine import training
from recengine.checkpoint import atomic_write_text
from recengine.errors import UserError
from recengine.plugins import Registry
from recengine.runs import RunDir
from recengine.tune_space import CategoricalParam, FloatParam, Param, check_space, recipe_with

HEARTBEAT_SECONDS, GRACE_SECONDS = 30, 120  # a trial silent for GRACE_SECONDS is taken as killed
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


@dataclass
class TuneResult:
    study: optuna.Study
    best_recipe: Path | None  # None when no trial completed
    out_dir: Path
    skipped_plots: dict[str, str]  # plot file -> why it was not drawn


def median_pruner(startup_trials: int = 5, warmup_epochs: int = 1) -> optuna.pruners.BasePruner:
    """Prune a trial whose metric at an epoch is below the median of earlier trials at that epoch,
    once ``startup_trials`` trials have finished and after ``warmup_epochs`` epochs of its own."""
    return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage (sqlite:///..., postgresql://...) with heartbeats: a trial whose process was
    killed (no heartbeat for 2 minutes) is marked failed on the next run and retried once."""
    try:
        with _quiet_optuna_warnings():
            # Optuna 4.9 renamed the retry hook; support both spellings (recengine[tune] allows optuna>=3.5).
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):
                retry = {"heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)}
            else:
                retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
            return optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS, **retry)
    except Exception as exc:  # bad URL, missing driver, unreadable file
        raise UserError(f"--storage {url}: cannot open the study database ({exc.__class__.__name__}: {exc}); "
                        "use a URL such as sqlite:///tune.db") from None


@contextlib.contextmanager
def _quiet_optuna_warnings():
    # Optuna marks heartbeats and its matplotlib plots experimental; that is not the user's concern.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def suggest(trial: optuna.Trial, param: Param) -> Any:
    d = param.distribution
    if isinstance(d, CategoricalParam):
        return trial.suggest_categorical(param.key, d.choices)
    if isinstance(d, FloatParam):
        return trial.suggest_float(param.key, d.low, d.high, log=d.log, step=d.step)
    return trial.suggest_int(param.key, d.low, d.high, log=d.log, step=d.step)


def _space_signature(params: list[Param]) -> str:
    return json.dumps({p.key: p.distribution.model_dump() for p in params}, sort_keys=True)


def open_study(storage: optuna.storages.BaseStorage, name: str, base_toml: str, params: list[Param],
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study, or load it to resume; refuse to resume with a different recipe or space
    (the trials so far would not be comparable with the new ones)."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=sampler,
                                pruner=pruner, load_if_exists=True)
    saved = study.user_attrs
    if not saved:
        study.set_user_attr("recipe", base_toml)
        study.set_user_attr("space", _space_signature(params))
    elif saved.get("recipe") != base_toml or saved.get("space") != _space_signature(params):
        what = "recipe" if saved.get("recipe") != base_toml else "search space"
        raise UserError(f"study '{name}' was started with a different {what}; resume it with the same recipe and space, "
                        "or start a new search with another --study-name")
    return study


def tune(
    base: dict[str, Any],
    params: list[Param],
    registry: Registry,
    out_dir: Path,
    n_trials: int,
    storage: str | None = None,
    study_name: str = "tune",
    metric: str = "ndcg@10",
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
    seed: int = 0,
    baseline: bool = True,
    recipe_source: str = "<recipe>",
    space_source: str = "<space>",
    console: Console | None = None,
    train: Callable[..., dict[str, Any]] = training.train,
) -> TuneResult:
    """Run (or resume) a search until the study holds ``n_trials`` finished trials; write the outputs.

    ``base`` is the recipe data as read from TOML (overrides applied); ``train`` is injectable for tests.
    With ``baseline``, a new study's first trial is the base recipe's own values, so the table
    shows the gain of tuning over the untuned recipe under the same budget.
    """
    console = console or Console(stderr=True)
    base_recipe = recipe_with(base, {}, registry, source=recipe_source)
    check_space(params, base, registry, space_source)
    metrics = {f"{m}@{k}" for k in base_recipe.eval.ks for m in ("hr", "ndcg")} | {"mrr"}
    if metric not in metrics:
        raise UserError(f"--metric {metric}: not computed by this recipe; choose one of {', '.join(sorted(metrics))}")

    out_dir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # we print our own line per trial
    study = open_study(open_storage(storage or f"sqlite:///{out_dir / 'study.db'}"), study_name, base_recipe.to_toml(), params,
                       sampler or optuna.samplers.TPESampler(), pruner or median_pruner())
    if sampler is None:
        # Seeded by the trials so far: reproducible, yet a resumed search does not replay its first samples.
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    trials_dir = out_dir / "trials"
    if not study.trials and trials_dir.is_dir() and any(trials_dir.iterdir()):
        raise UserError(f"{out_dir}: holds trials of another search; pick a new --out (or the --storage/--study-name of that search)")

    def objective(trial: optuna.Trial) -> float:
        training.release()  # the previous trial's graphs and memory (a failed trial's too: its traceback is gone by now)
        values = {p.key: suggest(trial, p) for p in params}
        run = RunDir(trials_dir / f"trial-{trial.number:04d}")
        trial.set_user_attr("run_dir", str(run.path))
        try:
            recipe = recipe_with(base, values, registry, source=f"trial {trial.number}")
            run.path.mkdir(parents=True, exist_ok=False)
            run.recipe.write_text(recipe.to_toml())

            def report(epoch: int, epoch_metrics: dict[str, float]) -> None:
                trial.report(epoch_metrics[metric], epoch)
                trial.set_user_attr("epochs", epoch)
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at epoch {epoch}")

            results = train(recipe, run, console=Console(stderr=True, quiet=True), on_validation=report)
            trial.set_user_attr("test_" + metric, results["test"]["model"][metric])
            return results["valid"]["model"][metric]  # the best checkpoint's validation metric
        except optuna.TrialPruned:
            raise
        except Exception as exc:
            # Recorded on the trial (the table shows it) and in the run directory; optuna marks the trial failed.
            trial.set_user_attr("error", f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            if run.path.is_dir():
                atomic_write_text(run.path / "error.txt", traceback.format_exc())
            raise

    started = time.perf_counter()

    def progress_line(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        done = sum(t.state in FINISHED for t in study.trials)
        head = f"trial {trial.number} ({done}/{n_trials})"
        if trial.state == optuna.trial.TrialState.COMPLETE:
            best = study.best_trial
            line = f"{head}: valid {metric} {trial.value:.4f}  (best {best.value:.4f}, trial {best.number})"
        elif trial.state == optuna.trial.TrialState.PRUNED:
            last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else float("nan")
            line = f"{head}: pruned after epoch {trial.user_attrs.get('epochs', 0)} (valid {metric} {last:.4f})"
        else:
            line = f"{head}: failed: {trial.user_attrs.get('error', 'see the log')}"
        params_text = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items())
        console.print(f"{line}  {params_text}  [{time.perf_counter() - started:.0f} s]", highlight=False, soft_wrap=True)

    if baseline and not study.trials:
        enqueue_baseline(study, params, base_recipe.to_dict(), console)
    finished = sum(t.state in FINISHED for t in study.trials)
    remaining = max(n_trials - finished, 0)
    if finished:
        console.print(f"resuming study '{study_name}': {finished} trials finished, {remaining} to run", highlight=False)
    if remaining:
        with _quiet_optuna_warnings():
            study.optimize(objective, n_trials=remaining, catch=(Exception,), callbacks=[progress_line], gc_after_trial=True)
    best_path, skipped = write_outputs(study, out_dir, metric, base, registry)
    return TuneResult(study, best_path, out_dir, skipped)


def enqueue_baseline(study: optuna.Study, params: list[Param], recipe: dict[str, Any], console: Console) -> None:
    values = {}
    for p in params:
        node: Any = recipe
        for part in p.key.split("."):
            node = node[int(part)] if isinstance(node, list) else node.get(part)
        d = p.distribution
        inside = node in d.choices if isinstance(d, CategoricalParam) else node is not None and d.low <= node <= d.high
        if not inside:
            console.print(f"no baseline trial: the recipe's {p.key} = {node!r} lies outside the space", highlight=False)
            return
        values[p.key] = node
    study.enqueue_trial(values)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_rows(study: optuna.Study, metric: str) -> list[dict[str, Any]]:
    keys = sorted({k for t in study.trials for k in t.params})
    rows = []
    for t in study.trials:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start else None
        row = {"trial": t.number, "state": t.state.name.lower(), f"valid_{metric}": t.value,
               f"test_{metric}": t.user_attrs.get(f"test_{metric}")}
        row.update({k: t.params.get(k) for k in keys})
        row.update({"epochs": t.user_attrs.get("epochs"), "seconds": round(seconds, 1) if seconds is not None else None,
                    "error": t.user_attrs.get("error", "")})
        rows.append(row)
    return rows


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return buf.getvalue()


def rows_to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)\n"
    cols = list(rows[0])
    cell = lambda v: "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "\\|"))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_outputs(study: optuna.Study, out_dir: Path, metric: str, base: dict[str, Any],
                  registry: Registry) -> tuple[Path | None, dict[str, str]]:
    """The tables, the plots and best.toml: (best recipe path or None, plots skipped with why)."""
    rows = trial_rows(study, metric)
    atomic_write_text(out_dir / "trials.csv", rows_to_csv(rows))
    atomic_write_text(out_dir / "trials.md", rows_to_markdown(rows))
    skipped = write_plots(study, out_dir)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not completed:
        return None, skipped
    best = study.best_trial
    recipe = recipe_with(base, best.params, registry, source=f"trial {best.number}")
    header = (f"# Best of study '{study.study_name}': trial {best.number}, valid {metric} {best.value:.4f}"
              f" ({len(completed)} completed trials).\n# Train it: recengine train {out_dir / 'best.toml'}\n\n")
    path = out_dir / "best.toml"
    atomic_write_text(path, header + recipe.to_toml())
    return path, skipped


def write_plots(study: optuna.Study, out_dir: Path) -> dict[str, str]:
    """history.png and importance.png; a plot that cannot be drawn yet is skipped with the reason."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as optuna_plots

    skipped: dict[str, str] = {}
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    varying = {k for k in {k for t in completed for k in t.params} if len({repr(t.params.get(k)) for t in completed}) > 1}
    plots = {"history.png": optuna_plots.plot_optimization_history, "importance.png": optuna_plots.plot_param_importances}
    for name, plot in plots.items():
        if not completed:
            skipped[name] = "no completed trial yet"
        elif name == "importance.png" and (len(completed) < 2 or not varying):
            skipped[name] = "needs at least 2 completed trials with different parameter values"
        else:
            try:
                with _quiet_optuna_warnings(), warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # importance notes such as "all equal"
                    ax = plot(study)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                figure.tight_layout()
                figure.savefig(out_dir / name, dpi=120)
                plt.close(figure)
            except Exception as exc:  # a plot is a nicety; never lose the search over it
                skipped[name] = f"{exc.__class__.__name__}: {exc}"
        if name in skipped:
            (out_dir / name).unlink(missing_ok=True)  # never leave a stale plot beside new results
    return skipped
