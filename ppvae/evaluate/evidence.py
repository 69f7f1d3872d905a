"""The evidence log p(X) of a model and data, by one of three estimators (``log_evidence(method=)``).

* ``"is"``: importance sampling over the global latents G,

      log p(X) ~ log (1/S) sum_s p(X, G_s) / q(G_s),   G_s ~ q (the fitted guide or the prior),

  with p(X | G) = prod_i sum_{z_i} p(x_i, z_i | G) summed exactly over discrete local latents (so it
  needs a model whose local latents are all discrete); the standard error is the delta-method
  sqrt((S / ESS - 1) / S) and the Pareto k-hat of the weights (Yao et al. 2018) comes with it.
* ``"ais"``: annealed importance sampling over all continuous latents, globals and locals
  (:mod:`ppvae.evaluate.evidence_ais`; Neal 2001).
* ``"bridge"``: bridge sampling from NUTS/HMC draws (:mod:`ppvae.evaluate.bridge`; Meng & Wong 1996,
  Gronau et al. 2017, with Frühwirth-Schnatter 2004's error).

Two independent estimators that agree within their standard errors are the certificate
``ppvae evidence`` prints (:mod:`ppvae.cli.evidence_run`).
"""

from __future__ import annotations

import contextlib
import inspect
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError, check_choice, check_float, check_int, renamed, warn_at_caller
from ppvae.data.loaders import Batch
from ppvae.evaluate.bridge import bridge_sampling
from ppvae.evaluate.estimate import KHAT_THRESHOLD, ImportanceWarning, LogEvidence, _prepare, _seeded, psis_khat
from ppvae.evaluate.evidence_ais import ais_evidence
from ppvae.evaluate.symmetry import covered_labellings, detect_label_symmetry, guide_log_density, label_symmetry
from ppvae.infer.importance import (
    auto_chunk,
    check_log_weights,
    data_log_likelihood,
    global_log_density,
    particle_plate,
    run_chunks,
)
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.infer.proposal import is_sampled
from ppvae.model.capabilities import Mixture, check_mask_support
from ppvae.model.labels import single_trace

__all__ = ["LogEvidence", "log_evidence"]


