"""Figures: drawn without pyplot, their titles, axis labels and legends read back from the returned
matplotlib Figure, an empty mixture component drawn (not raised on), and a failing figure that never
costs the run."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ppvae import plots
from ppvae.plots import evaluation, figures, mixture


def _texts(fig):
    return [t.get_text() for t in fig.findobj(match=lambda a: hasattr(a, "get_text"))]


def test_mixture_with_an_empty_component_is_drawn(tmp_path):
    """Component 2 is no point's argmax (K = 3 on two clusters): before, scatter's alpha of a zero-size
    array raised 'zero-size array to reduction operation minimum'."""
    x = np.array([[0.0, 0.0], [0.1, 0.2], [3.0, 3.0], [3.1, 2.9]])
    resp = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.7, 0.2]])
    covs = np.stack([np.eye(2) * 0.01] * 3)
    fig = plots.plot_mixture_2d(x, resp, [0.5, 0.45, 0.05], [[0, 0], [3, 3], [1.5, 1.5]], covs,
                                str(tmp_path / "m.png"), columns=["a", "b"], title="t")
    assert (tmp_path / "m.png").stat().st_size > 0
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "component 2: w = 0.05, holds no points (not drawn)" in legend
    assert "component 0: w = 0.50, 2 points" in legend
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == ("a (data units)", "b (data units)", "t")


def test_mixture_axes_have_units_a_legend_for_ellipses_and_ignore_a_dead_component(tmp_path):
    """Before: unlabelled axes, unexplained ellipses, "w=0.00" written over an ellipse, and the axis stretched
    to 115 by a dead component (EM leaves its mean at the origin, far from Old Faithful's points)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([2.0, 55.0], [0.3, 6.0], (50, 2)), rng.normal([4.3, 80.0], [0.4, 6.0], (80, 2))])
    resp = np.zeros((130, 3))
    resp[:50, 0], resp[50:, 1] = 1.0, 1.0
    covs = np.stack([np.diag([0.09, 36.0]), np.diag([0.16, 36.0]), np.eye(2)])
    meta = {"columns": ["eruptions", "waiting"], "units": ["min", "min"]}
    fig = plots.plot_mixture_2d(x, resp, [0.38, 0.62, 0.0], [[2.0, 55.0], [4.3, 80.0], [0.0, 0.0]], covs,
                                str(tmp_path / "m.png"), title="gmm by EM", meta=meta)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruptions (min)", "waiting (min)")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["component 0: w = 0.38, 50 points", "component 1: w = 0.62, 80 points",
                      "component 2: w = 0.00, holds no points (not drawn)",
                      "1 sd ellipse (39% of a component's mass)", "2 sd ellipse (86%)", "component mean"]
    assert not ax.texts  # every label is in the legend: none drawn over an ellipse
    assert ax.get_xlim()[0] > 0.5 and ax.get_ylim()[0] > 20  # the dead component at (0, 0) does not stretch them
    std = axis_label_of({"standardized": {"mean": [0], "std": [1]}, "columns": ["w"], "units": ["min"]})
    assert std == "w (standardized, sd of min)"


def axis_label_of(meta):
    return mixture.axis_label(meta, 0)


