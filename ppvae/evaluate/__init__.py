"""Evaluation: log p(x) per point by importance sampling (:func:`log_marginal`) and by AIS, the evidence log p(X)
by IS, AIS and bridge sampling (:func:`log_evidence`), BDMC bounds, and the inference gaps of amortized fits.
Topic-model metrics live in :mod:`ppvae.evaluate.topics`."""

from ppvae.evaluate.bdmc_bounds import BDMCResult, bdmc
from ppvae.evaluate.estimate import ImportanceWarning, LogEvidence
from ppvae.evaluate.evidence import log_evidence
from ppvae.evaluate.gaps import InferenceGaps, inference_gaps
from ppvae.evaluate.marginal import LogMarginal, impute_weighted, log_marginal

__all__ = ["log_marginal", "LogMarginal", "log_evidence", "LogEvidence", "ImportanceWarning", "bdmc", "BDMCResult",
           "inference_gaps", "InferenceGaps", "impute_weighted"]
