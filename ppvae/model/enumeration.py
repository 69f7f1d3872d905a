"""Per-datapoint log-probabilities with enumerated discrete latents summed out exactly.

Given a model whose global latents are fixed (``poutine.condition``) and whose local discrete latents
are enumerated in parallel, this computes for every point i of the data plate

    log p(x_i, c_i | globals) = log sum_{z_i} p(x_i, z_i, c_i | globals),

where c_i are any local continuous latents whose values are supplied. The sum is Pyro's tensor
variable elimination (``pyro.ops.contract.contract_to_tensor``, Obermeyer et al. 2019), the same
contraction ``TraceEnum_ELBO`` uses, targeted at the data plate so the data dimension is kept.

:func:`enumerated_log_likelihood` is the one pointwise log-likelihood of the package, log p(x_i | G)
with the discrete locals summed out, at one value of the globals G or at S draws of them at once:
``Fit.log_likelihood`` and every ``Result``, ArviZ conversion and ``compare``
(:func:`ppvae.comparison.inference_data.pointwise_log_likelihood`), importance sampling over draws of the globals
(:func:`ppvae.infer.importance.data_log_likelihood`) and the generic path of the NUTS/HMC potential.

A model without a data plate (one sequence, one record: ``data_structure = "sequence"`` or ``"record"``) has one
likelihood term, log p(x | G), not one per row: its "pointwise" vector is (log p(x | G), 0, ..., 0) over the rows,
so every sum over rows is right, and :func:`has_rows` says that no per-row terms exist (no leave-one-out). The
latents of a ``"groups"`` model's data plate (the groups' effects) are given with the globals and left out of the
pointwise likelihood, which is then log p(y_j | effects_j, G) per group j.

A model whose forward does not broadcast over a leading dimension of draws (``x @ w``, ``mu[0]``) is evaluated
draw by draw (slower; said once per model by a warning), so every caller gets the same (S, M) numbers.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict

import pyro
import torch
from pyro import poutine
from pyro.infer import config_enumerate
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError
from ppvae.data.loaders import Batch
from ppvae.model.structure import DATA_PLATE, declared_structure, structure_of

DRAWS_PLATE = "_ppvae_draws"


def has_rows(model) -> bool:
    """Whether ``model``'s likelihood has one term per row (i.i.d. points or groups), so that leave-one-out and a
    held-out part of rows mean something; False for one sequence or one record."""
    return declared_structure(model) in ("points", "groups")


def _ordinal(trace, site) -> frozenset:
    """The site's vectorized plates as packed dim symbols (as ``traceenum_elbo._find_ordinal``)."""
    return frozenset(trace.plate_to_symbol[f.name] for f in site["cond_indep_stack"] if f.vectorized)


def enumerated_trace(model, batch, max_plate_nesting: int, values: dict | None = None, *,
                     validate: bool | None = False) -> pyro.poutine.Trace:
    """A trace of ``model`` on ``batch`` with ``values`` substituted at their sites and every
    remaining discrete latent enumerated in parallel left of ``max_plate_nesting``. ``validate``:
    Pyro's distribution validation during the trace (None: as the caller has it)."""
    fn = poutine.condition(model, data=values) if values else model
    fn = poutine.enum(config_enumerate(fn, default="parallel"), first_available_dim=-max_plate_nesting - 1)
    with pyro.validation_enabled(validate) if validate is not None else contextlib.nullcontext():
        return poutine.trace(fn).get_trace(batch)


