"""mixture.png: a 2-D mixture's points coloured by component, with each component's 1- and 2-sd ellipses.

The axes span the data and the ellipses of the components that hold points: a component that holds none
(K = 3 on two clusters; EM drives its weight to ~0 and may leave its mean at the origin) is named in the
legend and never stretches the axes. Every label is in the legend, so no text sits over an ellipse.
"""

from __future__ import annotations

import math

import numpy as np

from ppvae.plots.canvas import cmap as _cmap
from ppvae.plots.canvas import figure as _figure
from ppvae.plots.canvas import save as _save

__all__ = ["axis_label", "plot_mixture_2d"]

N_STD = (1.0, 2.0)
_WIDTH = {1.0: 1.6, 2.0: 0.8}  # line width of each ellipse


def axis_label(meta: dict | None, j: int, columns=None) -> str:
    """``name (unit)`` of data column ``j``: the column's name (``x[j]`` without one) and its unit from
    ``meta["units"]`` ("sd" after standardizing, "data units" when unknown)."""
    meta = meta or {}
    columns = columns if columns is not None else meta.get("columns")
    name = str(columns[j]) if columns and j < len(columns) else f"x[{j}]"
    units = meta.get("units")
    if meta.get("standardized"):
        unit = "standardized, sd" + (f" of {units[j]}" if units and j < len(units) else "")
    elif units and j < len(units):
        unit = str(units[j])
    else:
        unit = "data units"
    return f"{name} ({unit})"


def _ellipse_points(mean, cov, n_std: float):
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * math.pi, 100)
    circle = np.stack([np.cos(t), np.sin(t)])
    return mean[:, None] + vecs @ (n_std * np.sqrt(np.maximum(vals, 0))[:, None] * circle)


def _limits(x, shown_ellipses) -> tuple[tuple[float, float], tuple[float, float]]:
    pts = np.concatenate([x] + [e.T for e in shown_ellipses]) if shown_ellipses else x
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def plot_mixture_2d(x, resp, weights, locs, covs, path: str, columns=None, title: str = "", meta=None):
    """Points coloured by their most probable component (shade = responsibility), each component's mean (x)
    and 1- and 2-sd ellipses (thick, thin); the legend gives each component's weight and point count."""
    from matplotlib.lines import Line2D  # heavy: loaded when a figure is drawn

    x, resp = np.asarray(x, dtype=float), np.asarray(resp, dtype=float)
    locs, covs, weights = np.asarray(locs, dtype=float), np.asarray(covs, dtype=float), np.asarray(weights, float)
    colors = _cmap("tab10")
    fig, ax = _figure((7.2, 4.6))
    k_hat = resp.argmax(1)
    handles, shown = [], []
    for k in range(resp.shape[1]):
        sel = k_hat == k
        color = colors(k % 10)
        finite = np.isfinite(locs[k]).all() and np.isfinite(covs[k]).all()
        if sel.any():
            ax.scatter(x[sel, 0], x[sel, 1], s=12, color=color, alpha=np.clip(resp[sel, k], 0.15, 1.0))
        note = f"component {k}: w = {weights[k]:.2f}, {int(sel.sum())} points"
        if sel.any() and finite:
            for s in N_STD:
                e = _ellipse_points(locs[k], covs[k], s)
                shown.append(e)
                ax.plot(e[0], e[1], color=color, lw=_WIDTH[s])
            ax.plot(*locs[k], "x", color="black", ms=7)
        elif not sel.any():
            note = f"component {k}: w = {weights[k]:.2f}, holds no points (not drawn)"
        handles.append(Line2D([], [], marker="o", ls="", color=color, label=note))
    xlim, ylim = _limits(x, shown)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    handles += [Line2D([], [], color="grey", lw=_WIDTH[1.0], label="1 sd ellipse (39% of a component's mass)"),
                Line2D([], [], color="grey", lw=_WIDTH[2.0], label="2 sd ellipse (86%)"),
                Line2D([], [], marker="x", ls="", color="black", label="component mean")]
    ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel(axis_label(meta, 0, columns))
    ax.set_ylabel(axis_label(meta, 1, columns))
    ax.set_title(title or "mixture components", fontsize=10)
    return _save(fig, path)
