"""`recengine.tune` end to end on a tiny synthetic recipe: real trials, resume, pruning, failures."""

import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

import torch  # noqa: E402

from recengine import tune as tuning  # noqa: E402
from recengine import training  # noqa: E402
from recengine.plugins import load_registry  # noqa: E402
from recengine.recipe import load_recipe, read_toml  # noqa: E402
from recengine.tune_space import read_space  # noqa: E402

DATA = Path(__file__).parent / "data"
States = optuna.trial.TrialState


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest on one thread, and the test machine's cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_tune(tmp_path, registry, n_trials, **kw):
    kw.setdefault("pruner", optuna.pruners.NopPruner())
    return tuning.tune(read_toml(DATA / "tune-tiny.toml"), kw.pop("params", read_space(DATA / "tune-space.toml")),
                       registry, tmp_path / "out", n_trials, study_name="tiny", **kw)


@pytest.mark.slow
def test_trials_run_and_best_recipe_is_trainable(tmp_path, registry):
    result = run_tune(tmp_path, registry, 3)
    trials = result.study.trials
    assert [t.state for t in trials] == [States.COMPLETE] * 3
    assert trials[0].params == {"train.lr": 3e-3, "train.mask_prob": 0.2}  # trial 0: the untuned recipe's own values
    out = tmp_path / "out"
    for t in trials:  # each trial is a full run directory under the out dir
        assert (out / "trials" / f"trial-{t.number:04d}" / "results.json").is_file()
    best = result.study.best_trial
    assert best.value == max(t.value for t in trials) and 0 < best.value <= 1

    recipe = load_recipe(result.best_recipe, registry)  # complete and valid as written
    assert recipe.train.lr == pytest.approx(best.params["train.lr"])
    assert recipe.train.mask_prob == best.params["train.mask_prob"]
    assert recipe.model.options.hidden == 16 and recipe.dataset.options.users == 200  # the rest is the base recipe

    csv_lines = (out / "trials.csv").read_text().splitlines()
    assert csv_lines[0].startswith("trial,state,valid_ndcg@10,test_ndcg@10,train.lr,train.mask_prob") and len(csv_lines) == 4
    assert (out / "trials.md").read_text().count("| complete |") == 3
    assert result.skipped_plots == {}
    for plot in ("history.png", "importance.png"):
        assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_interrupted_search_resumes_to_the_total(tmp_path, registry):
    first = [t.params for t in run_tune(tmp_path, registry, 2).study.trials]
    assert len(first) == 2
    again = run_tune(tmp_path, registry, 4)  # same storage (out/study.db) and study name
    assert [t.number for t in again.study.trials] == [0, 1, 2, 3]
    assert all(t.state == States.COMPLETE for t in again.study.trials)
    assert [t.params for t in again.study.trials[:2]] == first
    assert again.study.trials[2].params not in first  # the resumed sampler does not replay the first samples
    assert len(run_tune(tmp_path, registry, 4).study.trials) == 4  # already done: nothing more runs
    assert (tmp_path / "out" / "trials.csv").read_text().count("\n") == 5


@pytest.mark.slow
def test_a_killed_trial_is_failed_and_retried_on_resume(tmp_path, registry, monkeypatch):
    monkeypatch.setattr(tuning, "HEARTBEAT_SECONDS", 1)
    monkeypatch.setattr(tuning, "GRACE_SECONDS", 1)
    study = run_tune(tmp_path, registry, 0).study
    killed = study.ask()  # takes the queued baseline trial and samples, as a search that is then killed would
    for param in read_space(DATA / "tune-space.toml"):
        tuning.suggest(killed, param)
    study._storage.record_heartbeat(killed._trial_id)
    time.sleep(2.5)  # its heartbeat goes stale
    fake_results = {"valid": {"model": {"ndcg@10": 0.5}}, "test": {"model": {"ndcg@10": 0.4}}}
    trials = run_tune(tmp_path, registry, 1, train=lambda recipe, run, **kw: fake_results).study.trials
    assert [t.state for t in trials] == [States.FAIL, States.COMPLETE]
    assert trials[1].params == trials[0].params == {"train.lr": 3e-3, "train.mask_prob": 0.2}