def enumerated_log_likelihood(model, batch, global_values: dict, *, num_draws: int | None = None,
                              max_plate_nesting: int | None = None, validate: bool | None = False,
                              with_trace: bool = False):
    """log p(x_i | G) = log sum_{z_i} p(x_i, z_i | G) for every point i of ``batch``, the discrete local
    latents z_i summed out exactly (:func:`data_plate_log_prob`), at the globals ``global_values``.

    ``num_draws=None``: one value per global site, shaped as the model's site; returns shape (M,).
    ``num_draws=S``: each value has a leading dimension of S draws; the model runs once under a plate of
    S draws at dim ``-(max_plate_nesting + 1)`` and the result has shape (S, M).
    ``max_plate_nesting``: the model's (None: from its structure, :func:`ppvae.model.structure.structure_of`);
    a caller that already runs the model inside a plate of particles passes the nesting that includes it.
    A model with continuous local latents not given in ``global_values`` has no closed-form pointwise
    likelihood (estimate it by importance sampling, ``ppvae.log_marginal``) and is refused.
    ``with_trace``: return ``(log_lik, trace)``, the trace with its log-densities computed.
    """
    structure = structure_of(model, batch) if max_plate_nesting is None or num_draws else None
    if structure is not None:
        cont = [n for n in structure.continuous_local_sites if n not in global_values]
        cont += [n for n in structure.group_sites if n not in global_values]
        if cont:
            raise PPVAEError(f"log_likelihood: the model has continuous local latents ({', '.join(cont)}); "
                             "estimate log p(x) with ppvae.log_marginal instead")
    mpn = structure.max_plate_nesting if max_plate_nesting is None else max_plate_nesting
    groups = set(structure_of(model, batch).group_sites) if declared_structure(model) == "groups" else set()
    include = (lambda name, site: name not in groups) if groups else None  # a group's effect is not data
    if num_draws is None:
        trace = enumerated_trace(model, batch, mpn, global_values, validate=validate)
        lp = data_plate_log_prob(trace, include)
        return (lp, trace) if with_trace else lp
    if num_draws == 1:  # a size-1 plate leaves no dimension for the contraction to keep: evaluate two copies
        twice = {k: v.expand((2,) + tuple(v.shape[1:])) for k, v in global_values.items()}
        out = enumerated_log_likelihood(model, batch, twice, num_draws=2, max_plate_nesting=mpn,
                                        validate=validate, with_trace=with_trace)
        return (out[0][:1], out[1]) if with_trace else out[:1]
    values = {}
    for name, v in global_values.items():
        shape = structure.global_shapes.get(name, tuple(v.shape[1:]))
        batch_dims = len(shape) - len(structure.event_shapes.get(name, ()))
        values[name] = v.reshape((num_draws,) + (1,) * (mpn - batch_dims) + tuple(v.shape[1:]))

    def plated(b):
        with pyro.plate(DRAWS_PLATE, num_draws, dim=-mpn - 1):
            return model(b)

    try:
        trace = enumerated_trace(plated, batch, mpn + 1, values, validate=validate)
        lp = data_plate_log_prob(trace, include)
        if tuple(lp.shape) != (num_draws, len(batch)):  # a silent broadcast gone wrong is no answer either
            raise ValueError(f"log-likelihood of shape {tuple(lp.shape)}; expected {(num_draws, len(batch))}")
    except (RuntimeError, ValueError, IndexError) as exc:
        if with_trace:
            raise
        return draw_by_draw(model, batch, global_values, num_draws, mpn, validate, exc)
    return (lp, trace) if with_trace else lp


_WARNED: set = set()


def draw_by_draw(model, batch, global_values: dict, num_draws: int, mpn: int, validate, reason) -> torch.Tensor:
    """log p(x_i | G_s) of shape (S, M), one trace per draw s: the path for a model that does not broadcast over
    draws (``reason``, what the vectorized trace raised). Warns once per model class."""
    name = getattr(model, "name", "") or type(model).__name__
    if name not in _WARNED:
        _WARNED.add(name)
        warnings.warn(f"model '{name}': its forward does not broadcast over a leading dimension of draws of its "
                      f"globals ({' '.join(str(reason).split())[:160]}); its log-likelihood is computed draw by draw "
                      "(slower). To vectorize, index the data dimension from the right, e.g. (X * w).sum(-1) or "
                      "Vindex(b)[..., g, :]", UserWarning, stacklevel=3)
    rows = []
    for s in range(num_draws):
        one = {k: v[s] for k, v in global_values.items()}
        rows.append(enumerated_log_likelihood(model, batch, one, max_plate_nesting=mpn, validate=validate))
    return torch.stack(rows)


