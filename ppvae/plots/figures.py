"""Figures written into run directories.

Each figure is a :class:`matplotlib.figure.Figure` drawn on its own Agg canvas, so no display is
needed and the caller's global matplotlib backend (``matplotlib.use``, pyplot state) is left alone.
Every ``plot_*`` function writes its PNG and returns the Figure (tests read its titles and labels).
:class:`FigureGuard` draws the figures of a run so that a failing one never costs the fit.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FigureGuard", "plot_loss", "plot_mixture_2d", "plot_em_trace", "plot_top_words",
           "plot_image_grid", "plot_reconstructions", "plot_latent_2d", "plot_marginals", "plot_log_marginal",
           "plot_ais_vs_is", "plot_bdmc"]


def _cmap(name: str):
    import matplotlib  # heavy: loaded when the first figure is drawn, not at import ppvae

    return matplotlib.colormaps[name]


def _max_n_locator(**options):
    from matplotlib.ticker import MaxNLocator  # heavy: loaded when a figure is drawn

    return MaxNLocator(**options)


def _figure(figsize, nrows: int = 1, ncols: int = 1, **kw):
    """A Figure on its own Agg canvas (no pyplot) and its axes (an array when ``squeeze=False``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy: loaded when a figure is drawn
    from matplotlib.figure import Figure  # heavy: loaded when a figure is drawn

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, **kw)


def _save(fig, path: str, dpi: int = 110, rect=None) -> Figure:
    if rect is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=dpi)
    return fig


