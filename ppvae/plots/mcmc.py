"""MCMC figures: trace and rank plots of the posterior draws, one row or panel per scalar, labelled by site.

``trace.png`` (ArviZ ``plot_trace``): each scalar's marginal density per chain (left) and its draws
in order (right). ``rank.png`` (ArviZ ``plot_rank``; Vehtari et al. 2021, "Rank-normalization, folding,
and localization: an improved R-hat", sec. 4.1): histograms of each chain's ranks among all draws;
chains that mix sample the same distribution and their histograms are flat. Per-data-point sites
(dimension ``data``) are left out, and at most ``max_panels`` scalars are drawn (the title says how
many were left out). The figures are drawn on Figures of their own (ppvae/plots.py), never pyplot's.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np

from ppvae.plots.figures import _figure, _save

__all__ = ["plot_mcmc_trace", "plot_mcmc_rank", "scalar_draws"]


def scalar_draws(posterior, max_panels: int = 12) -> tuple[dict[str, np.ndarray], int]:
    """The global sites of an ArviZ posterior group as scalars ``"site[i,j]"`` -> (chains, draws), at most
    ``max_panels`` of them, and the number of scalars in all."""
    out, total = {}, 0
    for name, var in posterior.data_vars.items():
        if "data" in var.dims:
            continue
        values = np.asarray(var.values, dtype=np.float64)
        shape = values.shape[2:]
        flat = values.reshape(values.shape[:2] + (-1,))
        coords = [np.asarray(var[d].values) if d in var.coords else np.arange(n)
                  for d, n in zip(var.dims[2:], shape, strict=True)]
        for k in range(flat.shape[-1]):
            total += 1
            if len(out) < max_panels:  # labelled by the coordinates ArviZ holds (e.g. w[x0] for a CSV column)
                index = np.unravel_index(k, shape) if shape else ()
                where = ",".join(str(c[i]) for c, i in zip(coords, index, strict=True))
                label = f"{name}[{where}]" if shape else str(name)
                out[label] = flat[..., k]
    return out, total


def _title(what: str, shown: int, total: int, title: str) -> str:
    extra = f" (first {shown} of {total} scalars)" if total > shown else ""
    return f"{title}: {what}{extra}" if title else f"{what}{extra}"


def plot_mcmc_trace(posterior, path: str, title: str = "", max_panels: int = 12):
    """Trace plot (ArviZ ``plot_trace``) of the global sites of ``posterior`` (an ArviZ posterior group)."""
    draws, total = scalar_draws(posterior, max_panels)
    fig, axes = _figure((9.0, 1.6 * len(draws) + 0.8), len(draws), 2, squeeze=False)
    with warnings.catch_warnings():  # ArviZ 0.x calls a matplotlib API deprecated in 3.11: not the user's concern
        warnings.simplefilter("ignore", DeprecationWarning)
        az.plot_trace(az.from_dict(posterior=draws), axes=axes, compact=False, show=False)
    fig.suptitle(_title("trace (density per chain | draws in order)", len(draws), total, title))
    return _save(fig, path, rect=(0, 0, 1, 0.97))


def plot_mcmc_rank(posterior, path: str, title: str = "", max_panels: int = 12):
    """Rank plot (ArviZ ``plot_rank``, one histogram of ranks per chain) of the global sites of ``posterior``."""
    draws, total = scalar_draws(posterior, max_panels)
    ncols = min(3, len(draws))
    nrows = -(-len(draws) // ncols)
    fig, axes = _figure((4.0 * ncols, 2.6 * nrows + 0.6), nrows, ncols, squeeze=False)
    for ax in axes.ravel()[len(draws):]:
        ax.set_visible(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        az.plot_rank(az.from_dict(posterior=draws), ax=axes.ravel()[:len(draws)], show=False)
    fig.suptitle(_title("rank histograms per chain (flat when chains mix)", len(draws), total, title))
    return _save(fig, path, rect=(0, 0, 1, 0.96))