@renamed(num_samples="num_particles")
def log_evidence(fit_or_model_guide, data, *, method: str = "is", num_particles: int = 1000, proposal="guide",
                 defensive: float | None = None, chunk_size: int | None = None, seed: int = 0,
                 **options) -> LogEvidence:
    """log p(X) by ``method``:

    * ``"is"``: log (1/S) sum_s p(X, G_s) / q(G_s), G_s ~ q (the guide, the prior or a guide
      callable), with p(X | G) = prod_i sum_{z_i} p(x_i, z_i | G) summed exactly over discrete local
      latents; needs a model whose local latents are all discrete. ``chunk_size`` bounds the data
      points per vectorized pass; ``stderr`` is the delta-method sqrt((S / ESS - 1) / S).
      ``defensive`` = a in [0, 1) is the prior's share of a defensive mixture proposal (Hesterberg 1995,
      "Weighted average importance sampling and defensive mixture distributions", Technometrics 37, sec. 3;
      Owen & Zhou 2000, "Safe and effective importance sampling", JASA 95, sec. 2),
      r(G) = (1 - a) q_sym(G) + a p(G), with q_sym the guide symmetrized over a mixture's K! labellings:
      round(a S) draws from the prior and the rest from the guide (deterministic allocation), weights
      p(X, G) / r(G) <= p(X | G) / a, so posterior mass the guide misses is reached through the prior.
      None (the default) means a = 0.1 for a guide proposal on a model declaring :class:`ppvae.Mixture`
      or whose exchangeable components :func:`ppvae.evaluate.symmetry.detect_label_symmetry` finds
      (multimodal: on the Pyro tutorial's 1-D mixture an auto_normal guide alone is 18 SE low, with the mixture
      z = +1.3, +0.8, 0.0 for seeds 0-2 at S = 50,000) and 0 (off) elsewhere, where a good guide
      loses to it: on the Normal-Gamma model with an auto_mvn guide (S = 4,000) a = 0.1 took the ESS from
      3445 to 3290 and the standard error from 0.0063 to 0.0073 (k-hat 0.49 -> 0.09). ``info["defensive"]``
      holds a (``share``), the draws from each part, the k-hat, and the estimate and k-hat of the guide's
      own draws alone.
    * ``"ais"``: annealed importance sampling over all continuous latents, globals and locals, from a
      Gaussian fitted to the guide's draws (or to the draws of an MCMCResult passed as the first
      argument) to the posterior (:func:`ppvae.evaluate.evidence_ais.ais_evidence`; ``options``: num_steps,
      num_chains, schedule, num_leapfrog, step_size, target_accept, num_init_draws, progress).
    * ``"bridge"``: bridge sampling from the NUTS/HMC draws of a :class:`ppvae.MCMCResult` passed as
      the first argument (:func:`ppvae.evaluate.bridge.bridge_sampling`; ``options``: tol, max_iter, use_ess).

    Example (the Normal-Gamma model, whose evidence is known in closed form, on 50 simulated points; the
    importance-sampling estimate from a full-rank Gaussian guide is within 3 standard errors of it):

    >>> import torch, ppvae
    >>> from ppvae.models import NormalGamma
    >>> x = 1.0 + 0.5 * torch.randn(50, 1, generator=torch.Generator().manual_seed(0))
    >>> model = NormalGamma()
    >>> fit = ppvae.fit(model, x, guide="auto_mvn", steps=500, lr=0.05, progress=False)
    >>> ev = ppvae.log_evidence(fit, x, num_particles=2000)
    >>> round(model.log_evidence_exact(x), 2), abs(ev.value - model.log_evidence_exact(x)) < 3 * ev.stderr
    (-46.32, True)
    """
    check_choice("method", method, ("is", "ais", "bridge"))
    model = fit_or_model_guide[0] if isinstance(fit_or_model_guide, tuple) else getattr(fit_or_model_guide, "model",
                                                                                       None)
    if model is not None and data is not None:
        check_mask_support(model, data)  # the evidence of observed parts is not estimated here
    if method != "is" and defensive is not None:
        raise PPVAEError(f"defensive: a defensive mixture proposal is for method='is'; got method='{method}'")
    if method != "is":
        return _evidence_by(method, fit_or_model_guide, data, seed, chunk_size, options)
    if options:
        raise PPVAEError(f"options: method='is' takes num_particles, proposal, defensive, chunk_size and seed; got "
                         f"{', '.join(sorted(options))}")
    if defensive is not None:
        defensive = check_float("defensive", defensive, low=0.0, high=1.0)
        if defensive >= 1.0:
            raise PPVAEError(f"defensive: expected the prior's share of the proposal in [0, 1); got {defensive}")
    return _importance_evidence(fit_or_model_guide, data, num_particles, proposal, defensive, chunk_size, seed)


