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

from ppvae._util.scalars import scalar_series
from ppvae._util.validation import PPVAEError
from ppvae.plots.canvas import cmap as _cmap
from ppvae.plots.canvas import figure as _figure
from ppvae.plots.canvas import max_n_locator as _max_n_locator
from ppvae.plots.canvas import save as _save

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FigureGuard", "plot_loss", "plot_em_trace", "plot_top_words", "plot_image_grid", "plot_reconstructions",
           "plot_latent_2d", "plot_marginals"]  # plot_mixture_2d: plots/mixture.py; log_marginal, bdmc: evaluation.py


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
            print(f"ppvae: warning: could not draw {'; '.join(self.failed)}; everything else is written to {out}",
                  file=sys.stderr)


def plot_loss(losses, path: str, title: str = "SVI loss: negative ELBO of the whole data set", test_losses=None,
              ylabel: str = "negative ELBO (nats, data-set total)") -> Figure:
    """The loss per step (log scale when it stays positive), with a running mean; ``ylabel`` names its unit
    (``ppvae fit`` passes the data-set total, the image models' report the per-point value)."""
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
        from matplotlib.ticker import FuncFormatter  # heavy: loaded when a figure is drawn

        ax.set_yscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 1200, not 1.2 x 10^3
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("SVI step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_em_trace(histories, path: str, best: int | None = None, title: str = "EM restarts",
                  xlabel: str = "EM iteration", ylabel: str = "log-likelihood (nats, data-set total)",
                  curve: str = "restart") -> Figure:
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


def plot_top_words(words, weights, npmi, path: str, title: str = "top words per topic",
                   vocab_size: int | None = None) -> Figure:
    """One horizontal bar panel per topic: its top words, bar length = the word's probability in the topic,
    as a multiple of the uniform 1/V when ``vocab_size`` V is given (a ProdLDA topic's top words have
    probabilities near 1/V, all bars ~0.0004 on an absolute axis; "3x" reads at once), the uniform marked;
    three x ticks per panel so neighbouring panels' labels cannot collide; panel title = the topic's NPMI."""
    k = len(words)
    cols = min(5, k)
    rows = math.ceil(k / cols)
    weights = np.asarray(weights, dtype=float) * (vocab_size or 1)
    fig, axes = _figure((3.0 * cols, 0.24 * len(words[0]) * rows + 1.0 * rows + 0.5), rows, cols, squeeze=False)
    for t, ax in enumerate(axes.flat):
        if t >= k:
            ax.axis("off")
            continue
        y = np.arange(len(words[t]))[::-1]
        ax.barh(y, weights[t], color=_cmap("tab20")(t % 20))
        if vocab_size:
            ax.axvline(1.0, color="k", lw=0.8, ls=":")
        ax.set_yticks(y)
        ax.set_yticklabels(words[t], fontsize=8)
        ax.xaxis.set_major_locator(_max_n_locator(nbins=3, prune="upper"))
        ax.tick_params(axis="x", labelsize=7.5)
        ax.set_title(f"topic {t}  NPMI {npmi[t]:+.2f}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.supxlabel(f"probability of the word in the topic, in multiples of uniform 1/V (V = {vocab_size}; "
                  "dotted: uniform)" if vocab_size else "probability of the word in the topic", fontsize=9)
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


def plot_imputations(truth, mask, mean, draw, path: str, shape=(28, 28)) -> Figure:
    """Image completion, one column per image: the input with its missing pixels grey, the posterior predictive
    mean E[x_mis | x_obs] (observed pixels kept), one posterior predictive draw, and the true image."""
    truth, mean, draw = (np.asarray(a, dtype=float).reshape(len(a), -1) for a in (truth, mean, draw))
    mask = np.asarray(mask, dtype=bool).reshape(len(truth), -1)
    shown = np.where(mask, truth, 0.3)
    rows = np.concatenate([shown, mean, draw, truth])
    return plot_image_grid(rows, path, shape, len(truth), title="completing images from the posterior predictive",
                           row_labels=["input", "mean", "draw", "truth"], row_name="")


def plot_latent_2d(z, labels, path: str, title: str = "latent space", label_name: str = "label") -> Figure:
    """A 2-D scatter of latent codes (first two principal components when the latent has more than
    two dimensions), coloured by ``labels`` (integer classes; a legend names them ``label_name``) when
    given; points labelled -1 (unlabeled) are drawn grey."""
    z = np.asarray(z, dtype=float)
    unit = "(latent units: prior sd 1)"
    axes = (f"z1 {unit}", f"z2 {unit}")
    if z.shape[1] > 2:
        centred = z - z.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        z, axes = centred @ vt[:2].T, (f"principal component 1 of z {unit}", f"principal component 2 of z {unit}")
    elif z.shape[1] == 1:
        z, axes = np.concatenate([z, np.zeros_like(z)], 1), (f"z1 {unit}", "")
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


def _marginal_series(draws: dict, points: dict) -> dict:
    """label -> {method: draws} for every informative scalar (:func:`ppvae._util.scalars.scalar_series`), then the
    scalars that only point estimates have."""
    series: dict = {}
    for method, sites in draws.items():
        for key, x in scalar_series(sites, 1):
            series.setdefault(key, {})[method] = x
    for values in points.values():
        for key in values:
            series.setdefault(key, {})
    return series


def plot_marginals(draws: dict, points: dict, path: str, title: str = "", max_panels: int = 12,
                   scalars=None) -> Figure:
    """Overlay each method's marginal posterior (histogram density) of every scalar of the global
    parameters; point estimates (``points``: method -> {"site[i,j]": value}) as vertical lines.
    ``draws``: method -> {site: (S, ...) array}. Labels, constants and correlations as in every table
    (:mod:`ppvae._util.scalars`); ``scalars`` (labels) or the first ``max_panels``, the title saying "first N of M"."""
    series = _marginal_series(draws, points)
    if scalars is not None:
        unknown = [k for k in scalars if k not in series]
        if unknown:
            raise PPVAEError(f"scalars: no scalar {', '.join(unknown)}; expected some of {', '.join(series)}")
        keys = list(scalars)
    else:
        keys = list(series)[:max_panels]
    if len(series) > len(keys):
        how = "chosen" if scalars is not None else "first"
        title = f"{title} ({how} {len(keys)} of {len(series)} scalars" + (
            ")" if scalars is not None else "; choose with scalars=)")
    keys = keys or ["(no parameters)"]
    cols = min(4, len(keys))
    rows = math.ceil(len(keys) / cols)
    fig, axes = _figure((3.4 * cols, 2.7 * rows + 0.6), rows, cols, squeeze=False)
    methods = list(dict.fromkeys(list(draws) + list(points)))
    colors = {m: _cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for i, (ax, key) in enumerate(zip(axes.flat, keys, strict=False)):
        for method, values in series.get(key, {}).items():
            ax.hist(values, bins=40, density=True, histtype="step", color=colors[method], label=method)
        for method, values in points.items():
            if key in values:
                ax.axvline(values[key], color=colors[method], ls="--", lw=1, label=method)
        ax.set_title(key, fontsize=10)
        ax.tick_params(labelsize=8)
        if i % cols == 0:
            ax.set_ylabel("posterior density", fontsize=9)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=9)
    fig.supxlabel("parameter value (the parameter's own units); dashed: point estimates", fontsize=9, y=0.06)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi=100, rect=(0, 0.08, 1, 0.96))
