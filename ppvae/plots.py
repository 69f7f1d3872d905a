"""Figures written into run directories (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_loss", "plot_mixture_2d", "plot_em_trace"]


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
        steps, values = zip(*test_losses)
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
        ax.annotate(f"w={float(weights[k]):.2f}", np.asarray(locs[k]), textcoords="offset points", xytext=(5, 5), fontsize=8)
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
