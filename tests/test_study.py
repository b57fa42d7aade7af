import json
from pathlib import Path

import pytest

from recengine.errors import UserError
from recengine.plugins import load_registry
from recengine.study import load_study, run_study

TINY = Path(__file__).parents[1] / "studies" / "recipes" / "tiny.toml"


def write_study(tmp_path: Path, adapters='["none"]', extra="", recipes=("a",)) -> Path:
    (tmp_path / "tiny.toml").write_text(TINY.read_text())
    blocks = "\n".join(f'[[recipes]]\nname = "{name}"\nrecipe = "tiny.toml"\noverrides = ["model.hidden={16 * (i + 1)}"]\n'
                       for i, name in enumerate(recipes))
    path = tmp_path / "study.toml"
    path.write_text(f'[study]\nname = "t"\nbench_steps = 2\nbench_warmup = 0\nprofile_active = 0\n{extra}\n'
                    f'{blocks}\n[matrix]\nadapter = {adapters}\n')
    return path


@pytest.fixture(scope="module")
def registry():
    return load_registry()


def test_cells_are_the_matrix_product(tmp_path):
    study = load_study(write_study(tmp_path, adapters='["none", {name = "none", label = "again"}]', recipes=("a", "b")))
    assert [c.id for c in study.cells] == ["a-fp32-eager-none", "a-fp32-eager-again", "b-fp32-eager-none", "b-fp32-eager-again"]


def test_study_file_mistakes_are_one_line_each(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[study]\nname = "x"\nbench_stepz = 3\n[[recipes]]\nname = "a"\nrecipe = "missing.toml"\n')
    with pytest.raises(UserError, match=r"bad.toml: study.bench_stepz: unknown key; did you mean 'bench_steps'\?"):
        load_study(path)
    path.write_text('[study]\nname = "x"\n[[recipes]]\nname = "a"\nrecipe = "missing.toml"\n')
    with pytest.raises(UserError, match="missing.toml not found"):
        load_study(path)


def test_resume_skips_finished_cells(tmp_path, registry):
    study = load_study(write_study(tmp_path, recipes=("a", "b")))
    out = tmp_path / "out"
    calls = []

    def interrupted(cell, *args):
        calls.append(cell.id)
        if cell.id.startswith("b"):
            raise KeyboardInterrupt  # the study is stopped while the second cell runs
        from recengine.study import run_cell
        return run_cell(cell, *args)

    with pytest.raises(KeyboardInterrupt):
        run_study(study, out, registry, cell_runner=interrupted)
    assert (out / "cells" / "a-fp32-eager-none.json").is_file()
    assert not (out / "cells" / "b-fp32-eager-none.json").exists()
    assert (out / "results.csv").is_file()  # the finished cell is already reported

    calls.clear()

    def fake(cell, *args):
        calls.append(cell.id)
        return {"cell": cell.id, "recipe": cell.recipe.name, "samples_per_s": 1.0, "step_ms": 2.0}

    rows = run_study(load_study(study.path), out, registry, cell_runner=fake, report=False)
    assert calls == ["b-fp32-eager-none"]  # a was finished: not rerun
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["samples_per_s"] > 0 and rows[0]["trainable_parameters"] > 0

    calls.clear()
    run_study(load_study(study.path), out, registry, cell_runner=lambda cell, *a: calls.append(cell.id) or {}, report=False)
    assert calls == []  # everything finished

    # Changing what a cell measures invalidates its stored result.
    study.path.write_text(study.path.read_text().replace("bench_steps = 2", "bench_steps = 3"))
    run_study(load_study(study.path), out, registry, cell_runner=lambda cell, *a: calls.append(cell.id) or {}, report=False)
    assert calls == ["a-fp32-eager-none", "b-fp32-eager-none"]


def test_failed_cell_is_recorded_and_the_study_goes_on(tmp_path, registry):
    study = load_study(write_study(tmp_path, adapters='["no-such-adapter", "none"]'))
    out = tmp_path / "out"
    rows = run_study(study, out, registry)
    failed, ok = rows
    assert failed["status"] == "failed" and "unknown adapter 'no-such-adapter'" in failed["error"]
    assert failed["adapter"] == "no-such-adapter"
    assert ok["status"] == "ok" and ok["step_ms"] > 0 and ok["epoch_s"] > 0
    record = json.loads((out / "cells" / "a-fp32-eager-no-such-adapter.json").read_text())
    assert "Traceback" in record["traceback"]
    table = (out / "results.md").read_text()
    assert "failed" in table and "unknown adapter" in table

    # Failed cells are kept by default and rerun on request.
    calls = []
    run_study(load_study(study.path), out, registry, cell_runner=lambda cell, *a: calls.append(cell.id) or {}, report=False)
    assert calls == []
    run_study(load_study(study.path), out, registry, retry_failed=True, cell_runner=lambda cell, *a: calls.append(cell.id) or {}, report=False)
    assert calls == ["a-fp32-eager-no-such-adapter"]


@pytest.mark.slow
def test_profile_pass_and_training_cell(tmp_path, registry):
    path = write_study(tmp_path, extra="train = true")
    path.write_text(path.read_text().replace("profile_active = 0", "profile_active = 1"))
    out = tmp_path / "out"
    (row,) = run_study(load_study(path), out, registry)
    assert row["status"] == "ok", row.get("error")
    assert row["self_cpu_ms"] > 0 and row["self_cuda_ms"] is None  # CPU: no CUDA time
    assert 0 <= row["ndcg@10"] <= row["hr@10"] <= 1
    assert row["device"] and row["torch"]
    run = out / "cells" / "a-fp32-eager-none" / "run"
    assert (run / "results.json").is_file() and (run / "bench.json").is_file()
    assert list((out / "cells" / "a-fp32-eager-none" / "profile").glob("chrome-trace-*.json"))


@pytest.mark.slow
def test_every_phase_of_every_cell_compiles_from_empty_caches(tmp_path, registry, monkeypatch):
    """torch.compile caches per function, process-wide, and every TrainStep compiles the same
    step lambda: without a reset between phases, cells pile graphs onto one cache until dynamo's
    recompile limit makes the later cells silently eager (seen on 4 x H100). The profile runs on
    the bench's own step, so each cell builds two steps: bench and training."""
    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from recengine import training

    step_code = next(c for c in training.TrainStep.__init__.__code__.co_consts if getattr(c, "co_name", "") == "<lambda>")
    cached_at_start = []
    original = training.TrainStep.__init__

    def spying_init(self, *args, **kwargs):
        cached_at_start.append(len(_debug_get_cache_entry_list(step_code)))
        original(self, *args, **kwargs)

    monkeypatch.setattr(training.TrainStep, "__init__", spying_init)
    path = write_study(tmp_path, adapters='["none", "lora"]', recipes=("a", "b"),
                       extra="train = true")
    path.write_text(path.read_text().replace("profile_active = 0", "profile_active = 1")
                    .replace("[matrix]\n", '[matrix]\ncompiler = [{name = "torch-compile", backend = "eager"}]\n'))
    rows = run_study(load_study(path), tmp_path / "out", registry)
    assert [r["status"] for r in rows] == ["ok"] * 4, [r.get("error") for r in rows]
    assert len(cached_at_start) == 4 * 2  # bench (profiled on the same step) and training of each cell
    assert cached_at_start == [0] * 8
    assert _debug_get_cache_entry_list(step_code)  # and the steps did compile (the test would prove nothing otherwise)