def test_em_trace_has_a_legend_and_marks_the_best_restart(tmp_path):
    histories = [[-10.0, -8.0, -7.5], [-12.0, -6.0, -5.0, -4.9], [-9.0, -8.5]]
    fig = plots.plot_em_trace(histories, str(tmp_path / "em.png"), title="gmm by EM: 3 restarts")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["restart 0", "restart 1 (best)", "restart 2", "final -4.90"]  # best = highest final value
    assert ax.get_title() == "gmm by EM: 3 restarts"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("EM iteration", "log-likelihood (nats, data-set total)")
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
    real = figures.plot_em_trace

    def spy(*args, **kwargs):
        drawn.append(real(*args, **kwargs))
        return drawn[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(figures, "plot_em_trace", spy)
    try:
        assert main(["cavi", "lda", "topics=2", "--data", str(path), "--max-iter", "5", "--out",
                     str(tmp_path / "run")]) == 0
    finally:
        mp.undo()
    ax = drawn[0].axes[0]
    assert ax.get_title() == "lda by CAVI: ELBO per iteration"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("CAVI iteration", "ELBO (nats, corpus total)")
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
    assert fig.axes[0].get_xlabel() == "principal component 1 of z (latent units: prior sd 1)"


@pytest.mark.slow
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

    monkeypatch.setattr(mixture, "plot_mixture_2d", broken)
    out = tmp_path / "k3"
    assert main(["fit", "gmm", "K=3", "--data", "faithful", "--steps", "5", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] == 5
    assert (out / "loss.png").exists() and not (out / "mixture.png").exists()
    err = [line for line in capsys.readouterr().err.strip().splitlines() if "could not draw" in line]
    assert err == [f"ppvae: warning: could not draw mixture.png (ValueError: zero-size array to reduction operation "
                   f"minimum); everything else is written to {out}"]


def test_log_marginal_panels_say_what_they_show(tmp_path):
    """Before: exact and EM results got an empty 0-1 k-hat axes; AIS's said "weights exact (k-hat undefined)"
    when the reason was fewer than 21 chains; fits without continuous locals were titled "by importance sampling"."""
    v = np.random.default_rng(0).normal(-4.0, 1.0, 50)
    fig = plots.plot_log_marginal(v, np.linspace(0.0, 0.9, 50), str(tmp_path / "is.png"), "m: by IS, K=1000")
    assert len(fig.axes) == 2 and fig.axes[1].get_xlabel() == "Pareto k-hat of each point's weights"
    assert fig.axes[0].get_xlabel() == "log p(x_i) estimate (nats)"
    fig = plots.plot_log_marginal(v, np.full(50, -np.inf), str(tmp_path / "exact.png"), "m: exact",
                                  xlabel="log p(x_i | fitted globals) (nats)")
    assert len(fig.axes) == 1 and fig.axes[0].get_xlabel() == "log p(x_i | fitted globals) (nats)"
    note = "no k-hat: needs at least 21 weights per point; C = 16"
    fig = plots.plot_log_marginal(v, np.full(50, np.nan), str(tmp_path / "ais.png"), "m: AIS", khat_note=note)
    assert len(fig.axes) == 2 and " ".join(fig.axes[1].texts[0].get_text().split()) == note
    assert evaluation.min_weights_for_khat() == 21
    from ppvae.evaluate.estimate import psis_khat  # the rule the note states, checked against the estimator

    lw = np.random.default_rng(1).normal(size=(2, 21))
    assert np.isfinite(psis_khat(lw)).all() and np.isnan(psis_khat(lw[:, :20])).all()


def test_bdmc_ticks_are_the_step_counts_and_axes_say_nats(tmp_path):
    """Before: T ticks read 3 x 10^1 on a log axis."""
    fig = plots.plot_bdmc([25, 50, 100], [-100.0, -99.0, -98.6], [-95.0, -97.0, -98.0], str(tmp_path / "b.png"))
    for ax in fig.axes:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["25", "50", "100"]
        assert ax.get_xlabel() == "annealing steps T" and "nats" in ax.get_ylabel()
    assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in fig.axes[1].get_yticklabels())


def test_topics_relative_to_uniform_are_readable(tmp_path):
    """Before: ProdLDA's bars were all about 0.0004 (near 1/V) on an absolute axis, tick labels at 6 pt."""
    V = 2000
    w = np.full((3, 10), 1.2 / V)
    fig = plots.plot_top_words([[f"w{i}" for i in range(10)]] * 3, w.tolist(), [0.1, 0.2, 0.3],
                               str(tmp_path / "t.png"), vocab_size=V)
    assert "multiples of uniform 1/V (V = 2000" in fig.get_supxlabel()
    widths = [p.get_width() for p in fig.axes[0].patches]
    assert np.allclose(widths, 1.2)
    assert min(t.get_fontsize() for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()) >= 7.5


def test_marginals_say_first_n_of_m_drop_constants_and_show_correlations(tmp_path):
    """Before: the first 12 scalars silently (factor analysis's psi absent), a Cholesky factor's constant 1s and
    0s as empty panels, 7-pt ticks and no y label."""
    rng = np.random.default_rng(0)
    chol = np.linalg.cholesky(np.array([[1.0, 0.5], [0.5, 1.0]]))
    corr = chol + 0.0 * rng.normal(size=(200, 2, 2, 2))
    corr[:, :, 1, 0] = rng.uniform(0.2, 0.4, (200, 2))
    corr[:, :, 1, 1] = np.sqrt(1 - corr[:, :, 1, 0] ** 2)
    draws = {"nuts": {"mu": rng.normal(size=(200, 10)), "corr": corr, "psi": rng.gamma(2.0, size=(200, 3))}}
    fig = plots.plot_marginals(draws, {}, str(tmp_path / "m.png"), title="fa", max_panels=8)
    assert fig._suptitle.get_text() == "fa (first 8 of 15 scalars; choose with scalars=)"
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [f"mu[{i}]" for i in range(8)]
    fig = plots.plot_marginals(draws, {}, str(tmp_path / "m.png"), title="fa",
                               scalars=["corr[0,1,0]", "corr[1,1,0]", "psi[2]"])
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["corr[0,1,0]", "corr[1,1,0]", "psi[2]"]
    assert fig._suptitle.get_text() == "fa (chosen 3 of 15 scalars)"
    assert fig.axes[0].get_ylabel() == "posterior density" and fig.axes[0].get_title(loc="center")
    assert min(t.get_fontsize() for t in fig.axes[0].get_xticklabels()) >= 8
    with pytest.raises(Exception, match=r"^scalars: no scalar corr\[0,0,0\]"):  # a constant entry is no scalar
        plots.plot_marginals(draws, {}, str(tmp_path / "m.png"), scalars=["corr[0,0,0]"])


def test_loss_axes_name_their_units(tmp_path):
    fig = plots.plot_loss(np.linspace(1500.0, 1200.0, 100), str(tmp_path / "l.png"))
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("SVI step", "negative ELBO (nats, data-set total)")
    fig = plots.plot_loss(np.linspace(150.0, 100.0, 100), str(tmp_path / "l.png"), "per point",
                          test_losses=[(50, 120.0), (100, 110.0)], ylabel="negative ELBO per data point (nats)")
    assert fig.axes[0].get_ylabel() == "negative ELBO per data point (nats)"
    assert all("10^" not in t.get_text() for t in fig.axes[0].get_yticklabels())



def test_imputation_figure_rows_show_input_mean_draw_truth(tmp_path):
    """Four labelled rows; the input row shows observed pixels as they are and missing ones at grey 0.3; the mean and
    truth rows are the arrays given."""
    rng = np.random.default_rng(0)
    truth = (rng.uniform(size=(3, 16)) < 0.4).astype(float)
    mask = np.ones((3, 16), bool)
    mask[:, 8:] = False
    mean = np.full((3, 16), 0.5)
    fig = plots.plot_imputations(truth, mask, mean, truth, str(tmp_path / "c.png"), (4, 4))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["input", "mean", "draw", "truth"]
    canvas = np.asarray(ax.get_images()[0].get_array())
    first = canvas[:4, :4].reshape(-1)  # image 0 of the input row
    np.testing.assert_array_equal(first[:8], truth[0, :8])
    np.testing.assert_array_equal(first[8:], 0.3)
    np.testing.assert_array_equal(canvas[5:9, :4].reshape(-1), mean[0])
    assert (tmp_path / "c.png").stat().st_size > 0