def _importance_evidence(fit_or_model_guide, data, num_particles, proposal, defensive, chunk_size,
                         seed) -> LogEvidence:
    """method="is": S draws of the globals from the proposal, p(X | G_s) summed over the data in chunks."""
    num, chunk_size, seed, model, guide, fit, ds, device, q, qname, mpn, global_names, local_cont = _prepare(
        fit_or_model_guide, data, proposal, num_particles, chunk_size, seed)
    if local_cont:
        raise PPVAEError(
            f"log_evidence: the model has continuous local latents ({', '.join(local_cont)}); it supports models whose "
            "local latents are discrete; use log_marginal for per-point estimates"
        )
    if defensive is None:  # a mixture, declared or found: multimodal (docstring)
        mixture = isinstance(model, Mixture) or (q is not None and detect_label_symmetry(model, ds) is not None)
    share = (0.1 if mixture else 0.0) if defensive is None else defensive
    num_prior = min(int(round(share * num)), num - 1) if q is not None else 0  # at least one guide draw
    with torch.no_grad(), pyro.validation_enabled(False), _seeded(seed, device):
        if num_prior:
            lw, info = _defensive(model, q, ds, (num - num_prior, num_prior), mpn, global_names, chunk_size,
                                  explicit=defensive is not None)
        if not num_prior or lw is None:
            values, log_q, log_prior, loglik = global_draws_loglik(model, q, ds, num, mpn, global_names, chunk_size)
            lw = _finite((log_prior + loglik.sum(-1) - log_q).cpu())
            lw, info = _symmetrized(model, q, ds, num, mpn, values, log_q, lw)
    lse = float(torch.logsumexp(lw, 0))
    ess = float(1.0 / torch.exp(2 * (lw - lse)).sum())
    khat = float(psis_khat(lw[None].numpy())[0])
    if "defensive" in info:
        info["defensive"]["khat"] = khat
    if khat > KHAT_THRESHOLD:
        warn_at_caller(f"log_evidence: Pareto k-hat = {khat:.2f} > {KHAT_THRESHOLD}: the estimate is unreliable "
                       "(Yao et al. 2018); use a better proposal or more samples", ImportanceWarning)
    return LogEvidence(value=lse - math.log(num), stderr=math.sqrt(max(num / ess - 1, 0.0) / num), ess=ess, khat=khat,
                       elbo=float(lw.mean()), num_particles=num, proposal=qname, info=info)


def _finite(lw: torch.Tensor) -> torch.Tensor:
    if torch.isnan(lw).any() or (lw == math.inf).any():
        raise PPVAEError("proposal: log-weights over the globals are NaN or +inf: the proposal puts mass where "
                         "the prior has none")
    return lw


def _defensive(model, q, ds, nums, mpn, global_names, chunk_size, explicit):
    """Log-weights log p(X, G) - log r(G) under the defensive mixture r = (1 - a) q_sym + a p (Hesterberg 1995;
    Owen & Zhou 2000), a = n_p / S: n_q draws from the guide, n_p from the prior, the guide's density evaluated at
    every draw and its K! relabellings (:func:`ppvae.evaluate.symmetry.guide_log_density`). (None, None) when the
    guide's density at arbitrary values is not known (an error if ``defensive`` was given)."""
    parts = [global_draws_loglik(model, src, ds, n, mpn, global_names, chunk_size)
             for src, n in zip((q, None), nums, strict=True)]
    num, share = sum(nums), nums[1] / sum(nums)
    values = {n: torch.cat([parts[0][0][n], parts[1][0][n]], 0) for n in global_names}
    log_joint = torch.cat([(lp + ll.sum(-1)).double().cpu() for _, _, lp, ll in parts], 0)
    trace = single_trace(model, ds.batch())
    supports = {n: trace.nodes[n]["fn"].support for n in values}
    sym = label_symmetry(model, {n: trace.nodes[n]["value"] for n in values}, ds)
    perms = sym.permutations if sym is not None else torch.arange(1)[None]
    log_qs = [guide_log_density(q, ds.batch(), values if sym is None else sym.permute(values, perm), num, mpn,
                                supports) for perm in perms]
    if not len(perms) or any(v is None for v in log_qs):
        if explicit:
            raise PPVAEError(f"defensive: the density of a {type(q).__name__} guide at the prior's draws (and their "
                             "relabellings) is not known here; use an auto_normal or auto_mvn guide, or defensive=0")
        return None, None
    stacked = torch.stack(log_qs).double().cpu()
    log_qsym = torch.logsumexp(stacked, 0) - (sym.log_count if sym is not None else 0.0)
    log_prior = torch.cat([lp.double().cpu() for _, _, lp, _ in parts], 0)
    log_r = torch.logaddexp(math.log1p(-share) + log_qsym, math.log(share) + log_prior)
    lw = _finite(log_joint - log_r)
    guide_lw = (log_joint - log_qsym)[:nums[0]]  # the guide's draws alone, weighted by the guide (symmetrized)
    info = {"defensive": {"share": share, "num_guide_draws": nums[0], "num_prior_draws": nums[1],
                          "value_guide_alone": float(torch.logsumexp(guide_lw, 0)) - math.log(nums[0]),
                          "khat_guide_alone": float(psis_khat(guide_lw[None].numpy())[0])}}
    if sym is not None:
        overlap = (torch.logsumexp(stacked, 0) - stacked[0])[:nums[0]]
        info["label_symmetry"] = covered_labellings(overlap, sym)
    return lw, info


