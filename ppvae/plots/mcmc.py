"""MCMC figures: trace and rank plots of the posterior draws, one row or panel per scalar, labelled by site.

``trace.png`` (ArviZ ``plot_trace``): each scalar's marginal density per chain (left) and its draws
in order (right). ``rank.png`` (ArviZ ``plot_rank``; Vehtari et al. 2021, "Rank-normalization, folding,
and localization: an improved R-hat", sec. 4.1): histograms of each chain's ranks among all draws;
chains that mix sample the same distribution and their histograms are flat. Per-data-point sites
(dimension ``data``) are left out, and so are constant entries; a Cholesky factor of correlations is drawn as
its correlations (:mod:`ppvae._util.scalars`). At most ``max_panels`` scalars are drawn, the title saying how many
there are, unless ``scalars`` names the ones to draw. The figures are drawn on Figures of their own
(ppvae/plots.py), never pyplot's.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np

from ppvae._util.scalars import scalar_series
from ppvae._util.validation import PPVAEError
from ppvae.plots.canvas import figure as _figure
from ppvae.plots.canvas import save as _save

__all__ = ["plot_mcmc_trace", "plot_mcmc_rank", "scalar_draws"]


def scalar_draws(posterior, max_panels: int = 12, scalars=None) -> tuple[dict[str, np.ndarray], int]:
    """The global sites of an ArviZ posterior group as scalars ``"site[i,j]"`` -> (chains, draws)
    (:func:`ppvae._util.scalars.scalar_series`: integer indices, constants left out, correlations for a Cholesky
    factor), and the number of such scalars in all. ``scalars``: the labels to draw (any number, in that
    order); else the first ``max_panels``."""
    draws = {name: var.values for name, var in posterior.data_vars.items() if "data" not in var.dims}
    series = dict(scalar_series(draws, 2))
    if not series and draws:  # every scalar constant: chains that never moved, which the flat lines show
        series = dict(scalar_series(draws, 2, drop_constant=False))
    if scalars is not None:
        unknown = [s for s in scalars if s not in series]
        if unknown:
            raise PPVAEError(f"scalars: no scalar {', '.join(unknown)}; expected some of {', '.join(series)}")
        return {s: series[s] for s in scalars}, len(series)
    return dict(list(series.items())[:max_panels]), len(series)


def _title(what: str, shown: int, total: int, title: str, chosen: bool = False) -> str:
    if total > shown:
        extra = f" ({shown} chosen of {total} scalars)" if chosen else f" (first {shown} of {total} scalars; " \
                                                                          "choose with scalars=)"
    else:
        extra = ""
    return f"{title}: {what}{extra}" if title else f"{what}{extra}"


def plot_mcmc_trace(posterior, path: str, title: str = "", max_panels: int = 12, scalars=None):
    """Trace plot (ArviZ ``plot_trace``) of the global sites of ``posterior`` (an ArviZ posterior group):
    ``scalars`` (labels) or the first ``max_panels`` scalars, the title saying how many there are."""
    draws, total = scalar_draws(posterior, max_panels, scalars)
    fig, axes = _figure((9.0, 1.6 * len(draws) + 0.8), len(draws), 2, squeeze=False)
    with warnings.catch_warnings():  # ArviZ 0.x calls a matplotlib API deprecated in 3.11: not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        az.plot_trace(az.from_dict(posterior=draws), axes=axes, compact=False, show=False)
    for row in axes:
        row[0].set_ylabel("density", fontsize=8)
        row[1].set_ylabel("value", fontsize=8)
    axes[-1, 0].set_xlabel("value of the scalar (its own units)", fontsize=8)
    axes[-1, 1].set_xlabel("draw (after warm-up), one line per chain", fontsize=8)
    fig.suptitle(_title("trace (density per chain | draws in order)", len(draws), total, title, scalars is not None))
    return _save(fig, path, rect=(0, 0, 1, 0.97))


def plot_mcmc_rank(posterior, path: str, title: str = "", max_panels: int = 12, scalars=None):
    """Rank plot (ArviZ ``plot_rank``, one histogram of ranks per chain) of the global sites of ``posterior``
    (``scalars`` or the first ``max_panels``, as :func:`plot_mcmc_trace`)."""
    draws, total = scalar_draws(posterior, max_panels, scalars)
    ncols = min(3, len(draws))
    nrows = -(-len(draws) // ncols)
    fig, axes = _figure((4.0 * ncols, 2.6 * nrows + 0.6), nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(draws):]:
        ax.set_visible(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        az.plot_rank(az.from_dict(posterior=draws), ax=axes.ravel()[:len(draws)], show=False)
    what = "rank histograms per chain (flat when chains mix)"
    fig.suptitle(_title(what, len(draws), total, title, scalars is not None))
    return _save(fig, path, rect=(0, 0, 1, 0.96))
