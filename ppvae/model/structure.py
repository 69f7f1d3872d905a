"""One description of a model's structure, computed once from one trace.

Every capability asks the same questions of a model: which latent sites are global, which are per
data point (continuous or discrete), which are observed or deterministic, how deep its plates nest
(``max_plate_nesting`` for enumeration and particle plates) and at which dim the data plate sits.
:class:`ModelStructure` answers them all from one trace of the model on a small probe batch (at most
:data:`PROBE_POINTS` points of the caller's batch, same trailing shape, index and size);
:meth:`ppvae.Model.structure` caches it on the model (the key is in :func:`structure_key`).

A site is *local* when it lies inside the plate named :data:`DATA_PLATE` (one value per data point,
:func:`is_local`); every other latent is *global*. The trace runs with the caller's random state
forked, so asking for the structure never moves a seeded random stream.

What the rows of the data are is declared by the model (``data_structure``, one of :data:`DATA_STRUCTURES`):
``"points"`` (the default: i.i.d. rows given the globals; the structure is read off a probe of
:data:`PROBE_POINTS` rows), ``"groups"`` (each row is a group; the latents in the data plate are the groups'
effects, globals of the posterior), ``"sequence"`` (the rows are the steps of one ordered sequence) or
``"record"`` (the whole data set is one record). Only ``"points"`` is ever traced on rows it was not given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppvae.data.loaders import Batch, Dataset

__all__ = ["DATA_PLATE", "DATA_STRUCTURES", "ModelStructure", "check_data_structure", "declared_structure",
           "data_plate", "is_local", "latent_sites", "probe_batch", "structure_key", "structure_of", "PROBE_POINTS"]

DATA_PLATE = "data"  # the one name every capability uses to find the data dimension
PROBE_POINTS = 2  # points of the caller's batch the structure's trace runs on
DATA_STRUCTURES = {  # what a model's rows are (``Model.data_structure``) -> what the engine does with them
    "points": "i.i.d. rows given the global latents: traced on a probe of two rows, split by rows in compare",
    "groups": "one row per group; the latents in the data plate are the groups' effects, globals of the posterior",
    "sequence": "the rows are the ordered steps of one sequence: never truncated, never split",
    "record": "the data set is one record: never truncated, never split",
}


def check_data_structure(cls) -> None:
    """Refuse a model class whose ``data_structure`` is not one of :data:`DATA_STRUCTURES` (a ``TypeError``)."""
    if cls.data_structure not in DATA_STRUCTURES:
        raise TypeError(f"{cls.__qualname__}.data_structure: expected one of {', '.join(DATA_STRUCTURES)}; "
                        f"got {cls.data_structure!r}")


def declared_structure(model) -> str:
    """The model's declared ``data_structure`` (:data:`DATA_STRUCTURES`); ``"points"`` for a plain callable."""
    kind = getattr(model, "data_structure", "points")
    if kind not in DATA_STRUCTURES:
        name = getattr(model, "name", "") or type(model).__name__
        raise ValueError(f"data_structure: model '{name}' declares '{kind}'; expected one of "
                         f"{', '.join(DATA_STRUCTURES)}")
    return kind


def is_local(site: dict) -> bool:
    """Whether a site (a trace node or a messenger's msg) lies inside the data plate (one value per data point)."""
    return any(f.name == DATA_PLATE for f in site["cond_indep_stack"])


def data_plate(batch: Batch, dim: int | None = None) -> pyro.plate:
    """The one data plate: ``pyro.plate("data", N, subsample=batch.index)`` over the batch's M points, so
    the likelihood is scaled by N / M (a full batch, or one without an index: ``pyro.plate("data", M)``).
    :meth:`ppvae.Model.data_plate` and the guides that plate the data (amortized, per-point) build it here."""
    size, m = batch.num_total, len(batch)
    if size == m or batch.index is None:
        return pyro.plate(DATA_PLATE, m, dim=dim)
    return pyro.plate(DATA_PLATE, size, subsample=batch.index, dim=dim)


def latent_sites(trace: pyro.poutine.Trace) -> dict[str, dict]:
    """Unobserved sample sites of a trace, without the subsample sites that plates record."""
    return {name: site for name, site in trace.iter_stochastic_nodes() if not site_is_subsample(site)}


def as_batch(data) -> Batch:
    """``data`` (a Batch, Dataset or tensor of points) as a Batch of all its points."""
    if isinstance(data, Batch):
        return data
    if not isinstance(data, Dataset):
        data = Dataset(data)
    return data.batch()


def probe_batch(batch: Batch, kind: str = "points") -> Batch:
    """The first :data:`PROBE_POINTS` points of ``batch`` with its index and data-set size (so a
    subsampled data plate stays subsampled); the whole batch for any ``kind`` of data but i.i.d. ``"points"``
    (a sequence, a record or a table of groups is never traced on rows it was not given)."""
    m = min(len(batch), PROBE_POINTS) if kind == "points" else len(batch)
    if m == len(batch):
        return batch
    y = None if batch.y is None else batch.y[:m]
    index = None if batch.index is None else batch.index[:m]
    return Batch(batch.x[:m], y, index, batch.size if index is None else batch.num_total)


