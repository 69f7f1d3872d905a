"""Comparing methods on one model and data: ArviZ InferenceData for every result, PSIS-LOO (corrected for a
guide), the guide's k-hat, the :func:`compare` table of EM, SVI guides and NUTS with its verdict against MCMC,
and simulation-based calibration (:func:`sbc`)."""

from ppvae.comparison.calibration import SBCResult, sbc
from ppvae.comparison.compare_methods import Comparison, compare
from ppvae.comparison.guide_diagnostics import GuideDiagnostic, guide_diagnostic
from ppvae.comparison.inference_data import exact_posterior, to_inference_data

__all__ = ["compare", "Comparison", "to_inference_data", "exact_posterior", "guide_diagnostic", "GuideDiagnostic",
           "sbc", "SBCResult"]
