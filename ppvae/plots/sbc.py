"""Figures of simulation-based calibration (:mod:`ppvae.comparison.calibration`): rank ECDF differences with the
simultaneous band (Säilynoja, Bürkner & Vehtari 2022, fig. 3) and rank histograms (Talts et al. 2018, fig. 1)."""

from __future__ import annotations

import numpy as np

from ppvae.plots.figures import _figure, _save

__all__ = ["plot_ecdf_differences", "plot_rank_histograms"]


def _grid(ranks: dict):
    methods = list(ranks)
    keys = list(dict.fromkeys(k for m in methods for k in ranks[m]))
    return methods, keys


def plot_ecdf_differences(ranks: dict, num_draws: int, verdicts: dict, path: str, band):
    """One panel per (parameter row, method column): ECDF(z) - z of the fractional ranks with the band
    ``band(num_sims) -> (z, lower counts, upper counts)``; red where the ECDF leaves it."""
    methods, keys = _grid(ranks)
    fig, axes = _figure((2.6 * len(methods) + 0.6, 1.9 * len(keys) + 0.6), len(keys), len(methods), squeeze=False)
    for j, m in enumerate(methods):
        for i, k in enumerate(keys):
            ax = axes[i, j]
            r = ranks[m].get(k)
            if r is None:
                ax.set_axis_off()
                continue
            z, lower, upper = band(len(r))
            counts = (np.asarray(r)[:, None] < np.arange(1, num_draws + 1)).sum(0)
            ax.fill_between(z, lower / len(r) - z, upper / len(r) - z, color="0.85", step="mid", label="band")
            ok = verdicts[m][k] == "calibrated"
            ax.step(z, counts / len(r) - z, where="mid", color="tab:blue" if ok else "tab:red", lw=1.2)
            ax.axhline(0, color="0.5", lw=0.6)
            ax.set_title(f"{m}: {k}\n{verdicts[m][k]}", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == len(keys) - 1:
                ax.set_xlabel("fractional rank z", fontsize=7)
            if j == 0:
                ax.set_ylabel("ECDF(z) - z", fontsize=7)
    fig.suptitle("SBC: rank ECDF minus uniform, with the simultaneous band", fontsize=9)
    return _save(fig, path, rect=(0, 0, 1, 0.97))


def plot_rank_histograms(ranks: dict, num_draws: int, path: str, bins: int = 20):
    """Rank histograms with the 99% interval of a bin's count under uniform ranks (binomial, grey)."""
    from scipy.stats import binom  # scipy comes with scikit-learn and arviz

    methods, keys = _grid(ranks)
    fig, axes = _figure((2.6 * len(methods) + 0.6, 1.7 * len(keys) + 0.6), len(keys), len(methods), squeeze=False)
    edges = np.linspace(0, num_draws + 1, bins + 1)
    for j, m in enumerate(methods):
        for i, k in enumerate(keys):
            ax = axes[i, j]
            r = ranks[m].get(k)
            if r is None:
                ax.set_axis_off()
                continue
            n = len(r)
            lo, hi = binom.ppf(0.005, n, 1 / bins), binom.ppf(0.995, n, 1 / bins)
            ax.axhspan(lo, hi, color="0.85")
            ax.hist(r, bins=edges, color="tab:blue", alpha=0.8)
            ax.set_title(f"{m}: {k}", fontsize=7)
            ax.tick_params(labelsize=6)
    fig.suptitle("SBC: rank histograms (grey: 99% range of a bin under uniform ranks)", fontsize=9)
    return _save(fig, path, rect=(0, 0, 1, 0.97))
