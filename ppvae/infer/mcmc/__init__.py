"""MCMC: NUTS/HMC on the model's compiled potential with discrete latents summed out (:func:`run_mcmc`,
:class:`MCMCResult`), chains on several cores, and the posterior of one point's local latents
(:func:`local_posterior`)."""

from ppvae.infer.mcmc.local import fitted_proposal, local_posterior
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.mcmc.sampler import MCMCDivergenceError, MCMCResult, run_mcmc

__all__ = ["run_mcmc", "MCMCResult", "MCMCDivergenceError", "local_posterior", "fitted_proposal", "Potential"]
