"""recengine.load / Recommender and `recengine recommend`: results, batching, bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import recengine
from recengine.cli.main import app
from recengine.errors import UserError
from recengine.inference import TopK, left_padded

def test_import_recengine_stays_light():
    code = "import sys, recengine; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert recengine.load is recengine.inference.load


def assert_same_recommendations(got, want):
    """Same items in the same order; scores equal up to float noise (batch shapes change BLAS sums)."""
    assert [[item for item, _ in rec] for rec in got] == [[item for item, _ in rec] for rec in want]
    for rec_got, rec_want in zip(got, want):
        assert [s for _, s in rec_got] == pytest.approx([s for _, s in rec_want], rel=1e-5, abs=1e-6)


def test_recommend_returns_k_unseen_items_sorted_by_score(recommender):
    recs = recommender.recommend([["1", "2", "3"], [5, 6]], k=5)
    assert [len(r) for r in recs] == [5, 5]
    for history, rec in zip([{"1", "2", "3"}, {"5", "6"}], recs):
        items, scores = zip(*rec)
        assert not history & set(items)
        assert list(scores) == sorted(scores, reverse=True)


def test_include_history_can_recommend_history_items(recommender):
    history = [str(i) for i in range(1, 11)]
    with_history = recommender.recommend([history], k=50, exclude_history=False)[0]
    assert len(with_history) == 50 and set(history) <= {item for item, _ in with_history}
    without = recommender.recommend([history], k=50)[0]
    assert len(without) == 40 and not set(history) & {item for item, _ in without}


def test_batching_does_not_change_results(recommender):
    histories = [[str(1 + (u * 7 + j) % 50) for j in range(1 + u % 15)] for u in range(23)]
    assert_same_recommendations(recommender.recommend(histories, k=7, batch_size=4), recommender.recommend(histories, k=7, batch_size=512))


def test_api_equals_the_artifact_module_for_histories_that_fit(recommender):
    histories = [["3", "9", "4"], ["10"]]
    ids, scores = TopK(recommender.model, 5)(left_padded(recommender.items.encode_all(histories), recommender.max_len - 1))
    expected = [[(str(i), s) for i, s in zip(row_ids, row_scores)] for row_ids, row_scores in zip(ids.tolist(), scores.tolist())]
    assert_same_recommendations(recommender.recommend(histories, k=5), expected)


def test_unknown_ids_are_rejected_with_their_names(recommender):
    with pytest.raises(UserError, match=r"histories\[1\]: unknown item id\(s\) nope, 999"):
        recommender.recommend([["1"], ["1", "nope", "999", "nope"]], k=3)


def test_empty_history_is_rejected(recommender):
    with pytest.raises(UserError, match=r"histories\[0\]: empty history"):
        recommender.recommend([[]], k=3)


def test_too_long_history_is_truncated_to_the_last_max_len_minus_one_items(recommender):
    keep = recommender.max_len - 1
    recent = [str(1 + i % 50) for i in range(keep)]
    long = ["40", "41", "42"] + recent
    # same scores as the window alone; the older items are still excluded
    window_scores = dict(recommender.recommend([recent], k=50, exclude_history=False)[0])
    long_recs = recommender.recommend([long], k=50)[0]
    assert long_recs and all(window_scores[item] == pytest.approx(score, rel=1e-5) for item, score in long_recs)
    assert not {"40", "41", "42"} & {item for item, _ in long_recs}


def test_k_must_be_positive(recommender):
    with pytest.raises(UserError, match="k must be at least 1"):
        recommender.recommend([["1"]], k=0)


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_cli_batch_equals_api(run_dir, recommender, tmp_path):
    histories = [["1", "2", "3"], ["7"], [str(i) for i in range(1, 31)]]
    records = [histories[0], {"user": "u2", "history": histories[1]}, histories[2]]
    out = tmp_path / "recs.jsonl"
    result = CliRunner().invoke(app, ["recommend", str(run_dir), "--input", str(write_jsonl(tmp_path / "in.jsonl", records)),
                                      "--output", str(out), "-k", "6", "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    api = recommender.recommend(histories, k=6)
    assert_same_recommendations([list(zip(line["items"], line["scores"])) for line in lines], api)
    assert [line.get("user") for line in lines] == [None, "u2", None]
    assert not list(tmp_path.glob(".recs.jsonl.tmp-*"))


def test_cli_single_history_matches_api(run_dir, recommender):
    result = CliRunner().invoke(app, ["recommend", str(run_dir), "--history", "4,5,6", "-k", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = [item for item, _ in recommender.recommend([["4", "5", "6"]], k=3)[0]]
    shown = re.findall(r"│\s+\d+\s+│\s+(\S+)\s+│", result.output)
    assert shown == expected


@pytest.mark.parametrize("line, message", [
    ('["1", "nope"]', "in.jsonl:2: unknown item id(s) nope"),
    ("[]", "in.jsonl:2: empty history"),
    ("[1, 2", "in.jsonl:2: not valid JSON"),
    ('{"user": "x"}', 'in.jsonl:2: an object line needs a "history" key'),
    ('"1,2"', "in.jsonl:2: a history must be a JSON list"),
])
def test_cli_bad_input_is_one_line_naming_the_line_and_writes_nothing(run_dir, tmp_path, line, message):
    source = tmp_path / "in.jsonl"
    source.write_text('["1"]\n' + line + "\n")
    out = tmp_path / "recs.jsonl"
    out.write_text("previous results\n")
    result = CliRunner().invoke(app, ["recommend", str(run_dir), "--input", str(source), "--output", str(out)])
    assert result.exit_code == 1
    assert message in result.output and "Traceback" not in result.output
    assert out.read_text() == "previous results\n"  # nothing already written is lost


def test_cli_needs_exactly_one_input_form(run_dir):
    result = CliRunner().invoke(app, ["recommend", str(run_dir)])
    assert result.exit_code == 1 and "exactly one of --history" in result.output


def test_serving_doc_example_runs(run_dir):
    doc = (Path(__file__).parents[1] / "docs" / "serving.md").read_text()
    example = re.search(r"```python\n(.*?)```", doc, re.S).group(1)
    assert '"runs/quickstart-demo"' in example
    example = example.replace('"runs/quickstart-demo"', repr(str(run_dir)))
    namespace: dict = {}
    exec(compile(example, "docs/serving.md", "exec"), namespace)
    assert len(namespace["recs"]) == 2 and len(namespace["recs"][0]) == 5
