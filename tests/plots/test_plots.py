"""Figures: drawn without pyplot, their titles, axis labels and legends read back from the returned
matplotlib Figure, an empty mixture component drawn (not raised on), and a failing figure that never
costs the run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ppvae.plots import figures as plots


def _texts(fig):
    return [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text"))]


def test_mixture_with_an_empty_component_is_drawn(tmp_path):
    """Component 2 is no point's argmax (K = 3 on two clusters): before, scatter's alpha of a zero-size
    array raised 'zero-size array to reduction operation minimum'."""
    x = np.array([[0.0, 0.0], [0.1, 0.2], [3.0, 3.0], [3.1, 2.9]])
    resp = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2]])
    covs = np.stack([np.eye(2)] * 3)
    fig = plots.plot_mixture_2d(x, resp, [0.5, 0.45, 0.05], [[0, 0], [3, 3], [1.5, 1.5]], covs,
                                str(tmp_path / "m.png"), columns=["a", "b"], title="t")
    assert (tmp_path / "m.png").stat().st_size > 0
    assert "w=0.05, no points" in _texts(fig) and "w=0.50" in _texts(fig)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("a", "b", "t")


def test_em_trace_has_a_legend_and_marks_the_best_restart(tmp_path):
    histories = [[-10.0, -8.0, -7.5], [-12.0, -6.0, -5.0, -4.9], [-9.0, -8.5]]
    fig = plots.plot_em_trace(histories, str(tmp_path / "em.png"), title="gmm by EM: 3 restarts")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["restart 0", "restart 1 (best)", "restart 2", "final -4.90"]  # best = highest final value
    assert ax.get_title() == "gmm by EM: 3 restarts"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("EM iteration", "log-likelihood")
    fig = plots.plot_em_trace(histories, str(tmp_path / "em.png"), best=0)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "restart 0 (best)"


def test_cavi_elbo_trace_is_titled_and_labelled_as_cavi(tmp_path, capsys):
    """Before: CAVI's elbo_trace.png was titled "EM restarts" with axes log-likelihood / EM iteration."""
    import torch

    from ppvae.cli.app import main

    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((12, 8), 2.0), generator=g)
    path = tmp_path / "c.npy"
    np.save(path, counts.numpy())
    drawn = []
    real = plots.plot_em_trace

    def spy(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "plot_em_trace", spy)
    try:
        assert main(["cavi", "lda", "topics=2", "--data", str(path), "--max-iter", "5", "--out",
                     str(tmp_path / "run")]) == 0
    finally:
        mp.undo()
    ax = drawn[0].axes[0]
    assert ax.get_title() == "lda by CAVI: ELBO per iteration"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("CAVI iteration", "ELBO")
    assert (tmp_path / "run" / "elbo_trace.png").exists()


def _overlaps(boxes):
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


def test_topic_panels_have_an_x_label_and_no_colliding_ticks(tmp_path):
    """20 topics of 10 words, as `ppvae fit lda` on reuters: every x tick label (of every panel) and
    every word label has its own space, and the figure names the x axis."""
    rng = np.random.default_rng(0)
    words = [[f"word{t}_{i}" for i in range(10)] for t in range(20)]
    weights = np.sort(rng.dirichlet(np.ones(50), size=20)[:, :10], axis=1)[:, ::-1] * 3
    fig = plots.plot_top_words(words, weights.tolist(), rng.uniform(-0.2, 0.4, 20).tolist(),
                               str(tmp_path / "topics.png"))
    assert fig.get_supxlabel() == "probability of the word in the topic"
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()
             if t.get_visible() and t.get_text()]
    assert len(boxes) > 200 and not _overlaps(boxes)


def test_image_grid_names_its_rows(tmp_path):
    images = np.random.default_rng(0).uniform(size=(100, 16))
    fig = plots.plot_image_grid(images, str(tmp_path / "s.png"), (4, 4), 10, "row = class y",
                                row_labels=list(range(10)), row_name="class y")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == [str(i) for i in range(10)]
    assert ax.get_ylabel() == "class y" and ax.get_title() == "row = class y"
    assert len(ax.get_images()[0].get_array()) == 10 * 5 - 1  # 10 rows of 4 pixels and 9 gaps


def test_latent_scatter_legend_names_the_colouring(tmp_path):
    z = np.random.default_rng(0).normal(size=(30, 3))
    labels = np.repeat([-1, 0, 4], 10)
    fig = plots.plot_latent_2d(z, labels, str(tmp_path / "l.png"), label_name="argmax q(y|x)")
    legend = fig.axes[0].get_legend()
    assert legend.get_title().get_text() == "argmax q(y|x)"
    assert [t.get_text() for t in legend.get_texts()] == ["unlabeled (10)", "0 (10)", "4 (10)"]
    assert fig.axes[0].get_xlabel() == "PC 1"


def test_plots_leave_the_global_backend_and_pyplot_alone(tmp_path):
    code = ("import matplotlib; matplotlib.use('svg'); import sys; from ppvae import plots; "
            f"plots.plot_loss([3.0, 2.0, 1.0], {str(tmp_path / 'l.png')!r}); "
            "print(matplotlib.get_backend(), 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["svg", "False"]
    assert (tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failing_figure_never_costs_the_fit(tmp_path, capsys, monkeypatch):
    """Before: an exception in a figure left only checkpoints and exited 1 with a traceback. Now the run
    is written, the exit status is 0, and one stderr line names the figure."""
    from ppvae.cli.app import main

    def broken(*args, **kwargs):
        raise ValueError("zero-size array to reduction operation minimum\nsecond line")

    monkeypatch.setattr(plots, "plot_mixture_2d", broken)
    out = tmp_path / "k3"
    assert main(["fit", "gmm", "K=3", "--data", "faithful", "--steps", "5", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 5
    assert (out / "loss.png").exists() and not (out / "mixture.png").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: could not draw mixture.png (ValueError: zero-size array to reduction operation "
                   f"minimum); everything else is written to {out}"]
