"""Is the guide a good posterior? The Pareto k-hat of its importance weights over the global latents.

For S draws G_s ~ q(G) of every global latent from the fitted guide, the log importance weights

    log r_s = log p(G_s, X) - log q(G_s),      log p(G_s, X) = log p(G_s) + sum_i log p(x_i | G_s),

have a right tail whose generalized-Pareto shape k (fitted by ``arviz.psislw``, Vehtari et al. 2024) says
how far q is from the posterior (Yao, Vehtari, Simpson & Gelman 2018, "Yes, but did it work?: evaluating
variational inference", sec. 3, the same k-hat as Pyro's ``psis_diagnostic``): k < 0.5 good, 0.5 <= k <= 0.7
usable, k > 0.7 do not trust the guide's draws. Discrete local latents are summed exactly in
p(x_i | G) (:func:`ppvae.evaluate.evidence.global_draws_loglik`); continuous local latents are integrated by
importance sampling with the guide's local part as proposal (:func:`ppvae.log_marginal`, ``num_particles``
per point), which makes each log r_s itself an estimate (biased low by the local IS gap).

The same draws, weights and pointwise log-likelihoods serve the corrected PSIS-LOO and the weighted
posterior summaries of :mod:`ppvae.comparison.psis_loo`.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError, check_int
from ppvae.data.loaders import Batch
from ppvae.evaluate.estimate import prepare_inputs, psis_khat, seeded
from ppvae.evaluate.evidence import global_draws_loglik
from ppvae.evaluate.marginal import log_marginal
from ppvae.infer.importance import global_log_density, particle_plate
from ppvae.infer.svi.fit import Fit
from ppvae.model.labels import single_trace
from ppvae.model.structure import is_local, latent_sites

__all__ = ["GuideDiagnostic", "guide_diagnostic", "khat_reading", "guide_khat_line"]


def khat_reading(khat: float) -> str:
    """Yao et al. (2018, sec. 3.2)'s reading of a k-hat: good (< 0.5), usable (0.5-0.7), do not trust (> 0.7)."""
    if khat is None or math.isnan(khat):
        return "unknown (too few draws for the tail fit)"
    if khat < 0.5:
        return "good"
    if khat <= 0.7:
        return "usable"
    return "do not trust"


@dataclass
class GuideDiagnostic:
    r"""The guide's k-hat over the globals and what it was computed from.

    ``log_weights``: (S,) log p(G_s, X) - log q(G_s) in float64; ``draws``: site -> (S, \*site shape);
    ``loglik``: (S, N) log p(x_i | G_s) when ``pointwise`` was asked for, else None; ``ess``: the
    importance-sampling effective sample size 1 / sum_s w_s^2 of the self-normalized weights;
    ``loglik_exact``: False when continuous locals were integrated by importance sampling."""

    khat: float
    ess: float
    num_draws: int
    log_weights: torch.Tensor
    draws: dict = field(repr=False, default_factory=dict)
    loglik: torch.Tensor | None = field(repr=False, default=None)
    loglik_exact: bool = True

    @property
    def reading(self) -> str:
        return khat_reading(self.khat)

    def line(self) -> str:
        """One line for a report: 'guide k-hat 0.42 (good; Yao et al. 2018: < 0.5 good, ...)'."""
        return (f"guide Pareto k-hat {self.khat:.2f} over {self.num_draws} draws of the globals: {self.reading} "
                "(Yao et al. 2018: < 0.5 good, 0.5-0.7 usable, > 0.7 do not trust)")

    def to_dict(self) -> dict:
        return {"khat": None if math.isnan(self.khat) else self.khat, "reading": self.reading, "ess": self.ess,
                "num_draws": self.num_draws, "loglik_exact": self.loglik_exact}


def guide_diagnostic(fit_or_model_guide, data, *, num_draws: int = 1000, num_particles: int = 100, seed: int = 0,
                     chunk_size: int | None = None, pointwise: bool = False) -> GuideDiagnostic:
    """The Pareto k-hat of log p(G_s, X) - log q(G_s) over ``num_draws`` draws G_s of the guide's globals
    (module docstring). ``fit_or_model_guide``: a :class:`ppvae.Fit` or a ``(model, guide)`` pair.
    ``num_particles``: importance samples per point for a model with continuous local latents.
    ``pointwise``: keep log p(x_i | G_s) for every draw and point (what PSIS-LOO needs)."""
    num_draws = check_int("num_draws", num_draws, low=1)
    num, chunk_size, seed, model, guide, fit, ds, device, q, _, mpn, names, local_cont = prepare_inputs(
        fit_or_model_guide, data, "guide", num_draws, chunk_size, seed)
    num_particles = check_int("num_particles", num_particles, low=1)
    with torch.no_grad(), pyro.validation_enabled(False), seeded(seed, device):
        if local_cont:
            values, log_q, log_prior, loglik = _continuous_locals_loglik(
                fit_or_model_guide, model, q, ds, num, mpn, names, num_particles, seed, chunk_size)
        else:
            values, log_q, log_prior, loglik = global_draws_loglik(model, q, ds, num, mpn, names, chunk_size,
                                                                   pointwise=pointwise)
    log_weights = (log_prior + loglik.sum(-1) - log_q).double().cpu()
    lse = torch.logsumexp(log_weights, 0)
    ess = float(1.0 / torch.exp(2 * (log_weights - lse)).sum())
    khat = float(psis_khat(log_weights[None].numpy())[0])
    return GuideDiagnostic(khat=khat, ess=ess, num_draws=num, log_weights=log_weights,
                           draws=natural_shapes(model, ds, values, num),
                           loglik=loglik.cpu() if pointwise else None, loglik_exact=not local_cont)


