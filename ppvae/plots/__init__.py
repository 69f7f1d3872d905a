"""Figures written into run directories (matplotlib on its own Agg canvas): losses, mixtures, images,
log-marginal diagnostics, AIS/BDMC; MCMC trace and rank plots in :mod:`ppvae.plots.mcmc` (it loads ArviZ, so
it is imported only where MCMC runs are written)."""

from ppvae.plots.evaluation import plot_ais_vs_is, plot_bdmc, plot_log_marginal
from ppvae.plots.figures import (
    FigureGuard,
    plot_em_trace,
    plot_image_grid,
    plot_imputations,
    plot_latent_2d,
    plot_loss,
    plot_marginals,
    plot_reconstructions,
    plot_top_words,
)
from ppvae.plots.mixture import plot_mixture_2d

__all__ = [
    "FigureGuard", "plot_loss", "plot_mixture_2d", "plot_em_trace", "plot_top_words", "plot_image_grid",
    "plot_reconstructions", "plot_latent_2d", "plot_marginals", "plot_log_marginal", "plot_ais_vs_is", "plot_bdmc",
    "plot_imputations",
]
