"""Inference: SVI (:mod:`ppvae.infer.svi`: trainer, guides, ELBOs), MCMC (:mod:`ppvae.infer.mcmc`: NUTS/HMC on
the model's potential, per-point local posteriors), classical EM (:mod:`ppvae.infer.em`), and the importance
weights and proposals that the IWAE objective and the evaluation layer share."""

from ppvae.infer import discrete_elbos  # noqa: F401,E402 -- registers relaxed, relaxed_st, reinforce (after svi's registry)
from ppvae.infer.conjugate import ConjugateFit, fit_conjugate
from ppvae.infer.em import EMFit, fit_em
from ppvae.infer.mcmc import MCMCDivergenceError, MCMCResult, fitted_proposal, local_posterior, run_mcmc
from ppvae.infer.natural_svi import fit_svi_natural
from ppvae.infer.svi import (
    Fit,
    Trainer,
    fit,
    list_elbos,
    list_guides,
    make_elbo,
    make_guide,
    register_elbo,
    register_guide,
)

__all__ = ["fit", "Fit", "Trainer", "make_guide", "list_guides", "register_guide", "make_elbo", "list_elbos",
           "register_elbo", "fit_em", "EMFit", "run_mcmc", "MCMCResult", "MCMCDivergenceError", "local_posterior",
           "fitted_proposal", "fit_conjugate", "fit_svi_natural", "ConjugateFit"]
