"""Stochastic variational inference: the trainer (:func:`fit`, :class:`Trainer`), its configuration and steps,
guides by name (autoguides, amortized encoders), ELBOs by name, the compiled objective, data-parallel training,
and the :class:`Fit` result."""

from ppvae.infer.svi import discrete  # noqa: F401 -- registers relaxed, relaxed_st, reinforce
from ppvae.infer.svi.fit import Fit
from ppvae.infer.svi.guides import list_guides, make_guide, register_guide
from ppvae.infer.svi.objectives import list_elbos, make_elbo, register_elbo
from ppvae.infer.svi.potential_svi import PotentialSVI, potential_path
from ppvae.infer.svi.train import Trainer, fit

__all__ = ["fit", "Fit", "Trainer", "make_guide", "list_guides", "register_guide", "make_elbo", "list_elbos",
           "register_elbo", "PotentialSVI", "potential_path"]
