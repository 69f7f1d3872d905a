"""Mixture components and their labels: which sites are indexed by component, and aligning labels across draws.

A mixture's posterior is invariant to permuting its K components, so draws from different chains (or
one chain that switched) name the same component differently. :func:`align_labels` relabels every
draw by ordering one location coordinate, the identifiability constraint that ``run_mcmc(order=...)``
imposes during sampling (Jasra, Holmes & Stephens 2005, sec. 4.1).
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from ppvae._util.validation import check_int
from ppvae.data.loaders import Dataset
from ppvae.model.base import Model
from ppvae.model.capabilities import Mixture
from ppvae.model.structure import structure_of

__all__ = ["component_sites", "location_site", "align_labels", "single_trace"]


def single_trace(model, batch):
    """One trace of ``model`` on ``batch``, seen by no enclosing handler and without argument validation."""
    with poutine.block(), pyro.validation_enabled(False):
        return poutine.trace(model).get_trace(batch)


def component_sites(model: Model, values: dict) -> dict[str, int]:
    """Sites indexed by mixture component (name -> axis of the component dimension): the model's
    :meth:`ppvae.Mixture.component_sites`; none for a model that does not declare :class:`ppvae.Mixture`."""
    return dict(model.component_sites(values)) if isinstance(model, Mixture) else {}


def location_site(model, comp: dict, supports: dict) -> str | None:
    """The component site whose coordinates order the labels (:meth:`ppvae.Mixture.location_site`)."""
    return model.location_site(comp, supports) if isinstance(model, Mixture) else None


def align_labels(samples: dict, model, data, column: int | None = None) -> tuple[dict, dict | None]:
    """Permute mixture components in every draw so one location coordinate increases.

    ``samples``: site -> (chains, draws, ...) arrays. Returns (aligned samples, info) where info says
    which site and coordinate ordered the labels (``None`` when the model has no exchangeable
    components). The coordinate is the one whose sorted component values are furthest apart on
    average (relative to their spread), so ties between components are rare, unless ``column`` is given.
    """
    first = {k: torch.as_tensor(v)[0, 0] for k, v in samples.items()}
    comp = component_sites(model, first)
    if not comp:
        return samples, None
    batch = (data if isinstance(data, Dataset) else Dataset(data)).batch()
    supports = dict(structure_of(model, batch).supports)
    loc = location_site(model, comp, supports)
    if loc is None or loc not in samples:
        return samples, None
    locs = torch.as_tensor(samples[loc]).movedim(2 + comp[loc], 2)  # (C, S, K, ...)
    locs = locs.reshape(locs.shape[:3] + (-1,))
    ranked = locs.sort(dim=2).values
    gap = (ranked[:, :, 1:] - ranked[:, :, :-1]).amin(2).mean((0, 1)) / locs.std((0, 1, 2)).clamp_min(1e-12)
    column = int(gap.argmax()) if column is None else check_int("column", column, low=0, high=locs.shape[-1] - 1)
    perm = locs[..., column].argsort(dim=2)  # (C, S, K)
    aligned = {}
    for name, value in samples.items():
        value = torch.as_tensor(value)
        if name not in comp:
            aligned[name] = value
            continue
        axis = 2 + comp[name]
        moved = value.movedim(axis, 2)
        index = perm.reshape(perm.shape + (1,) * (moved.dim() - 3)).expand_as(moved)
        aligned[name] = moved.gather(2, index).movedim(2, axis)
    switched = float((perm != torch.arange(perm.shape[-1])).any(-1).float().mean())
    info = {"method": "ordering by a location coordinate", "site": loc, "coordinate": column,
            "fraction_permuted": switched,
            "note": f"mixture labels aligned across draws and chains by ordering {loc}[k, {column}] "
                    f"increasingly over components k ({100 * switched:.1f}% of draws relabelled)"}
    return aligned, info