def _symmetrized(model, q, ds, num, mpn, values, log_q, lw) -> tuple[torch.Tensor, dict]:
    """The log-weights with the proposal symmetrized over a mixture's K! labellings (:mod:`ppvae.evaluate.symmetry`):
    log w_s + log K! - log sum_sigma q(sigma G_s) / q(G_s), and what the proposal covered; unchanged for a model
    without label symmetry and for the prior (symmetric itself)."""
    trace = single_trace(model, ds.batch())
    one = {n: trace.nodes[n]["value"] for n in values}
    sym = label_symmetry(model, one, ds)
    if sym is None:
        return lw, {}
    info = {"num_components": sym.num_components, "log_k_factorial": sym.log_count}
    if q is None:
        return lw, {"label_symmetry": {**info, "proposal_covers": "every labelling (the prior is symmetric): "
                                       "nothing is added"}}
    supports = {n: trace.nodes[n]["fn"].support for n in values}
    log_qs = [] if not len(sym.permutations) else [
        guide_log_density(q, ds.batch(), sym.permute(values, perm), num, mpn, supports) for perm in sym.permutations]
    if not log_qs or any(v is None for v in log_qs):
        why = (f"K! = {math.factorial(sym.num_components)} relabellings are too many to evaluate" if not log_qs else
               f"the density of a {type(q).__name__} at relabelled values is not known here")
        warn_at_caller(f"log_evidence: the posterior is symmetric in the {sym.num_components} mixture labels and the "
                       f"proposal may cover one of the K! labellings, but {why}: the estimate may be low by up to "
                       f"log K! = {sym.log_count:.3f}; use an auto_normal guide, method='bridge' or proposal='prior'",
                       ImportanceWarning)
        return lw, {"label_symmetry": {**info, "proposal_covers": f"unknown ({why}); nothing is added"}}
    stacked = torch.stack(log_qs).cpu()
    overlap = torch.logsumexp(stacked, 0) - stacked[0]  # log sum_sigma q(sigma G) / q(G), identity first
    sym_lw = lw + sym.log_count - overlap
    khat_one = float(psis_khat(lw[None].numpy())[0])
    one_value = float(torch.logsumexp(lw, 0)) - math.log(num)
    return sym_lw, {"label_symmetry": {**covered_labellings(overlap, sym), "value_one_labelling": one_value,
                                       "khat_one_labelling": khat_one,
                                       "correction": float(torch.logsumexp(sym_lw, 0)) - math.log(num) - one_value}}


