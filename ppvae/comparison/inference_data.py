"""ArviZ ``InferenceData`` for MCMC runs and for SVI fits, so ``az.summary``, ``az.loo``,
``az.compare`` and ``az.plot_*`` treat both alike.

* MCMC (:class:`ppvae.infer.mcmc.sampler.MCMCResult`): ``arviz.from_pyro`` builds the posterior and sample stats
  (divergences); the log-likelihood and observed data are added by ppvae, because ``from_pyro``
  draws discrete latents from their prior (``Predictive``) instead of summing them out, and a
  ``potential_fn`` kernel carries no model for it to trace.
* SVI (:class:`ppvae.Fit`; neither Pyro nor ArviZ converts these, arviz issue 498): S draws of the
  global latents from the guide (``pyro.infer.Predictive(model, guide=guide)``) form a posterior with
  one chain, built with ``arviz.from_dict``.

In both the ``log_likelihood`` group holds, per draw s and point i,

    log p(x_i | theta_s) = log sum_{z_i} p(x_i, z_i | theta_s),

discrete locals summed exactly by ``ppvae.model.enumeration`` under a plate over draws (vectorized), which is the
pointwise quantity PSIS-LOO needs (Vehtari, Gelman & Gabry 2017, eqs. 1-4).

Mixture components are exchangeable, so labels are aligned before any summary by **ordering one
location coordinate**: each draw's components are permuted so that mu_{1c} < ... < mu_{Kc}, with c
the coordinate along which the components are best separated (Jasra, Holmes & Stephens 2005,
sec. 4.1; Stephens' relabelling (2000) is not implemented). The posterior group's attrs record it
and :func:`summary` prints a note.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError, check_int
from ppvae.data.loaders import Batch, Dataset
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.infer.pyro_adapter import AlignedMCMC
from ppvae.model.base import ExactPosterior, require
from ppvae.model.enumeration import DRAWS_PLATE, enumerated_log_likelihood
from ppvae.model.labels import align_labels, component_sites, single_trace
from ppvae.model.structure import is_local, latent_sites, structure_of
from ppvae.results.base import Result, guide_site_draws

__all__ = ["to_inference_data", "pointwise_log_likelihood", "align_labels", "guide_draws", "summary",
           "GuidePosterior", "exact_posterior"]



def _as_dataset(data) -> Dataset:
    return data if isinstance(data, Dataset) else Dataset(data)


# -- the pointwise log-likelihood --------------------------------------------------------------------
def pointwise_log_likelihood(model, data, draws: dict, *, chunk_size: int | None = None) -> torch.Tensor:
    """log p(x_i | theta_s) for every draw s and point i: a tensor of shape (S, N).

    ``draws`` maps each global latent site to S values stacked on dimension 0. Discrete local latents
    are enumerated and summed exactly; a model with continuous local latents has no closed-form
    pointwise likelihood (use ``ppvae.log_marginal``) and is refused.
    """
    data = _as_dataset(data)
    batch = data.batch()
    structure = structure_of(model, batch)
    if structure.continuous_local_sites:
        raise PPVAEError(f"log_likelihood: the model has continuous local latents "
                         f"({', '.join(structure.continuous_local_sites)}); the pointwise likelihood needs "
                         "ppvae.log_marginal")
    missing = [n for n in structure.global_sites if n not in draws]
    if missing:
        raise PPVAEError(f"draws: expected values for every global latent site; missing {', '.join(missing)}")
    S = len(next(iter(draws.values())))
    chunk = check_int("chunk_size", chunk_size or S, low=1)
    out = []
    with torch.no_grad():
        for lo in range(0, S, chunk):
            part = {k: torch.as_tensor(v[lo:lo + chunk]).to(batch.x.dtype) for k, v in draws.items()
                    if k in structure.latent_sites}
            out.append(enumerated_log_likelihood(model, batch, part, num_draws=len(next(iter(part.values())))))
    return torch.cat(out, 0)


# -- draws from a guide ------------------------------------------------------------------------------
def guide_draws(model, guide, data, num_draws: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """S draws of the model's global latents from ``guide``, vectorized under a plate over draws
    (sequential ``pyro.infer.Predictive(model, guide=guide)`` for a guide that does not vectorize):
    site -> (S, ...)."""
    batch = _as_dataset(data).batch()
    sites = latent_sites(single_trace(model, batch))
    structure = structure_of(model, batch)
    names = list(structure.global_sites)
    num_draws = check_int("num_draws", num_draws, low=1)
    pyro.set_rng_seed(seed)
    mpn = structure.max_plate_nesting

    def vectorized(b):  # the guide alone under a plate over draws (what Predictive(parallel=True) does)
        with pyro.plate(DRAWS_PLATE, num_draws, dim=-mpn - 1):
            return guide(b)

    with torch.no_grad(), pyro.validation_enabled(False):
        try:
            tr = poutine.trace(vectorized).get_trace(batch)
            out = {n: tr.nodes[n]["value"] for n in names}
            out = {n: v.reshape((num_draws,) + tuple(sites[n]["value"].shape)) for n, v in out.items()}
        except (RuntimeError, ValueError, IndexError, KeyError, NotImplementedError):
            out = pyro.infer.Predictive(model, guide=guide, num_samples=num_draws, return_sites=names)(batch)
    return {n: out[n].detach().reshape((num_draws,) + tuple(sites[n]["value"].shape)) for n in names}


# -- InferenceData -----------------------------------------------------------------------------------
def _coords_dims(model, data: Dataset, samples: dict, obs: dict) -> tuple[dict, dict]:
    first = {k: torch.as_tensor(v)[0, 0] for k, v in samples.items()}
    comp = component_sites(model, first) if model is not None else {}
    D = data.x.shape[1] if data.x.dim() == 2 else None
    coords: dict[str, Any] = {"data": np.arange(len(data))}
    columns = data.meta.get("columns")
    if D is not None:
        coords["feature"] = list(columns) if columns and len(columns) == D else np.arange(D)
    dims: dict[str, list[str]] = {}
    for name, value in first.items():
        names, used = [], set()
        for axis, size in enumerate(value.shape):
            if name in comp and axis == comp[name]:
                label = "component"
                coords["component"] = np.arange(size)
            elif D is not None and size == D and "feature" not in used:
                label = "feature"
            else:
                label = f"{name}_dim_{axis}"
            used.add(label)
            names.append(label)
        dims[name] = names
    for name, value in obs.items():
        dims[name] = ["data"] + (["feature"] if value.dim() == 2 and D is not None and value.shape[1] == D else
                                 [f"{name}_dim_{a}" for a in range(1, value.dim())])
    return coords, dims


def observed_values(model, batch: Batch) -> dict[str, torch.Tensor]:
    tr = single_trace(model, batch)
    return {n: s["value"].detach() for n, s in tr.nodes.items()
            if s["type"] == "sample" and s["is_observed"] and not site_is_subsample(s) and is_local(s)}


def _numpy(d: dict) -> dict:
    return {k: torch.as_tensor(v).detach().cpu().double().numpy() for k, v in d.items()}


def to_inference_data(result, data, *, num_draws: int = 1000, seed: int = 0, align: bool = True,
                      align_column: int | None = None, log_likelihood: bool = True, chunk_size: int | None = None):
    """An ``arviz.InferenceData`` for an :class:`~ppvae.infer.mcmc.sampler.MCMCResult` or a :class:`ppvae.Fit`.

    Groups: posterior (aligned mixture labels when ``align``), log_likelihood (per draw and point,
    see the module docstring; named after the observed site), observed_data, and for MCMC
    sample_stats (``diverging``). ``num_draws``/``seed`` apply to SVI fits (draws from the guide).
    """
    import arviz as az  # heavy: loaded only when an InferenceData is built

    data = _as_dataset(data)
    model = result.model
    batch = data.batch()
    if isinstance(result, MCMCResult):
        samples = result.samples
    elif hasattr(result, "guide") and hasattr(result, "model"):
        samples = {k: v.unsqueeze(0) for k, v in guide_draws(model, result.guide, data, num_draws, seed).items()}
    else:
        raise PPVAEError("result: expected an MCMCResult, a ppvae Fit or a GuidePosterior; "
                         f"got {type(result).__name__}")
    info = None
    if align:
        samples, info = align_labels(samples, model, data, column=align_column)
    obs = observed_values(model, batch)
    coords, dims = _coords_dims(model, data, samples, obs)
    if isinstance(result, MCMCResult) and result.mcmc is not None:  # a loaded run has no sampler: no sample_stats
        idata = az.from_pyro(AlignedMCMC(result.mcmc, samples), log_likelihood=False, coords=coords, dims=dims)
        observed = az.dict_to_dataset(_numpy(obs), coords=coords, dims=dims, default_dims=[])
        idata.add_groups(observed_data=observed)
    else:
        idata = az.from_dict(posterior=_numpy(samples), observed_data=_numpy(obs), coords=coords, dims=dims)
    if log_likelihood and not (isinstance(result, MCMCResult) and result.config.get("local", False)):
        C, S = next(iter(samples.values())).shape[:2]
        flat = {k: torch.as_tensor(v).reshape((C * S,) + tuple(v.shape[2:])) for k, v in samples.items()}
        ll = pointwise_log_likelihood(model, data, flat, chunk_size=chunk_size).reshape(C, S, -1)
        name = next(iter(obs)) if len(obs) == 1 else "x"
        idata.add_groups(log_likelihood={name: ll.double().numpy()}, coords=coords, dims={name: ["data"]})
    idata.posterior.attrs["ppvae_method"] = getattr(result, "method", "")
    if info is not None:
        idata.posterior.attrs["label_alignment"] = info["note"]
        idata.posterior.attrs["label_alignment_site"] = info["site"]
        idata.posterior.attrs["label_alignment_coordinate"] = info["coordinate"]
    return idata


class GuidePosterior(Result):
    """Any guide treated as a posterior (e.g. a model's exact ``posterior_guide``), for
    :func:`to_inference_data`, :func:`ppvae.comparison.compare_methods.compare` and the :class:`ppvae.Result` interface
    (draws from the guide; ``global_values``: the mean of 1,000 seeded draws)."""

    def __init__(self, model, guide, method: str = "guide", data_info: dict | None = None):
        self.model, self.guide, self.method = model, guide, method
        self.data_info = data_info or {}

    def latent_draws(self, data, num_draws: int | None = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        with pyro.validation_enabled(False):
            return guide_site_draws(self.model, self.guide, self._data_batch(data),
                                    check_int("num_draws", num_draws or 1000, low=1))

    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        batch = self._data_batch(data)
        names = set(self._global_names(batch))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            draws = self.latent_draws(batch, 1000)
        return {k: v.mean(0) for k, v in draws.items() if k in names}


def exact_posterior(model, data) -> GuidePosterior:
    """The exact posterior of a model declaring :class:`ppvae.ExactPosterior` (``posterior_guide``; normal_gamma, ppca,
    a conjugate regression) given ``data``, as a :class:`ppvae.Result` whose ``method`` is ``"exact"``."""
    require(model, ExactPosterior, "exact_posterior")
    hook = model.posterior_guide
    data = _as_dataset(data)
    with pyro.validation_enabled(False):
        model.setup(data)
    guide = hook(data.x, data.y)
    return GuidePosterior(model, guide, "exact", data_info={"name": data.name, "num_data": len(data),
                                                            "x_shape": list(data.x.shape)})


def summary(idata, **options):
    """``arviz.summary`` of the posterior, printing the label-alignment note when there is one.

    Entries constant over every draw (a Cholesky correlation factor's fixed 1s and 0s) are left out:
    their R-hat is undefined and their "ESS" equals the draw count, which would pose as the minimum."""
    import arviz as az  # heavy: loaded only when an InferenceData is built

    note = idata.posterior.attrs.get("label_alignment")
    if note:
        print(f"note: {note}")
    round_to = options.pop("round_to", 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # arviz's divide-by-zero on the constant entries
        table = az.summary(idata, round_to="none", **options)
    if "sd" in table:
        table = table[table["sd"] > 0]
    return table if round_to in (None, "none") else table.round(round_to)
