"""Figures written into run directories (matplotlib on its own Agg canvas): losses, mixtures, images,
log-marginal diagnostics, AIS/BDMC, and MCMC trace and rank plots."""

from ppvae.plots.figures import (
    FigureGuard,
    plot_ais_vs_is,
    plot_bdmc,
    plot_em_trace,
    plot_image_grid,
    plot_latent_2d,
    plot_log_marginal,
    plot_loss,
    plot_marginals,
    plot_mixture_2d,
    plot_reconstructions,
    plot_top_words,
)
from ppvae.plots.mcmc import plot_mcmc_rank, plot_mcmc_trace

__all__ = [
    "FigureGuard", "plot_loss", "plot_mixture_2d", "plot_em_trace", "plot_top_words", "plot_image_grid",
    "plot_reconstructions", "plot_latent_2d", "plot_marginals", "plot_log_marginal", "plot_ais_vs_is", "plot_bdmc",
    "plot_mcmc_trace", "plot_mcmc_rank",
]
