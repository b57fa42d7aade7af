import matplotlib.image
import matplotlib.pyplot as plt

from recengine.plots import PLOTS, _bar_figure, _colours, _lines, draw_all, optimisation


def rows():
    sizes = [("5m", 5e6, 10.0), ("85m", 85e6, 60.0)]
    configs = [("fp32", "eager", "none"), ("amp", "torch-compile", "none"), ("amp", "torch-compile", "ilora")]
    return [{"recipe": r, "parameters": p, "step_ms": s, "samples_per_s": 1000 / s, "peak_memory_mb": p / 1e5, "epoch_s": s,
             "hr@10": 0.2, "ndcg@10": 0.1, "precision": pr, "compiler": c, "adapter": a, "status": "ok", "device": "cpu"}
            for r, p, s in sizes for pr, c, a in configs] + [{"recipe": "430m", "status": "failed", "error": "OOM"}]


def test_optimisation_names():
    assert [optimisation(r) for r in rows()[:3]] == ["baseline", "amp+compile", "ilora+amp+compile"]


def test_every_plot_is_written_and_not_blank(tmp_path):
    paths = draw_all(rows(), tmp_path)
    assert [p.stem for p in paths] == list(PLOTS)
    for path in paths:
        image = matplotlib.image.imread(path)
        assert image.shape[0] > 300 and image.shape[1] > 600
        assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


def test_plots_without_data_still_explain_why(tmp_path):
    paths = draw_all([{"recipe": "x", "status": "failed"}], tmp_path)
    assert all(p.stat().st_size > 1000 for p in paths)


def matrix_rows(devices=("H100",)):
    return [{"recipe": "85m", "parameters": 85e6, "precision": p, "compiler": c, "adapter": a, "device": d, "status": "ok"}
            for d in devices for a in ("none", "lora", "ilora") for p in ("fp32", "amp") for c in ("eager", "torch-compile")]


def test_every_configuration_of_the_study_matrix_has_its_own_colour():
    colours = _colours(matrix_rows())
    assert len(colours) == 12 and len(set(colours.values())) == 12  # matplotlib's default cycle repeats after 10
    assert list(colours)[:4] == ["baseline", "compile", "amp", "amp+compile"], "matrix order, baseline first"


def test_two_cards_keep_the_colours_and_differ_by_mark():
    rows = [{**r, "step_ms": 10.0} for r in matrix_rows(("H100", "H200"))]
    ax = _bar_figure(rows, "step_ms", "ms", "title", "nothing").axes[0]
    bars = {bar.get_label(): bar for bar in ax.containers}
    h100, h200 = bars["amp+compile @ H100"].patches[0], bars["amp+compile @ H200"].patches[0]
    assert h100.get_facecolor() == h200.get_facecolor(), "a configuration keeps its colour on every card"
    assert h100.get_hatch() != h200.get_hatch()
    fig, ax = plt.subplots()
    _lines(ax, [{**r, "parameters": 85e6, "samples_per_s": 1.0} for r in rows], "samples_per_s", "samples/s")
    markers = {line.get_label(): line.get_marker() for line in ax.get_lines()}
    assert markers["baseline @ H100"] != markers["baseline @ H200"]
    plt.close("all")


def test_a_cell_not_measured_gets_no_bar_and_no_label():
    rows = [{"recipe": "5m", "parameters": 5e6, "step_ms": 12.0, "status": "ok"},
            {"recipe": "85m", "parameters": 85e6, "step_ms": 30.0, "status": "ok"},
            {"recipe": "85m", "parameters": 85e6, "step_ms": 20.0, "status": "ok", "precision": "amp"},
            {"recipe": "5m", "parameters": 5e6, "step_ms": float("nan"), "status": "ok", "precision": "amp"}]
    ax = _bar_figure(rows, "step_ms", "ms", "title", "nothing").axes[0]
    labels = [text.get_text() for text in ax.texts]
    assert sorted(labels) == ["", "12", "20", "30"], "the NaN cell is a gap, not a bar labelled 0 or nan"
    plt.close("all")
