"""Models: the :class:`Model` base class and its registry, declared capabilities, the model's structure read from
one trace (global, local, discrete and observed sites), exact enumeration of discrete locals, label alignment for
mixtures, importing a user's model from a file, and small neural-network builders (:mod:`ppvae.model.nn`)."""

from ppvae.model import nn
from ppvae.model.base import Model, build_model, import_model, list_models, register_model
from ppvae.model.bayesian_nn import BayesianWeights
from ppvae.model.capabilities import (
    ClosedFormEM,
    ClosedFormPotential,
    ConditionsOnSubset,
    ConjugateExponential,
    CoordinateAscentVI,
    ExactPosterior,
    Mixture,
    Reports,
    check_mask_support,
    observed_part,
    require,
)

__all__ = ["Model", "build_model", "list_models", "register_model", "import_model", "ClosedFormEM",
           "ClosedFormPotential", "ExactPosterior", "Mixture", "CoordinateAscentVI", "ConjugateExponential",
           "Reports", "require", "nn", "ConditionsOnSubset", "observed_part", "check_mask_support", "BayesianWeights"]