def guide_khat_line(result, data, seed: int = 0) -> str | None:
    """The line ``ppvae fit`` and ``ppvae summary`` print for an SVI fit: its guide's k-hat over 1,000 draws of the
    globals (100 draws, 100 particles per point, for a model with continuous locals, whose weights cost a pass over
    the data per draw); None for a point estimate or a model without global latents."""
    if not isinstance(result, Fit) or result.point_estimate:
        return None
    try:
        _, _, _, model, _, _, ds, _, _, _, _, names, local = prepare_inputs(result, data, "guide", 1, None, seed)
        if not names:
            return None
        return guide_diagnostic(result, ds, num_draws=100 if local else 1000, seed=seed).line()
    except PPVAEError as exc:
        return f"guide Pareto k-hat: n/a ({exc})"


def natural_shapes(model, ds, values: dict, num: int) -> dict:
    """Draws made under the particle plate (S, 1, ..., *shape) -> site -> (S, *site shape)."""
    sites = latent_sites(single_trace(model, ds.batch()))
    return {n: v.detach().reshape((num,) + tuple(sites[n]["value"].shape)) for n, v in values.items()}


def _continuous_locals_loglik(source, model, q, ds, num, mpn, names, num_particles, seed, chunk_size):
    """As :func:`ppvae.evaluate.evidence.global_draws_loglik` for a model with continuous locals: per draw G_s,
    log p(x_i | G_s) by importance sampling over the locals (:func:`ppvae.log_marginal`, the guide's
    local sites as proposal, ``num_particles`` per point), one draw after another."""
    values, log_q = _draw_global_part(q, ds, num, mpn, names)
    natural = natural_shapes(model, ds, values, num)
    rows = []
    for s in range(num):
        lm = log_marginal(source, ds, num_particles=num_particles, seed=seed + s, chunk_size=chunk_size, warn=False,
                          global_values={n: v[s] for n, v in natural.items()})
        rows.append(torch.as_tensor(lm.values, dtype=torch.float64))
    y = None if ds.y is None else ds.y[:1]
    with particle_plate(num, mpn) if num > 1 else contextlib.nullcontext():
        tr = poutine.trace(poutine.condition(model, data=values)).get_trace(_one_point(ds, y))
    return values, log_q, global_log_density(tr, names, num, mpn), torch.stack(rows)


def _draw_global_part(q, ds, num, mpn, names):
    """Draws of the globals from a guide that also samples locals, with log q(G) over its sites outside the
    data plate: the guide must factorize as q(G) q(z | x, G); auxiliary sites outside the plate with more
    coordinates than the globals (AutoMultivariateNormal over every latent) couple them and are refused."""
    with particle_plate(num, mpn) if num > 1 else contextlib.nullcontext():
        src = poutine.trace(q).get_trace(ds.batch())
    outside = [n for n, s in src.nodes.items() if s["type"] == "sample" and not s["is_observed"]
               and not site_is_subsample(s) and not is_local(s)]
    def per_draw(n):  # coordinates of one draw of a site (its particle dim left out)
        return src.nodes[n]["value"].numel() // num

    aux = sum(per_draw(n) for n in outside if src.nodes[n]["infer"].get("is_auxiliary"))
    if aux > sum(per_draw(n) for n in names):  # more coordinates than the globals have: locals ride along
        raise PPVAEError("guide: its joint (auxiliary) site draws the globals together with the local latents, so "
                         "q(globals) has no closed form; use a guide that factorizes as q(G) q(z | x, G) "
                         "(auto_normal, an amortized guide)")
    missing = sorted(set(names) - set(outside))
    if missing:
        raise PPVAEError(f"guide: it does not sample the model's global latent site(s) {', '.join(missing)}")
    return {n: src.nodes[n]["value"] for n in names}, global_log_density(src, outside, num, mpn)


def _one_point(ds, y) -> Batch:
    return Batch(ds.x[:1], y, torch.zeros(1, dtype=torch.long, device=ds.x.device), len(ds))
