"""MCMC trace and rank plots (ppvae/_plots_mcmc.py): one row/panel per informative scalar of the global sites,
labelled ``site[i,j]`` as every table is, per-data-point sites and constant entries left out, a Cholesky factor
drawn as its correlations, "first N of M" with ``scalars=`` to choose, without touching pyplot's global state."""

import arviz as az
import matplotlib.pyplot as plt  # imported by ArviZ anyway: its figure list shows what the plots opened
import numpy as np
import pytest

from ppvae import PPVAEError
from ppvae._util.scalars import scalar_series
from ppvae.plots.mcmc import plot_mcmc_rank, plot_mcmc_trace, scalar_draws


def _posterior():
    rng = np.random.default_rng(0)
    return az.from_dict(posterior={"w": rng.standard_normal((2, 100, 2)), "sigma": rng.gamma(2.0, size=(2, 100)),
                                   "z": rng.standard_normal((2, 100, 5))},
                        coords={"feature": ["x0", "x1"], "data": np.arange(5)},
                        dims={"w": ["feature"], "z": ["data"]}).posterior


def _cholesky_posterior(K=2, D=3):
    """A full-covariance GMM's ``corr``: LKJ Cholesky factors, whose L[0,0] = 1 and upper zeros are constant."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 100, K, D, D)) * 0.3 + np.eye(D)
    cov = a @ np.swapaxes(a, -1, -2)
    sd = np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
    corr = np.linalg.cholesky(cov / (sd[..., :, None] * sd[..., None, :]))
    return az.from_dict(posterior={"corr": corr, "scales": sd}).posterior, corr


def test_scalars_are_labelled_by_site_and_index_and_locals_are_left_out():
    """Labels are integer indices as in `ppvae summary` (before: w[x0] here, w[0,0] there)."""
    draws, total = scalar_draws(_posterior())
    assert list(draws) == ["w[0]", "w[1]", "sigma"] and total == 3
    assert all(v.shape == (2, 100) for v in draws.values())
    some, total = scalar_draws(_posterior(), max_panels=2)
    assert list(some) == ["w[0]", "w[1]"] and total == 3
    chosen, _ = scalar_draws(_posterior(), scalars=["sigma", "w[1]"])
    assert list(chosen) == ["sigma", "w[1]"]
    with pytest.raises(PPVAEError, match=r"^scalars: no scalar w\[7\]; expected some of w\[0\], w\[1\], sigma$"):
        scalar_draws(_posterior(), scalars=["w[7]"])


def test_a_cholesky_factor_is_shown_as_correlations_without_constants():
    """Before: corr[k,0,0] = 1 and the zeros above the diagonal were drawn (empty density panels, a broken rank
    panel) and L's own entries shown as if they were correlations."""
    post, corr = _cholesky_posterior()
    draws, total = scalar_draws(post, max_panels=100)
    assert list(draws) == [f"corr[{k},{i},{j}]" for k in range(2) for i, j in ((1, 0), (2, 0), (2, 1))] + [
        f"scales[{k},{d}]" for k in range(2) for d in range(3)]
    r = corr @ np.swapaxes(corr, -1, -2)
    np.testing.assert_allclose(draws["corr[1,2,1]"], r[:, :, 1, 2, 1])
    assert np.all(np.abs(draws["corr[0,2,0]"]) <= 1 + 1e-9)
    constant = {"c": np.ones((2, 10)), "v": np.arange(20.0).reshape(2, 10)}
    assert [n for n, _ in scalar_series(constant, 2)] == ["v"]  # a constant entry is no panel


def test_trace_and_rank_figures_have_one_panel_per_scalar(tmp_path):
    figures_before = plt.get_fignums()
    fig = plot_mcmc_trace(_posterior(), str(tmp_path / "trace.png"), title="m by nuts")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["w[0]", "w[0]", "w[1]", "w[1]", "sigma", "sigma"]  # density | draws per scalar
    assert fig._suptitle.get_text().startswith("m by nuts: trace") and "first" not in fig._suptitle.get_text()
    fig = plot_mcmc_rank(_posterior(), str(tmp_path / "rank.png"), title="m by nuts", max_panels=2)
    visible = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert visible == ["w[0]", "w[1]"]
    assert "(first 2 of 3 scalars; choose with scalars=)" in fig._suptitle.get_text()
    fig = plot_mcmc_rank(_cholesky_posterior()[0], str(tmp_path / "rank2.png"), scalars=["corr[0,1,0]"])
    assert [ax.get_title() for ax in fig.axes if ax.get_visible()] == ["corr[0,1,0]"]
    assert fig._suptitle.get_text().endswith("(1 chosen of 12 scalars)")
    assert (tmp_path / "trace.png").stat().st_size > 0 and (tmp_path / "rank.png").stat().st_size > 0
    assert plt.get_fignums() == figures_before  # drawn on Figures of their own; pyplot's state untouched