def test_resume_refuses_another_space(tmp_path, registry):
    run_tune(tmp_path, registry, 0)  # creates the study, runs nothing
    other = read_space(DATA / "tune-space.toml")[:1]
    with pytest.raises(Exception, match="different search space"):
        run_tune(tmp_path, registry, 1, params=other)


class PruneAllButFirst(optuna.pruners.BasePruner):
    """Test-only: every trial after the first is pruned at its first report."""

    def prune(self, study, trial):
        return trial.number > 0


@pytest.mark.slow
def test_trials_are_pruned_after_reporting(tmp_path, registry):
    result = run_tune(tmp_path, registry, 3, pruner=PruneAllButFirst())
    assert [t.state for t in result.study.trials] == [States.COMPLETE, States.PRUNED, States.PRUNED]
    for t in result.study.trials[1:]:
        assert list(t.intermediate_values) == [1]  # reported epoch 1, then stopped
        metrics = (tmp_path / "out" / "trials" / f"trial-{t.number:04d}" / "metrics.jsonl").read_text().splitlines()
        assert len(metrics) == 1  # one validation, no second epoch, no final evaluation
    assert (tmp_path / "out" / "trials.md").read_text().count("| pruned |") == 2
    # importance needs >= 2 completed trials: skipped with a reason, not a crash
    assert "importance.png" in result.skipped_plots and not (tmp_path / "out" / "importance.png").exists()
    assert (tmp_path / "out" / "history.png").is_file()


def test_median_pruner_is_the_default(tmp_path, registry):
    result = run_tune(tmp_path, registry, 0, pruner=None)
    assert isinstance(result.study.pruner, optuna.pruners.MedianPruner)
    assert isinstance(result.study.sampler, optuna.samplers.TPESampler)


@pytest.mark.slow
def test_failed_trial_is_recorded_and_search_goes_on(tmp_path, registry):
    calls = []

    def train_that_runs_out_of_memory_once(recipe, run, **kw):
        calls.append(run.path.name)
        if len(calls) == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return training.train(recipe, run, **kw)

    result = run_tune(tmp_path, registry, 3, train=train_that_runs_out_of_memory_once)
    assert [t.state for t in result.study.trials] == [States.COMPLETE, States.FAIL, States.COMPLETE]
    failed = result.study.trials[1]
    assert failed.user_attrs["error"].startswith("RuntimeError: CUDA out of memory")
    assert "Traceback" in (tmp_path / "out" / "trials" / "trial-0001" / "error.txt").read_text()
    assert "| fail |" in (tmp_path / "out" / "trials.md").read_text()
    assert result.best_recipe.is_file()


@pytest.mark.slow
def test_a_combination_the_recipe_rejects_fails_only_that_trial(tmp_path, registry):
    # hidden 12 with heads 8 is invalid, though each value alone is valid with the base recipe.
    space = tmp_path / "space.toml"
    space.write_text('model.hidden = { type = "categorical", choices = [16, 12] }\n'
                     'model.heads = { type = "categorical", choices = [4, 8] }\n')
    calls = []
    fake_results = {"valid": {"model": {"ndcg@10": 0.5}}, "test": {"model": {"ndcg@10": 0.4}}}
    sampler = optuna.samplers.GridSampler({"model.hidden": [16, 12], "model.heads": [4, 8]}, seed=0)
    result = run_tune(tmp_path, registry, 4, params=read_space(space), sampler=sampler,
                      train=lambda recipe, run, **kw: calls.append(recipe) or fake_results)
    states = {(t.params["model.hidden"], t.params["model.heads"]): t.state for t in result.study.trials}
    assert states[(12, 8)] == States.FAIL and "must divide hidden" in next(
        t.user_attrs["error"] for t in result.study.trials if t.state == States.FAIL)
    assert sum(s == States.COMPLETE for s in states.values()) == 3 and len(calls) == 3


def test_unknown_metric_is_a_user_error(tmp_path, registry):
    with pytest.raises(Exception, match="--metric ndcg@20: not computed"):
        run_tune(tmp_path, registry, 1, metric="ndcg@20")
