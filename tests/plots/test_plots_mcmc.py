"""MCMC trace and rank plots (ppvae/_plots_mcmc.py): one row/panel per scalar of the global sites, labelled by
site and coordinate, per-data-point sites left out, drawn without touching pyplot's global state."""

import arviz as az
import matplotlib.pyplot as plt  # imported by ArviZ anyway: its figure list shows what the plots opened
import numpy as np

from ppvae.plots.mcmc import plot_mcmc_rank, plot_mcmc_trace, scalar_draws


def _posterior():
    rng = np.random.default_rng(0)
    return az.from_dict(posterior={"w": rng.standard_normal((2, 100, 2)), "sigma": rng.gamma(2.0, size=(2, 100)),
                                   "z": rng.standard_normal((2, 100, 5))},
                        coords={"feature": ["x0", "x1"], "data": np.arange(5)},
                        dims={"w": ["feature"], "z": ["data"]}).posterior


def test_scalars_are_labelled_by_site_and_coordinate_and_locals_are_left_out():
    draws, total = scalar_draws(_posterior())
    assert list(draws) == ["w[x0]", "w[x1]", "sigma"] and total == 3
    assert all(v.shape == (2, 100) for v in draws.values())
    some, total = scalar_draws(_posterior(), max_panels=2)
    assert list(some) == ["w[x0]", "w[x1]"] and total == 3


def test_trace_and_rank_figures_have_one_panel_per_scalar(tmp_path):
    figures_before = plt.get_fignums()
    fig = plot_mcmc_trace(_posterior(), str(tmp_path / "trace.png"), title="m by nuts")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["w[x0]", "w[x0]", "w[x1]", "w[x1]", "sigma", "sigma"]  # density | draws per scalar
    assert fig._suptitle.get_text().startswith("m by nuts: trace")
    fig = plot_mcmc_rank(_posterior(), str(tmp_path / "rank.png"), title="m by nuts", max_panels=2)
    visible = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert visible == ["w[x0]", "w[x1]"] and "(first 2 of 3 scalars)" in fig._suptitle.get_text()
    assert (tmp_path / "trace.png").stat().st_size > 0 and (tmp_path / "rank.png").stat().st_size > 0
    assert plt.get_fignums() == figures_before  # drawn on Figures of their own; pyplot's state untouched
