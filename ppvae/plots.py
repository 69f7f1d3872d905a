"""Figures written into run directories (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_loss", "plot_mixture_2d", "plot_em_trace", "plot_top_words",
           "plot_image_grid", "plot_reconstructions", "plot_latent_2d", "plot_marginals", "plot_log_marginal",
           "plot_ais_vs_is", "plot_bdmc"]


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(losses, path: str, title: str = "SVI loss (negative ELBO)", test_losses=None) -> None:
    """The loss per step (log scale when it stays positive), with a running mean."""
    losses = np.asarray(losses, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    _save(fig, path)


def _ellipse(ax, mean, cov, color, n_std=(1.0, 2.0)):
    vals, vecs = np.linalg.eigh(cov)
    t = np.linspace(0, 2 * math.pi, 100)
    circle = np.stack([np.cos(t), np.sin(t)])
    for s in n_std:
        pts = mean[:, None] + vecs @ (s * np.sqrt(np.maximum(vals, 0))[:, None] * circle)
        ax.plot(pts[0], pts[1], color=color, lw=1.5 if s == 1 else 0.8)


def plot_mixture_2d(x, resp, weights, locs, covs, path: str, columns=None, title: str = "") -> None:
    """Points coloured by their most probable component (shade = responsibility), with each component's
    1- and 2-standard-deviation ellipses and mixture weights."""
    x, resp = np.asarray(x), np.asarray(resp)
    colors = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    k_hat = resp.argmax(1)
    for k in range(resp.shape[1]):
        sel = k_hat == k
        ax.scatter(x[sel, 0], x[sel, 1], s=12, color=colors(k % 10), alpha=np.clip(resp[sel, k], 0.15, 1.0))
        _ellipse(ax, np.asarray(locs[k]), np.asarray(covs[k]), colors(k % 10))
        ax.plot(*np.asarray(locs[k]), "x", color="black")
        ax.annotate(f"w={float(weights[k]):.2f}", np.asarray(locs[k]), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    if columns:
        ax.set_xlabel(columns[0])
        ax.set_ylabel(columns[1])
    ax.set_title(title)
    _save(fig, path)


def plot_em_trace(histories, path: str) -> None:
    """Log-likelihood per EM iteration for every restart (each curve must be non-decreasing)."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for h in histories:
        ax.plot(np.arange(len(h)), h, lw=1)
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("log-likelihood")
    ax.set_title("EM restarts")
    _save(fig, path)


def plot_top_words(words, weights, npmi, path: str, title: str = "top words per topic") -> None:
    """One horizontal bar panel per topic: its top words, bar length = probability in the topic,
    panel title = the topic's NPMI coherence."""
    k = len(words)
    cols = min(5, k)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 0.22 * len(words[0]) * rows + 0.9 * rows), squeeze=False)
    for t, ax in enumerate(axes.flat):
        if t >= k:
            ax.axis("off")
            continue
        y = np.arange(len(words[t]))[::-1]
        ax.barh(y, weights[t], color=plt.get_cmap("tab20")(t % 20))
        ax.set_yticks(y)
        ax.set_yticklabels(words[t], fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        ax.set_title(f"topic {t}  NPMI {npmi[t]:+.2f}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


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


def plot_image_grid(images, path: str, shape=(28, 28), ncol: int = 10, title: str = "") -> None:
    """Images (N, H*W) with values in [0, 1] tiled ``ncol`` to a row, grey scale."""
    canvas = _tile(images, shape, ncol)
    fig, ax = plt.subplots(figsize=(ncol * 0.6, canvas.shape[0] / canvas.shape[1] * ncol * 0.6 + 0.5))
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(title, fontsize=9)
    _save(fig, path)


def plot_reconstructions(inputs, reconstructions, path: str, shape=(28, 28), ncol: int = 10) -> None:
    """Rows of inputs, each followed by a row of their reconstructions."""
    inputs = np.asarray(inputs, dtype=float).reshape(-1, ncol, shape[0] * shape[1])
    recs = np.asarray(reconstructions, dtype=float).reshape(-1, ncol, shape[0] * shape[1])
    pairs = [np.stack([a, b]) for a, b in zip(inputs, recs, strict=True)]
    rows = np.concatenate(pairs).reshape(-1, shape[0] * shape[1])
    plot_image_grid(rows, path, shape, ncol, title="inputs (odd rows) and reconstructions (even rows)")


def plot_latent_2d(z, labels, path: str, title: str = "latent space") -> None:
    """A 2-D scatter of latent codes (first two principal components when the latent has more than
    two dimensions), coloured by label when labels are given."""
    z = np.asarray(z, dtype=float)
    axes = ("z1", "z2")
    if z.shape[1] > 2:
        centred = z - z.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        z, axes = centred @ vt[:2].T, ("PC 1", "PC 2")
    elif z.shape[1] == 1:
        z, axes = np.concatenate([z, np.zeros_like(z)], 1), ("z1", "")
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=4, alpha=0.6)
    else:
        labels = np.asarray(labels)
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, s=4, cmap="tab10", alpha=0.7)
        fig.colorbar(sc, ax=ax, label="label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title)
    _save(fig, path)


def plot_marginals(draws: dict, points: dict, path: str, title: str = "", max_panels: int = 12) -> None:
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
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.5 * rows), squeeze=False)
    methods = list(dict.fromkeys(list(draws) + list(points)))
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
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
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_log_marginal(values, khat, path: str, title: str = "") -> None:
    """Histograms of the per-point log p(x) estimates and of their Pareto k-hat (0.7 marked)."""
    values, khat = np.asarray(values, dtype=float), np.asarray(khat, dtype=float)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
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
    _save(fig, path)


def plot_ais_vs_is(is_values, ais_values, is_khat, path: str, title: str = "") -> None:
    """Per-point AIS estimate against the IS estimate, coloured by IS k-hat (the diagonal marked):
    points above the diagonal are where AIS found mass the importance sampler missed."""
    iv, av, kh = (np.asarray(v, dtype=float) for v in (is_values, ais_values, is_khat))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.8))
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
    _save(fig, path)


def plot_bdmc(num_steps, mean_lower, mean_upper, path: str, title: str = "") -> None:
    """BDMC's mean stochastic lower (forward AIS) and upper (reverse AIS) bounds of log p(x) against the
    number of annealing steps T (log scale), the gap shaded."""
    t, lo, up = (np.asarray(v, dtype=float) for v in (num_steps, mean_lower, mean_upper))
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
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
    _save(fig, path)
