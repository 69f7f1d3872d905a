"""The registry of result kinds, and :func:`load`: one loader for every run directory.

A run directory records its kind in ``config.json`` (:mod:`ppvae.runs.directory`). Each kind is registered
once, by the module that defines its result class (``svi``: :class:`ppvae.Fit`, ``em``: :class:`ppvae.EMFit`,
``mcmc``: :class:`ppvae.MCMCResult`; ``cavi``: the LDA plug-in in ``models/lda_cavi.py``), with

* ``loader(run_dir) -> Result``: reads the directory (tensors only, version checked, no code run);
* ``evaluator(run_dir, dataset, own_data) -> Pointwise``: the per-point numbers ``ppvae evaluate`` reports
  for kinds that need no sampler (the exact log-likelihood for EM, lppd and PSIS-LOO for MCMC, the
  per-document ELBO bound for CAVI), registered by the layer that computes them. A kind without one (SVI)
  is evaluated by importance sampling or AIS (:func:`ppvae.log_marginal`).

Nothing else in ppvae branches on a kind's name: a new kind (from a model family, or a user's package) is one
:func:`register_kind` call, and ``ppvae.load``, ``ppvae predict``/``summary``/``evaluate`` serve it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ppvae._util.validation import PPVAEError
from ppvae.model.base import get_model_class
from ppvae.runs import directory as runs

__all__ = ["ResultKind", "Pointwise", "register_kind", "register_evaluator", "result_kind", "list_kinds", "kind_of",
           "load"]


@dataclass
class ResultKind:
    """How one kind of run directory loads and is evaluated (module docstring)."""

    name: str
    loader: Callable[[str], Any]
    description: str
    evaluator: Callable[[str, Any, bool], "Pointwise"] | None = None


@dataclass
class Pointwise:
    """What a kind's evaluator returns: per-point ``values`` (N,), what they are (``quantity``), per-point
    Pareto k-hat where there is one, and the kind's own entries for ``metrics.json``; ``elbo_per_point``: the
    values are ELBO bounds (CAVI)."""

    model_name: str
    values: torch.Tensor
    quantity: str
    khat: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    exact: bool = False
    elbo_per_point: bool = False
    describe: list[str] = field(default_factory=list)


_KINDS: dict[str, ResultKind] = {}


def register_kind(name: str, loader: Callable[[str], Any], description: str) -> ResultKind:
    """Register the kind ``name`` (``config.json`` ``kind``) with its ``loader``; re-registering replaces it."""
    if not isinstance(name, str) or not name.isidentifier():
        raise PPVAEError(f"register_kind: name: expected an identifier such as 'svi'; got {name!r}")
    if not callable(loader):
        raise PPVAEError(f"register_kind: loader: expected a function run_dir -> Result; got {type(loader).__name__}")
    old = _KINDS.get(name)
    _KINDS[name] = ResultKind(name, loader, description, old.evaluator if old else None)
    return _KINDS[name]


def register_evaluator(name: str, evaluator: Callable[[str, Any, bool], Pointwise]) -> None:
    """Attach the per-point evaluation of kind ``name`` (registered first by :func:`register_kind`)."""
    result_kind(name).evaluator = evaluator


def list_kinds() -> list[str]:
    """The registered kinds (the bundled models' kinds included)."""
    _load_plugins()
    return sorted(_KINDS)


def result_kind(name: str) -> ResultKind:
    """The registered kind ``name``; an unknown name lists the known ones."""
    if name not in _KINDS:
        _load_plugins()
    if name not in _KINDS:
        raise PPVAEError(f"kind: expected one of {', '.join(sorted(_KINDS))}; got '{name}' (a kind registered by a "
                         "package that is not imported? import it first)")
    return _KINDS[name]


def kind_of(run_dir: str | os.PathLike) -> ResultKind:
    """The kind of the run saved in ``run_dir`` (its ``config.json``), checked to be registered."""
    if run_dir is None or not os.path.isdir(run_dir):
        raise PPVAEError(f"run_dir: expected a run directory written by ppvae (fit, em, mcmc, cavi, ...); "
                         f"got {run_dir!r}" + ("" if run_dir is None or not os.path.exists(run_dir)
                                               else " (not a directory)"))
    return result_kind(runs.run_kind(os.fspath(run_dir)))


def load(run_dir: str | os.PathLike):
    """The result saved in ``run_dir``, whatever its kind: a :class:`ppvae.Fit`, :class:`ppvae.EMFit`,
    :class:`ppvae.MCMCResult`, a CAVI fit, or a kind a package registered. Tensors only, version checked; no
    code from the run directory runs (a user model's code must be imported first, ``ppvae.import_model``)."""
    return kind_of(run_dir).loader(os.fspath(run_dir))


def _load_plugins() -> None:
    """Kinds registered by the bundled models (CAVI for LDA) load with the model zoo, as models do."""
    get_model_class("gmm")  # the registry's first lookup imports ppvae.models
