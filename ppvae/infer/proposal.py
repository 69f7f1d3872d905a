"""What a proposal for per-point importance weights must be, and how it is run.

A proposal q(c | x, G) for the local continuous latents c of the model (a guide, or the prior) must
sample exactly the model's local continuous latents (and may draw discrete ones: a guide's discrete site marked
``infer={"importance_sample": True}`` is drawn and substituted into the model like a continuous latent, instead
of summed exactly; the discrete-code VAE's codes, whose K^C joint values cannot be summed), inside
``pyro.plate("data")``, with a density
(not a point mass) that factors over data points (Burda et al. 2015; the weights of
:mod:`ppvae.infer.importance` are per point). An autoguide with per-point parameters subsamples the data
plate as the model does (:func:`autoguide_subsample`).
"""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import torch
from pyro.infer.autoguide import AutoContinuous, AutoGuide
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError
from ppvae.model.structure import DATA_PLATE, is_local

__all__ = ["check_guide_is_factorized", "autoguide_subsample", "draws_discrete"]


def is_sampled(site) -> bool:
    return (site["type"] == "sample" and not site["is_observed"] and not site["infer"].get("is_auxiliary")
            and not site_is_subsample(site))


def is_drawn_discrete(site) -> bool:
    """A discrete proposal site marked ``infer={"importance_sample": True}``: drawn, not summed (module docstring)."""
    return site["type"] == "sample" and bool(site["infer"].get("importance_sample")) and site["fn"].support.is_discrete


def samples_discrete_locals(trace) -> bool:
    """Whether the proposal samples discrete local sites that are to be summed (not drawn)."""
    return any(is_sampled(s) and is_local(s) and s["fn"].support.is_discrete and not is_drawn_discrete(s)
               for s in trace.nodes.values())


def local_continuous_sites(source, from_prior: bool, globals_: dict, draw_discrete: bool = False) -> list[str]:
    """Names of the sampled local continuous sites in a proposal (or prior) trace; with ``draw_discrete``, also a
    guide's discrete sites marked for drawing (:func:`is_drawn_discrete`)."""
    names = []
    for name, site in source.nodes.items():
        drawn = draw_discrete and not from_prior and is_drawn_discrete(site)
        if not is_sampled(site) or name in globals_ or (site["fn"].support.is_discrete and not drawn):
            continue
        if from_prior and not is_local(site):
            continue
        names.append(name)
    return names


def check_sites(model_trace, proposal_trace, globals_: dict, substituted: set) -> None:
    """The proposal must sample exactly the model's local continuous latents, inside the data plate."""
    model_latents = {n: s for n, s in model_trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
                     and (not s["is_observed"] or n in substituted or n in globals_)}
    wanted = sorted(n for n, s in model_latents.items()
                    if is_local(s) and not s["fn"].support.is_discrete and n not in globals_)
    if proposal_trace is None:
        return
    sampled = {n: s for n, s in proposal_trace.nodes.items() if is_sampled(s) and n not in globals_}
    unknown = sorted(n for n in sampled if n not in model_latents)
    if unknown:
        raise PPVAEError(
            f"proposal: the guide samples site(s) {', '.join(unknown)} that the model does not have; "
            f"the model's latent sites are {', '.join(sorted(model_latents)) or 'none'}"
        )
    missing = sorted(n for n in wanted if n not in sampled)
    if missing:
        raise PPVAEError(f"proposal: the guide does not sample the model's local latent site(s) {', '.join(missing)}")
    outside = sorted(n for n in wanted if not is_local(sampled[n]))
    if outside:
        raise PPVAEError(
            f"proposal: the guide samples local site(s) {', '.join(outside)} outside pyro.plate('{DATA_PLATE}'); "
            "a per-point proposal must sample them inside the data plate"
        )
    local_q = [s for s in proposal_trace.nodes.values() if s["type"] == "sample" and not s["is_observed"]
               and not site_is_subsample(s) and is_local(s)]
    if local_q and all(isinstance(_base_dist(s["fn"]), dist.Delta) for s in local_q):
        raise PPVAEError(
            f"proposal: the guide is a point mass (Delta) at {', '.join(wanted)} (e.g. auto_delta): it has zero "
            "density wherever the model has mass off that point, so importance weights are undefined; use "
            "proposal='prior' or a guide with a density (auto_normal, amortized)"
        )


def _base_dist(fn):
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def check_guide_is_factorized(guide, has_local: bool) -> None:
    """Per-point weights need q(c) = prod_i q(c_i); a joint autoguide over all sites is not."""
    if has_local and isinstance(guide, AutoContinuous):
        raise PPVAEError(
            f"proposal: {type(guide).__name__} is one joint distribution over all latents, so its density "
            "does not factor over data points; fit with auto_normal or an amortized guide, or use proposal='prior'"
        )


@contextlib.contextmanager
def autoguide_subsample(guide, batch_size: int):
    """Within this context an autoguide with local parameters subsamples the data plate at the
    batch's ``index``, as the model does (by supplying the autoguide's ``create_plates``)."""
    frame = getattr(guide, "_prototype_frames", {}).get(DATA_PLATE) if isinstance(guide, AutoGuide) else None
    if frame is None or guide.create_plates is not None:
        yield
        return
    full = frame.full_size or frame.size
    if full != batch_size:
        raise PPVAEError(
            f"data: the fitted guide has local parameters for {full} data points; got {batch_size} points. "
            "A non-amortized guide can only evaluate the data it was fitted on; use proposal='prior' or an "
            "amortized guide"
        )
    guide.create_plates = lambda b: pyro.plate(DATA_PLATE, full, subsample=b.index, dim=frame.dim)
    try:
        yield
    finally:
        guide.create_plates = None


def draws_discrete(proposal, batch) -> bool:
    """Whether the guide ``proposal`` draws a discrete site (:func:`is_drawn_discrete`) on ``batch``."""
    if proposal is None or isinstance(proposal, AutoGuide):  # autoguides sample no discrete site
        return False
    try:
        with pyro.poutine.block(), torch.no_grad(), pyro.validation_enabled(False), torch.random.fork_rng(devices=[]):
            trace = pyro.poutine.trace(proposal).get_trace(batch)
    except Exception:  # noqa: BLE001 -- the estimator's own run of the guide reports what is wrong with it
        return False
    return any(is_sampled(s) and is_drawn_discrete(s) for s in trace.nodes.values())