def global_draws_loglik(model, q, ds, num, mpn, global_names, chunk_size=None, pointwise: bool = False):
    """S draws G_s of the global latents from ``q`` (None: the prior) and, per draw, log q(G_s), log p(G_s)
    and log p(x_i | G_s) = log sum_{z_i} p(x_i, z_i | G_s) (discrete locals enumerated): the last as
    (S, N) when ``pointwise``, else summed over the points, (S, 1). Run under ``torch.no_grad``."""
    device, n = ds.x.device, len(ds)
    values, log_q = _draw_globals(model, q, ds, num, mpn, global_names)
    parts, prior = [], {}

    def run(start: int, m: int) -> int:
        y = None if ds.y is None else ds.y[start:start + m]  # a regression's response rides with x
        batch = Batch(ds.x[start:start + m], y, torch.arange(start, start + m, device=device), n)
        lp, mtr = data_log_likelihood(model, batch, num, mpn, values)
        lp = lp.double()
        check_log_weights(lp, {"model": mtr})
        parts.append(lp if pointwise else lp.sum(-1, keepdim=True))
        if "value" not in prior:
            prior["value"] = global_log_density(mtr, global_names, num, mpn)
        return auto_chunk({"model": mtr}, m, n, device)

    run_chunks(n, chunk_size, run, probe=max(2, min(16, 100_000 // num)), model=model)
    loglik = torch.cat(parts, -1)
    if not pointwise:
        loglik = loglik.sum(-1, keepdim=True)
    log_prior = prior.get("value", torch.zeros(num, dtype=torch.float64, device=device))
    return values, log_q, log_prior.to(loglik.device), loglik


def _evidence_by(method, source, data, seed, chunk_size, options) -> LogEvidence:
    """``log_evidence`` by 'ais' or 'bridge', its options checked against the estimator's signature."""

    fn = ais_evidence if method == "ais" else bridge_sampling
    allowed = sorted(set(inspect.signature(fn).parameters) - {"source", "mcmc", "data", "seed", "chunk_size"})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise PPVAEError(f"options: method='{method}' takes {', '.join(allowed)}; got {', '.join(unknown)}")
    if method == "bridge" and not isinstance(source, MCMCResult):
        raise PPVAEError("fit_or_model_guide: method='bridge' needs posterior draws; expected the ppvae.MCMCResult "
                         f"of ppvae.run_mcmc; got {type(source).__name__}")
    extra = {} if chunk_size is None else {"chunk_size": check_int("chunk_size", chunk_size, low=1)}
    return fn(source, data, seed=seed, **extra, **options)


def _draw_globals(model, q, ds, num, mpn, global_names):
    """S draws of the global latents from the proposal (or prior) with their log-density, shape (S,)."""
    y = None if ds.y is None else ds.y[:1]  # a regression's response rides with x
    batch = Batch(ds.x[:1], y, torch.zeros(1, dtype=torch.long, device=ds.x.device), len(ds))
    with particle_plate(num, mpn) if num > 1 else contextlib.nullcontext():
        src = poutine.trace(q if q is not None else model).get_trace(batch if q is None else ds.batch())
    sampled = [name for name, s in src.nodes.items() if is_sampled(s)]
    unknown = sorted(set(sampled) - set(global_names)) if q is not None else []
    if unknown:
        raise PPVAEError(
            f"proposal: the guide samples site(s) {', '.join(unknown)} that are not global latents of the model "
            f"({', '.join(global_names) or 'none'})"
        )
    missing = sorted(set(global_names) - set(sampled))
    if missing:
        raise PPVAEError(f"proposal: the guide does not sample the model's global latent site(s) {', '.join(missing)}")
    # AutoNormal & co. also put a Delta at each model site (the density rides on an auxiliary site): only a guide
    # whose every sample site, auxiliary ones included, is a Delta has no density
    if q is not None and global_names and all(_point_mass(s["fn"]) for s in src.nodes.values()
                                              if s["type"] == "sample" and not s["is_observed"]):
        raise PPVAEError(
            f"proposal: the guide is a point mass (Delta) at {', '.join(global_names)} (e.g. auto_delta): it has no "
            "density, so importance weights over the globals are undefined (its log p(X, theta-hat) is not the "
            "evidence); refit with a guide that has one (auto_normal), use method='ais'/'bridge' or proposal='prior'")
    values = {name: src.nodes[name]["value"] for name in global_names}
    if q is None:
        return values, global_log_density(src, global_names, num, mpn)
    every = [name for name, s in src.nodes.items()
             if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)]
    return values, global_log_density(src, every, num, mpn)


def _point_mass(fn) -> bool:
    """Whether a guide site's distribution is a Delta (e.g. AutoDelta's), under any wrapping (Independent, ...)."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return isinstance(fn, dist.Delta)