def data_plate_log_prob(trace: pyro.poutine.Trace, include=None) -> torch.Tensor:
    """Sum over the data plate's sites of a trace (enumeration dims contracted), one value per point.

    Sites outside the data plate (global priors) are left out. ``include(name, site) -> bool`` can
    restrict the sites further. Returns a tensor of shape ``batch_shape_left + (M,)`` where any
    plates left of the data plate (e.g. a particle plate) are kept.
    """
    trace.compute_log_prob()
    trace.pack_tensors()
    factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    data_frame = None
    for name, site in trace.nodes.items():
        if site["type"] != "sample":
            continue
        frames = [f for f in site["cond_indep_stack"] if f.name == DATA_PLATE]
        if not frames or (include is not None and not include(name, site)):
            continue
        data_frame = frames[0]
        log_prob = site["packed"]["unscaled_log_prob"]
        if site["packed"].get("mask") is not None:
            log_prob = packed.scale_and_mask(log_prob, mask=site["packed"]["mask"])
        factors.setdefault(_ordinal(trace, site), []).append(log_prob)
        if site["infer"].get("_enumerate_dim") is not None:
            sum_dims.add(site["infer"]["_enumerate_symbol"])
    if data_frame is None:
        return _record_log_prob(trace, include)
    target = _target_ordinal(trace, factors, data_frame)
    # packed tensors drop size-1 dims, and the contraction can only keep dims some factor has
    present = set().union(*(t._pyro_dims for ts in factors.values() for t in ts))
    result = contract_to_tensor(factors, sum_dims, target_ordinal=frozenset(target & present))
    result = packed.unpack(result, trace.symbol_to_dim)
    # bring to shape (..., M): pad to the data plate's dim, then drop the singleton dims right of it
    while result.dim() < -data_frame.dim:
        result = result.unsqueeze(0)
    for _ in range(-data_frame.dim - 1):
        result = result.squeeze(-1)
    return result


def _record_log_prob(trace, include) -> torch.Tensor:
    """A model without a data plate (one sequence, one record): log p(x | G), the enumerated latents summed, on the
    first row and 0 on the others, over the rows of the batch the trace ran on (module docstring)."""
    factors: OrderedDict = OrderedDict()
    sum_dims: set = set()
    for name, site in trace.nodes.items():
        enumerated = site["type"] == "sample" and site["infer"].get("_enumerate_dim") is not None
        if site["type"] != "sample" or not (site["is_observed"] or enumerated) or site_is_subsample(site):
            continue
        if include is not None and not include(name, site):
            continue
        log_prob = site["packed"]["unscaled_log_prob"]
        if site["packed"].get("mask") is not None:
            log_prob = packed.scale_and_mask(log_prob, mask=site["packed"]["mask"])
        factors.setdefault(_ordinal(trace, site), []).append(log_prob)
        if enumerated:
            sum_dims.add(site["infer"]["_enumerate_symbol"])
    if not factors:
        raise ValueError("the model has no observed site")
    shared = frozenset.intersection(*factors.keys())
    result = packed.unpack(contract_to_tensor(factors, sum_dims, target_ordinal=shared), trace.symbol_to_dim)
    lead = [d for d in range(result.dim()) if result.shape[d] > 1]  # the draws' or particles' dim, if any
    total = result.reshape(-1) if lead else result.reshape(())
    args = trace.nodes.get("_INPUT", {}).get("args", ())
    rows = len(args[0]) if args and isinstance(args[0], Batch) else 1
    return torch.cat([total.unsqueeze(-1), total.new_zeros(total.shape + (rows - 1,))], -1)


def _target_ordinal(trace, factors, data_frame) -> frozenset:
    """The data plate's symbol and those of the plates left of it that every factor shares
    (e.g. a particle plate), so those dimensions are kept rather than summed."""
    symbol = trace.plate_to_symbol[data_frame.name]
    shared = frozenset.intersection(*factors.keys())
    left = {trace.plate_to_symbol[f.name] for _, s in trace.iter_stochastic_nodes() for f in s["cond_indep_stack"]
            if f.vectorized and f.dim is not None and f.dim < data_frame.dim}
    return frozenset({symbol} | (shared & left))
