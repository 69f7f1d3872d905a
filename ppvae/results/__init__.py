"""The one interface every method returns (:class:`Result`: point estimates, log-likelihoods, predictions,
samples of new data, summaries), the :class:`Summary` table, and the registry of result kinds behind
:func:`load` (one loader for every run directory; a model family registers its own kind with
:func:`register_kind` and :func:`register_evaluator`)."""

from ppvae.results.base import Result
from ppvae.results.kinds import Pointwise, list_kinds, load, register_evaluator, register_kind
from ppvae.results.summary import Summary

__all__ = ["Result", "Summary", "load", "register_kind", "register_evaluator", "list_kinds", "Pointwise"]
