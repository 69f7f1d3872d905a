"""Comparing methods on one model and data: ArviZ InferenceData for every result, PSIS-LOO, and the
:func:`compare` table of EM, SVI guides and NUTS."""

from ppvae.comparison.compare_methods import Comparison, compare
from ppvae.comparison.inference_data import exact_posterior, to_inference_data

__all__ = ["compare", "Comparison", "to_inference_data", "exact_posterior"]