class FigureGuard:
    """Draws a run's figures so that one failing never loses the run: ``draw(name, fn, ...)`` calls
    ``fn`` and keeps any exception as one line; ``report(out)`` prints them (stderr) after the run is
    written. The run's exit status is unaffected (the figures are extras; the run is complete)."""

    def __init__(self):
        self.failed: list[str] = []

    def draw(self, name: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 -- any figure error must leave the fit intact
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            self.failed.append(f"{name} ({type(exc).__name__}: {first})")
            return None

    def report(self, out: str) -> None:
        if self.failed:
            print(f"warning: could not draw {'; '.join(self.failed)}; everything else is written to {out}",
                  file=sys.stderr)


def plot_loss(losses, path: str, title: str = "SVI loss (negative ELBO)", test_losses=None) -> Figure:
    """The loss per step (log scale when it stays positive), with a running mean."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = _figure((6, 3.5))
    ax.plot(np.arange(1, len(losses) + 1), losses, lw=0.6, alpha=0.5, label="train (per step)")
    if len(losses) >= 20:
        w = max(len(losses) // 50, 5)
        smooth = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(w, len(losses) + 1), smooth, lw=1.5, label=f"train (mean of {w})")
    if test_losses is not None:
        steps, values = zip(*test_losses, strict=True)
        ax.plot(steps, values, "o-", lw=1.2, ms=3, label="test")
    if len(losses) and losses.min() > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _ellipse(ax, mean, cov, color, n_std=(1.0, 2.0)):
    if not (np.isfinite(mean).all() and np.isfinite(cov).all()):
        return  # a degenerate component: its centre and weight are still shown
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * math.pi, 100)
    circle = np.stack([np.cos(t), np.sin(t)])
    for s in n_std:
        pts = mean[:, None] + vecs @ (s * np.sqrt(np.maximum(vals, 0))[:, None] * circle)
        ax.plot(pts[0], pts[1], color=color, lw=1.5 if s == 1 else 0.8)


def plot_mixture_2d(x, resp, weights, locs, covs, path: str, columns=None, title: str = "") -> Figure:
    """Points coloured by their most probable component (shade = responsibility), with each component's
    1- and 2-standard-deviation ellipses and mixture weights. A component that is no point's most
    probable one (legitimate, e.g. K = 3 on two clusters) is drawn with its ellipse alone, "no points"."""
    x, resp = np.asarray(x), np.asarray(resp)
    colors = _cmap("tab10")
    fig, ax = _figure((5.5, 4.5))
    k_hat = resp.argmax(1)
    for k in range(resp.shape[1]):
        sel = k_hat == k
        if sel.any():
            ax.scatter(x[sel, 0], x[sel, 1], s=12, color=colors(k % 10), alpha=np.clip(resp[sel, k], 0.15, 1.0))
        _ellipse(ax, np.asarray(locs[k]), np.asarray(covs[k]), colors(k % 10))
        ax.plot(*np.asarray(locs[k]), "x", color="black")
        note = f"w={float(weights[k]):.2f}" + ("" if sel.any() else ", no points")
        ax.annotate(note, np.asarray(locs[k]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if columns:
        ax.set_xlabel(columns[0])
        ax.set_ylabel(columns[1])
    ax.set_title(title)
    return _save(fig, path)


def plot_em_trace(histories, path: str, best: int | None = None, title: str = "EM restarts",
                  xlabel: str = "EM iteration", ylabel: str = "log-likelihood", curve: str = "restart") -> Figure:
    """One curve per run (``histories``: per restart, the objective before each iteration; each must be
    non-decreasing), labelled in a legend; the ``best`` run (default: highest final value) drawn thick
    with its final value marked. CAVI passes its ELBO trace with its own title and axis names."""
    fig, ax = _figure((6, 3.5))
    finals = [h[-1] if len(h) else -math.inf for h in histories]
    best = int(np.argmax(finals)) if best is None else best
    for i, h in enumerate(histories):
        mark = i == best and len(histories) > 1
        label = f"{curve} {i}" + (" (best)" if mark else "")
        ax.plot(np.arange(len(h)), h, lw=2.2 if mark else 0.9, alpha=1.0 if mark else 0.6, label=label,
                zorder=3 if mark else 2)
    if 0 <= best < len(histories) and len(histories[best]):
        h = histories[best]
        ax.plot([len(h) - 1], [h[-1]], "k*", ms=10, zorder=4, label=f"final {h[-1]:.2f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2 if len(histories) > 6 else 1, loc="lower right")
    return _save(fig, path)


def plot_top_words(words, weights, npmi, path: str, title: str = "top words per topic") -> Figure:
    """One horizontal bar panel per topic: its top words, bar length = probability in the topic
    (three x ticks per panel, so neighbouring panels' labels cannot collide), panel title = the
    topic's NPMI coherence."""
    k = len(words)
    cols = min(5, k)
    rows = math.ceil(k / cols)
    fig, axes = _figure((2.8 * cols, 0.22 * len(words[0]) * rows + 1.0 * rows + 0.4), rows, cols, squeeze=False)
    for t, ax in enumerate(axes.flat):
        if t >= k:
            ax.axis("off")
            continue
        y = np.arange(len(words[t]))[::-1]
        ax.barh(y, weights[t], color=_cmap("tab20")(t % 20))
        ax.set_yticks(y)
        ax.set_yticklabels(words[t], fontsize=7)
        ax.xaxis.set_major_locator(_max_n_locator(nbins=3, prune="upper"))
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(f"topic {t}  NPMI {npmi[t]:+.2f}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.supxlabel("probability of the word in the topic", fontsize=9)
    return _save(fig, path)


# -- image models (VAE, M2) -----------------------------------------------------------------------------
def _tile(images, shape, ncol):
    images = np.asarray(images, dtype=float).reshape(-1, *shape)
    n = len(images)
    nrow = max(1, math.ceil(n / ncol))
    h, w = shape
    canvas = np.zeros((nrow * (h + 1) - 1, ncol * (w + 1) - 1))  # white gaps under gray_r
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
    return canvas


def plot_image_grid(images, path: str, shape=(28, 28), ncol: int = 10, title: str = "",
                    row_labels=None, row_name: str = "") -> Figure:
    """Images (N, H*W) with values in [0, 1] tiled ``ncol`` to a row, grey scale; ``row_labels`` (one
    per row) are written left of the rows under the axis name ``row_name`` (e.g. M2's classes)."""
    canvas = _tile(images, shape, ncol)
    extra = 0.5 if row_labels is not None else 0.0
    fig, ax = _figure((ncol * 0.6 + extra, canvas.shape[0] / canvas.shape[1] * ncol * 0.6 + 0.5))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    if row_labels is None:
        ax.axis("off")
    else:
        ax.set_xticks([])
        ax.set_yticks([r * (shape[0] + 1) + shape[0] / 2 for r in range(len(row_labels))])
        ax.set_yticklabels([str(v) for v in row_labels], fontsize=8)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(row_name, fontsize=9)
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def plot_reconstructions(inputs, reconstructions, path: str, shape=(28, 28), ncol: int = 10) -> Figure:
    """Rows of inputs, each followed by a row of their reconstructions."""
    inputs = np.asarray(inputs, dtype=float).reshape(-1, ncol, shape[0] * shape[1])
    recs = np.asarray(reconstructions, dtype=float).reshape(-1, ncol, shape[0] * shape[1])
    pairs = [np.stack([a, b]) for a, b in zip(inputs, recs, strict=True)]
    rows = np.concatenate(pairs).reshape(-1, shape[0] * shape[1])
    return plot_image_grid(rows, path, shape, ncol, title="inputs (odd rows) and reconstructions (even rows)")


def plot_latent_2d(z, labels, path: str, title: str = "latent space", label_name: str = "label") -> Figure:
    """A 2-D scatter of latent codes (first two principal components when the latent has more than
    two dimensions), coloured by ``labels`` (integer classes; a legend names them ``label_name``) when
    given; points labelled -1 (unlabeled) are drawn grey."""
    z = np.asarray(z, dtype=float)
    axes = ("z1", "z2")
    if z.shape[1] > 2:
        centred = z - z.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        z, axes = centred @ vt[:2].T, ("PC 1", "PC 2")
    elif z.shape[1] == 1:
        z, axes = np.concatenate([z, np.zeros_like(z)], 1), ("z1", "")
    fig, ax = _figure((6.2, 4.5))
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.6)
    else:
        labels = np.asarray(labels).astype(int)
        colors = _cmap("tab10")
        for c in np.unique(labels):
            sel = labels == c
            color = "lightgrey" if c < 0 else colors(int(c) % 10)
            ax.scatter(z[sel, 0], z[sel, 1], s=4, color=color, alpha=0.7,
                       label=f"{'unlabeled' if c < 0 else int(c)} ({int(sel.sum())})")
        ax.legend(title=label_name, fontsize=7, title_fontsize=8, markerscale=3, loc="center left",
                  bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    return _save(fig, path)


def plot_marginals(draws: dict, points: dict, path: str, title: str = "", max_panels: int = 12) -> Figure:
    """Overlay each method's marginal posterior (histogram density) of every scalar element of the
    global parameters; point estimates (``points``: method -> {"site[i,j]": value}) as vertical lines.
    ``draws``: method -> {site: (S, ...) array}. Sites with more than two axes per draw (correlation
    factors) are left out; at most ``max_panels`` panels."""
    series: dict = {}
    for method, sites in draws.items():
        for name, value in sites.items():
            v = np.asarray(value, dtype=float)
            if v.ndim > 3:
                continue
            flat = v.reshape(v.shape[0], -1)
            for j in range(flat.shape[1]):
                idx = np.unravel_index(j, v.shape[1:]) if v.ndim > 1 else ()
                key = name + (f"[{','.join(str(int(i)) for i in idx)}]" if idx else "")
                series.setdefault(key, {})[method] = flat[:, j]
    for values in points.values():
        for key in values:
            if key in series or (len(series) < max_panels and "corr" not in key):
                series.setdefault(key, {})
    keys = list(series)[:max_panels]
    if not keys:
        keys = ["(no parameters)"]
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = _figure((3.2 * cols, 2.5 * rows), rows, cols, squeeze=False)
    methods = list(dict.fromkeys(list(draws) + list(points)))
    colors = {m: _cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for ax, key in zip(axes.flat, keys, strict=False):
        for method, values in series.get(key, {}).items():
            ax.hist(values, bins=40, density=True, histtype="step", color=colors[method], label=method)
        for method, values in points.items():
            if key in values:
                ax.axvline(values[key], color=colors[method], ls="--", lw=1, label=method)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=100, rect=(0, 0.06, 1, 0.96))


def plot_log_marginal(values, khat, path: str, title: str = "") -> Figure:
    """Histograms of the per-point log p(x) estimates and of their Pareto k-hat (0.7 marked)."""
    values, khat = np.asarray(values, dtype=float), np.asarray(khat, dtype=float)
    fig, (a, b) = _figure((9, 3.2), 1, 2)
    a.hist(values[np.isfinite(values)], bins=40, color="tab:blue")
    a.set_xlabel("log p(x_i) estimate")
    a.set_ylabel("data points")
    finite = khat[np.isfinite(khat)]
    if finite.size:
        b.hist(finite, bins=40, color="tab:orange")
    else:
        b.text(0.5, 0.5, "weights exact (k-hat undefined)", ha="center", va="center", transform=b.transAxes)
    b.axvline(0.7, color="k", ls="--", lw=1, label="k-hat = 0.7")
    b.set_xlabel("Pareto k-hat")
    b.legend(fontsize=8)
    fig.suptitle(title or f"importance-sampled log p(x): {len(values)} points", fontsize=10)
    return _save(fig, path)


def plot_ais_vs_is(is_values, ais_values, is_khat, path: str, title: str = "") -> Figure:
    """Per-point AIS estimate against the IS estimate, coloured by IS k-hat (the diagonal marked):
    points above the diagonal are where AIS found mass the importance sampler missed."""
    iv, av, kh = (np.asarray(v, dtype=float) for v in (is_values, ais_values, is_khat))
    fig, (a, b) = _figure((9.5, 3.8), 1, 2)
    colour = np.where(np.isfinite(kh), kh, np.nan)
    sc = a.scatter(iv, av, c=colour, cmap="viridis", s=12, vmin=min(0.0, np.nanmin(colour)) if np.isfinite(
        colour).any() else 0.0, vmax=max(1.0, np.nanmax(colour)) if np.isfinite(colour).any() else 1.0)
    lo, hi = np.nanmin(np.r_[iv, av]), np.nanmax(np.r_[iv, av])
    a.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    a.set_xlabel("IS log p(x_i)")
    a.set_ylabel("AIS log p(x_i)")
    fig.colorbar(sc, ax=a, label="IS Pareto k-hat")
    b.scatter(kh, av - iv, c="tab:blue", s=10)
    b.axhline(0, color="k", lw=0.8)
    b.axvline(0.7, color="k", ls="--", lw=0.8, label="k-hat = 0.7")
    b.set_xlabel("IS Pareto k-hat")
    b.set_ylabel("AIS - IS (nats)")
    b.legend(fontsize=8)
    fig.suptitle(title or f"AIS against IS on {len(iv)} points", fontsize=10)
    return _save(fig, path)


def plot_bdmc(num_steps, mean_lower, mean_upper, path: str, title: str = "") -> Figure:
    """BDMC's mean stochastic lower (forward AIS) and upper (reverse AIS) bounds of log p(x) against the
    number of annealing steps T (log scale), the gap shaded."""
    t, lo, up = (np.asarray(v, dtype=float) for v in (num_steps, mean_lower, mean_upper))
    fig, (a, b) = _figure((9, 3.4), 1, 2)
    a.plot(t, lo, "o-", label="lower (forward AIS)")
    a.plot(t, up, "s-", label="upper (reverse AIS)")
    a.fill_between(t, lo, up, alpha=0.2)
    a.set_xscale("log")
    a.set_xlabel("annealing steps T")
    a.set_ylabel("mean log p(x) bound")
    a.legend(fontsize=8)
    b.plot(t, up - lo, "o-", color="tab:red")
    b.axhline(1.0, color="k", ls="--", lw=0.8, label="1 nat")
    b.set_xscale("log")
    if np.all(up - lo > 0):
        b.set_yscale("log")
    b.set_xlabel("annealing steps T")
    b.set_ylabel("mean gap (nats)")
    b.legend(fontsize=8)
    fig.suptitle(title or "BDMC bounds", fontsize=10)
    return _save(fig, path)
