import matplotlib.image

from recengine.plots import PLOTS, draw_all, optimisation


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
