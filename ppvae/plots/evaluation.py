"""The evaluation figures: log_marginal.png (``ppvae evaluate``), ais_vs_is.png and bdmc.png (``--method ais``,
``ppvae bdmc``). Every axis says its quantity and unit (nats); a panel is drawn only when it has something to
show, and when k-hat is missing the figure says why."""

from __future__ import annotations

import math
import textwrap

import numpy as np

from ppvae.plots.canvas import figure as _figure
from ppvae.plots.canvas import save as _save

__all__ = ["plot_log_marginal", "plot_ais_vs_is", "plot_bdmc", "min_weights_for_khat"]


def min_weights_for_khat() -> int:
    """The fewest weights per point whose Pareto tail has the 5 samples the k-hat fit needs (PSIS's tail of
    ceil(min(0.2 S, 3 sqrt(S))) weights; :func:`ppvae._estimate.psis_khat`): 21."""
    return next(s for s in range(1, 1000) if math.ceil(min(0.2 * s, 3 * math.sqrt(s))) >= 5)


def plot_log_marginal(values, khat, path: str, title: str = "", khat_note: str | None = None,
                      xlabel: str = "log p(x_i) estimate (nats)"):
    """A histogram of the per-point values and, beside it, one of their Pareto k-hat (0.7 marked) when any is
    finite. Without finite k-hats: ``khat_note`` (why none, e.g. too few AIS chains) in the second panel, or no
    second panel at all (exact values: EM, enumeration, CAVI's ELBO)."""
    values, khat = np.asarray(values, dtype=float), np.asarray(khat, dtype=float)
    finite = khat[np.isfinite(khat)]
    two = bool(finite.size) or khat_note is not None
    fig, axes = _figure((9, 3.3) if two else (6.5, 3.5), 1, 2 if two else 1, squeeze=False)
    a = axes[0, 0]
    a.hist(values[np.isfinite(values)], bins=40, color="tab:blue")
    a.set_xlabel(xlabel)
    a.set_ylabel("data points")
    if two:
        b = axes[0, 1]
        if finite.size:
            b.hist(finite, bins=40, color="tab:orange")
            b.axvline(0.7, color="k", ls="--", lw=1, label="k-hat = 0.7 (above: unreliable)")
            b.set_ylabel("data points")
            b.legend(fontsize=8)
        else:
            b.text(0.5, 0.5, textwrap.fill(khat_note, 42), ha="center", va="center", transform=b.transAxes,
                   fontsize=9)
            b.set_xticks([])
            b.set_yticks([])
        b.set_xlabel("Pareto k-hat of each point's weights")
    title = title or f"importance-sampled log p(x): {len(values)} points"
    fig.suptitle(textwrap.fill(title, 110 if two else 75), fontsize=10)
    return _save(fig, path)


def plot_ais_vs_is(is_values, ais_values, is_khat, path: str, title: str = ""):
    """Per-point AIS estimate against the IS estimate, coloured by IS k-hat (the diagonal marked):
    points above the diagonal are where AIS found mass the importance sampler missed."""
    iv, av, kh = (np.asarray(v, dtype=float) for v in (is_values, ais_values, is_khat))
    fig, (a, b) = _figure((9.5, 3.8), 1, 2)
    colour = np.where(np.isfinite(kh), kh, np.nan)
    some = np.isfinite(colour).any()
    sc = a.scatter(iv, av, c=colour, cmap="viridis", s=12, vmin=min(0.0, np.nanmin(colour)) if some else 0.0,
                   vmax=max(1.0, np.nanmax(colour)) if some else 1.0)
    lo, hi = np.nanmin(np.r_[iv, av]), np.nanmax(np.r_[iv, av])
    a.plot([lo, hi], [lo, hi], "k--", lw=0.8, label="AIS = IS")
    a.set_xlabel("IS log p(x_i) (nats)")
    a.set_ylabel("AIS log p(x_i) (nats)")
    a.legend(fontsize=8)
    fig.colorbar(sc, ax=a, label="IS Pareto k-hat")
    b.scatter(kh, av - iv, c="tab:blue", s=10)
    b.axhline(0, color="k", lw=0.8)
    b.axvline(0.7, color="k", ls="--", lw=0.8, label="k-hat = 0.7")
    b.set_xlabel("IS Pareto k-hat")
    b.set_ylabel("AIS - IS (nats)")
    b.legend(fontsize=8)
    fig.suptitle(title or f"AIS against IS on {len(iv)} points", fontsize=10)
    return _save(fig, path)


def _plain_steps(ax, t) -> None:
    """Log-scaled T axis ticked at the T values themselves, written 25, 50, 100 (not 3 x 10^1)."""
    from matplotlib.ticker import FixedLocator, NullLocator  # heavy: loaded when a figure is drawn

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(t))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{v:g}" for v in t])


def plot_bdmc(num_steps, mean_lower, mean_upper, path: str, title: str = ""):
    """BDMC's mean stochastic lower (forward AIS) and upper (reverse AIS) bounds of log p(x) against the
    number of annealing steps T (log scale), the gap shaded."""
    t, lo, up = (np.asarray(v, dtype=float) for v in (num_steps, mean_lower, mean_upper))
    fig, (a, b) = _figure((9, 3.4), 1, 2)
    a.plot(t, lo, "o-", label="lower (forward AIS)")
    a.plot(t, up, "s-", label="upper (reverse AIS)")
    a.fill_between(t, lo, up, alpha=0.2)
    _plain_steps(a, t)
    a.set_xlabel("annealing steps T")
    a.set_ylabel("mean log p(x) bound (nats per point)")
    a.legend(fontsize=8)
    b.plot(t, up - lo, "o-", color="tab:red")
    b.axhline(1.0, color="k", ls="--", lw=0.8, label="1 nat")
    if np.all(up - lo > 0):
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # heavy: loaded when drawn

        b.set_yscale("log")
        b.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        b.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 0.2, 1, 5 nats, not 2 x 10^-1
        b.yaxis.set_minor_formatter(NullFormatter())
    _plain_steps(b, t)
    b.set_xlabel("annealing steps T")
    b.set_ylabel("mean gap, upper - lower (nats per point)")
    b.legend(fontsize=8)
    fig.suptitle(title or "BDMC bounds", fontsize=10)
    return _save(fig, path)