def structure_key(batch: Batch, kind: str = "points") -> tuple:
    """The cache key of a model's structure: what a model may read off its batch besides the number of
    points. The trailing shape, dtype and device of ``x``; whether ``y`` is given and its trailing shape and
    dtype; whether the data plate is subsampled; for any ``kind`` but ``"points"`` the number of rows too (a
    group's or a sequence's latents are as many as its rows). A change to any of them traces the model again;
    ``Model.setup`` clears the cache (it may register data-dependent constants)."""
    y = batch.y
    return (tuple(batch.x.shape[1:]), batch.x.dtype, str(batch.x.device),
            None if y is None else (tuple(y.shape[1:]), y.dtype),
            batch.index is not None and batch.num_total != len(batch), None if kind == "points" else len(batch))


def _deterministic(site) -> bool:
    return bool(site["infer"].get("_deterministic"))


@dataclass(frozen=True)
class ModelStructure:
    """What one trace says about a model (site names in the trace's order).

    * ``global_sites``: latent sites outside the data plate;
    * ``continuous_local_sites`` / ``discrete_local_sites``: latent sites inside it, by support;
    * ``observed_sites``: observed sample sites (``pyro.factor`` ones too), deterministic ones excluded;
    * ``deterministic_sites``: ``pyro.deterministic`` sites;
    * ``max_plate_nesting``: the deepest vectorized plate dim used (``-dim`` of the leftmost);
    * ``data_plate_dim``: the dim of the data plate (None: the model has no data plate);
    * ``supports`` / ``event_shapes``: each latent site's support and event shape;
    * ``global_shapes``: each global site's value shape (it does not depend on the number of points);
    * ``kind``: the model's declared data structure (:data:`DATA_STRUCTURES`); for ``"groups"`` the continuous
      latents in the data plate (the groups' effects) are listed among the globals and in ``group_sites``.
    """

    global_sites: tuple[str, ...]
    continuous_local_sites: tuple[str, ...]
    discrete_local_sites: tuple[str, ...]
    observed_sites: tuple[str, ...]
    deterministic_sites: tuple[str, ...]
    max_plate_nesting: int
    data_plate_dim: int | None
    supports: dict = field(default_factory=dict, compare=False, repr=False)
    event_shapes: dict = field(default_factory=dict, compare=False, repr=False)
    global_shapes: dict = field(default_factory=dict, compare=False, repr=False)
    kind: str = "points"
    group_sites: tuple[str, ...] = ()

    @property
    def latent_sites(self) -> tuple[str, ...]:
        """Every latent site: globals, then continuous locals, then discrete locals."""
        return self.global_sites + self.continuous_local_sites + self.discrete_local_sites

    @property
    def local_sites(self) -> tuple[str, ...]:
        return self.continuous_local_sites + self.discrete_local_sites

    @property
    def discrete_sites(self) -> tuple[str, ...]:
        """Latent sites with discrete support (global ones too, which enumeration cannot sum per point)."""
        return tuple(n for n in self.latent_sites if self.supports[n].is_discrete)

    @property
    def discrete_global_sites(self) -> tuple[str, ...]:
        return tuple(n for n in self.global_sites if self.supports[n].is_discrete)

    @staticmethod
    def is_local(site: dict) -> bool:
        """Whether ``site`` lies inside the data plate (see :func:`is_local`)."""
        return is_local(site)

    @classmethod
    def from_trace(cls, trace: pyro.poutine.Trace, kind: str = "points") -> "ModelStructure":
        glob, cont, disc, obs, det, groups = [], [], [], [], [], []
        supports, events, shapes = {}, {}, {}
        deepest, data_dim = 0, None
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            for frame in site["cond_indep_stack"]:
                if frame.vectorized and frame.dim is not None:
                    deepest = max(deepest, -frame.dim)
                if frame.name == DATA_PLATE and data_dim is None:
                    data_dim = frame.dim
            if site["is_observed"]:
                (det if _deterministic(site) else obs).append(name)
                continue
            support = site["fn"].support
            supports[name], events[name] = support, tuple(site["fn"].event_shape)
            group = kind == "groups" and is_local(site) and not support.is_discrete  # a group's effect: global
            if not is_local(site) or group:
                glob.append(name)
                shapes[name] = tuple(site["value"].shape)
                if group:
                    groups.append(name)
            else:
                (disc if support.is_discrete else cont).append(name)
        return cls(tuple(glob), tuple(cont), tuple(disc), tuple(obs), tuple(det), deepest, data_dim,
                   supports, events, shapes, kind, tuple(groups))

    @classmethod
    def of(cls, fn: Callable, batch: Batch) -> "ModelStructure":
        """The structure of any model callable from one trace on ``probe_batch(batch)`` (not cached; a
        :class:`ppvae.Model` caches it, :meth:`ppvae.Model.structure`)."""
        kind = declared_structure(fn)
        with torch.random.fork_rng(devices=[]), poutine.block(), pyro.validation_enabled(False):
            return cls.from_trace(poutine.trace(fn).get_trace(probe_batch(batch, kind)), kind)


def structure_of(model: Callable, data) -> ModelStructure:
    """The structure of ``model`` on ``data``: cached for a :class:`ppvae.Model`, one trace for any other callable."""
    batch = as_batch(data)
    if callable(getattr(model, "structure", None)):
        return model.structure(batch)
    return ModelStructure.of(model, batch)
