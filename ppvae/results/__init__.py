"""The one interface every method returns (:class:`Result`: point estimates, log-likelihoods, predictions,
samples of new data, summaries) and the :class:`Summary` table."""

from ppvae.results.base import Result
from ppvae.results.summary import Summary

__all__ = ["Result", "Summary"]
