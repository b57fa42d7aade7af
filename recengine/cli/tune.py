"""`recengine tune`: hyperparameter search over a recipe (needs the extra `recengine[tune]`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from recengine.cli._common import err_console, user_errors
from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.recipe import apply_overrides, read_toml

INSTALL = "recengine tune needs Optuna; install it with: pip install 'recengine[tune]'"

EXAMPLES = """Examples:

  recengine tune recipes/quickstart.toml --space spaces/bert4rec.toml --trials 20

  recengine tune recipes/quickstart.toml train.epochs=8 --space spaces/bert4rec.toml --trials 30 --out tune/qs

  recengine tune RECIPE --space SPACE --trials 40 --storage sqlite:///tune.db --study-name bert4rec-lr

Rerunning the same command resumes the study; --trials is the study's total.
"""


def _import_tuning():
    try:
        from recengine import tune as tuning
    except ModuleNotFoundError as exc:
        if exc.name in ("optuna", "matplotlib") or (exc.name or "").startswith(("optuna.", "matplotlib.")):
            raise UserError(INSTALL) from None
        raise
    return tuning


@user_errors
def tune(
    recipe: Path = typer.Argument(..., help="Base recipe TOML; every trial trains it with the sampled values set."),
    overrides: Optional[list[str]] = typer.Argument(None, help="section.key=value overrides of the base recipe, e.g. train.epochs=8."),
    space: Path = typer.Option(..., "--space", help="Search space TOML (see spaces/ and docs/tuning.md)."),
    trials: int = typer.Option(20, "--trials", min=1, help="Total finished trials the study should hold (a rerun only runs the missing ones)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default: tune/<study-name>)."),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite:///<out>/study.db)."),
    study_name: Optional[str] = typer.Option(None, "--study-name", help="Study name (default: the recipe's run.name)."),
    metric: str = typer.Option("ndcg@10", "--metric", help="Validation metric to maximise, reported each epoch for pruning."),
    pruner: str = typer.Option("median", "--pruner", help="'median' or 'none'."),
    startup_trials: int = typer.Option(5, "--startup-trials", min=0, help="Trials to finish before the median pruner prunes."),
    warmup_epochs: int = typer.Option(1, "--warmup-epochs", min=0, help="Epochs every trial runs before it can be pruned."),
    seed: Optional[int] = typer.Option(None, "--seed", help="TPE sampler seed (default: the recipe's run.seed)."),
    baseline: bool = typer.Option(True, "--baseline/--no-baseline", help="Make trial 0 the recipe's own values (the untuned baseline)."),
) -> None:
    """Search hyperparameters of a recipe with Optuna (TPE sampling, median pruning on the validation
    metric); write the best recipe, a results table and plots."""
    tuning = _import_tuning()
    import optuna

    from recengine.tune_space import read_space

    if pruner not in ("median", "none"):
        raise UserError(f"--pruner {pruner}: choose 'median' or 'none'")
    registry = load_registry()
    base = apply_overrides(read_toml(recipe), list(overrides or []))
    params = read_space(space)
    name = study_name or str(base.get("run", {}).get("name", "run"))
    out_dir = out or Path("tune") / name
    result = tuning.tune(
        base, params, registry, out_dir, trials, storage=storage, study_name=name, metric=metric,
        pruner=tuning.median_pruner(startup_trials, warmup_epochs) if pruner == "median" else optuna.pruners.NopPruner(),
        seed=seed if seed is not None else int(base.get("run", {}).get("seed", 0)), baseline=baseline,
        recipe_source=str(recipe), space_source=str(space), console=err_console,
    )
    for plot, reason in result.skipped_plots.items():
        typer.echo(f"{plot} not drawn: {reason}", err=True)
    typer.echo((out_dir / "trials.md").read_text())
    if result.best_recipe is None:
        raise UserError(f"no trial completed; see {out_dir / 'trials.md'} for each trial's error")
    best = result.study.best_trial
    typer.echo(f"best: trial {best.number}, valid {metric} {best.value:.4f}; recipe written to {result.best_recipe}\n"
               f"train it: recengine train {result.best_recipe}")
