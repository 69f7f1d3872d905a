"""Training objectives (ELBO estimators) by name.

* ``trace`` -- :class:`pyro.infer.Trace_ELBO`: the Monte Carlo KL estimator, "SGVB estimator A" of
  Kingma & Welling (2013), eq. 6: L(x) ~ 1/L sum_l [log p(x, z_l) - log q(z_l | x)]
  (:class:`LeanTrace_ELBO`: the same loss and gradients with less per-step bookkeeping).
* ``meanfield`` -- :class:`pyro.infer.TraceMeanField_ELBO`: the analytic KL where
  ``torch.distributions.kl_divergence`` has a closed form, "SGVB estimator B", eq. 7:
  L(x) ~ -KL(q(z|x) || p(z)) + 1/L sum_l log p(x | z_l).
* ``enum`` -- :class:`pyro.infer.TraceEnum_ELBO`: discrete latents marked for enumeration are summed
  out exactly (Obermeyer et al. 2019, "Tensor variable elimination for plated factor graphs").
* ``iwae`` -- the importance-weighted bound with K = ``num_particles`` (Burda et al. 2015, eq. 8) on
  the per-point log-weights of :mod:`ppvae.infer.importance` (enumerated discrete latents summed exactly).
* ``auto`` -- ``enum`` when the model has discrete latent sites, else ``trace``.

``stl`` and ``iwae_dreg`` (the same values with lower-variance gradients for reparameterized guides) are
registered by :mod:`ppvae.infer.svi.estimators`.

Every objective exposes ``differentiable_loss(model, guide, *args)``; the trainer differentiates it
and steps one torch optimizer over all parameters.
"""

from __future__ import annotations

from typing import Callable

import pyro.infer
from pyro import poutine
from pyro.distributions.util import is_identically_zero, scale_and_mask
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from pyro.util import warn_if_nan

from ppvae._util.validation import PPVAEError, check_int
from ppvae.infer.importance import IWAE

__all__ = ["make_elbo", "register_elbo", "list_elbos"]

_ELBOS: dict[str, tuple[Callable, str, bool]] = {}


def register_elbo(name: str, description: str, *, enumerates: bool = False):
    """Decorator: register ``factory(num_particles, vectorize_particles, max_plate_nesting, **options)``.

    ``enumerates`` says the objective sums out enumerated discrete latents; models with discrete
    latent sites may only use such objectives.
    """

    def wrap(factory):
        _ELBOS[name] = (factory, description, enumerates)
        return factory

    return wrap


def list_elbos() -> dict[str, str]:
    """Names of the registered ELBOs (``make_elbo``'s spec), with one-line descriptions."""
    return {name: desc for name, (_, desc, _) in sorted(_ELBOS.items())}


def _pyro_elbo(cls):
    def factory(num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf"), **options):
        return cls(
            num_particles=num_particles,
            vectorize_particles=vectorize_particles,
            max_plate_nesting=max_plate_nesting,
            **options,
        )

    return factory


class LeanTrace_ELBO(pyro.infer.Trace_ELBO):
    """:class:`pyro.infer.Trace_ELBO` with a shorter per-step path for reparameterized guides.

    Same estimator (Kingma & Welling 2013, eq. 6): for each of ``num_particles`` draws z ~ q, the loss
    is -[sum_model scale * log p - sum_guide scale * log q] (scale = N/M from the data plate). With
    validation off, vectorized particles off and every guide site reparameterized (zero score-function
    term), the loss is summed straight from the two traces: no trace copy (subsample sites are skipped
    instead of pruned), no per-site ``log_prob`` / ``score_parts`` bookkeeping, no ``.item()`` per site.
    Otherwise -- validation on (the trainer's first step), a score-function site, a GuideMessenger --
    the same traces go through Pyro's own ``Trace_ELBO`` arithmetic.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if (is_validation_enabled() or self.vectorize_particles
                or isinstance(poutine.unwrap(guide), poutine.messenger.Messenger)):
            return super().differentiable_loss(model, guide, *args, **kwargs)
        loss = 0.0
        for _ in range(self.num_particles):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            particle = _reparam_loss(model_trace, guide_trace)
            if particle is None:  # a score-function site: Pyro's arithmetic on these same traces
                model_trace, guide_trace = prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)
                model_trace.compute_log_prob()
                guide_trace.compute_score_parts()
                value, surrogate = self._differentiable_loss_particle(model_trace, guide_trace)
                particle = value + (surrogate - torch_item(surrogate))
            loss = loss + particle
        return loss / self.num_particles if self.num_particles > 1 else loss


def _site_terms(trace, guide: bool):
    for site in trace.nodes.values():
        if site["type"] == "sample" and not site_is_subsample(site):
            if guide:
                parts = site["fn"].score_parts(site["value"], *site["args"], **site["kwargs"])
                if not is_identically_zero(parts.score_function) or parts.entropy_term is not parts.log_prob:
                    raise _NotReparameterized
                log_p = parts.log_prob
            else:
                log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
            yield scale_and_mask(log_p, site["scale"], site["mask"]).sum()


class _NotReparameterized(Exception):
    pass


def _reparam_loss(model_trace, guide_trace):
    """-(sum of scaled model log-densities - sum of scaled guide log-densities), or None when a
    guide site needs the score-function estimator."""
    try:
        guide_terms = list(_site_terms(guide_trace, True))
    except _NotReparameterized:
        return None
    loss = sum(guide_terms[1:], guide_terms[0]) if guide_terms else 0.0
    for term in _site_terms(model_trace, False):
        loss = loss - term
    return loss


class LeanTraceMeanField_ELBO(pyro.infer.TraceMeanField_ELBO):
    """:class:`pyro.infer.TraceMeanField_ELBO` (estimator B: analytic KL where registered, Kingma &
    Welling 2013, eq. 7) whose loss is the surrogate itself. Pyro returns ``loss + (surrogate -
    float(surrogate))``, the same value for the fully reparameterized guides this objective requires,
    but the Python float becomes a constant in a traced graph (``fit(..., jit=True)``), which would
    then report stale values."""

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss + self._differentiable_loss_particle(model_trace, guide_trace)[1] / self.num_particles
        warn_if_nan(loss, "loss")
        return loss


register_elbo("trace", "Trace_ELBO: Monte Carlo KL (Kingma & Welling 2013, estimator A)")(_pyro_elbo(LeanTrace_ELBO))
register_elbo("meanfield", "TraceMeanField_ELBO: analytic KL where registered (estimator B)")(
    _pyro_elbo(LeanTraceMeanField_ELBO)
)
register_elbo("enum", "TraceEnum_ELBO: discrete latents summed out by enumeration", enumerates=True)(
    _pyro_elbo(pyro.infer.TraceEnum_ELBO)
)


@register_elbo("iwae", "importance-weighted bound, K = num_particles (Burda et al. 2015, eq. 8)", enumerates=True)
def _iwae(num_particles=1, vectorize_particles=True, max_plate_nesting=float("inf"), **options):
    return IWAE(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **options)


def make_elbo(
    name: str,
    *,
    has_discrete: bool,
    max_plate_nesting: int,
    num_particles: int = 1,
    vectorize_particles: bool = True,
    **options,
):
    """Build the objective ``name`` for a model (``has_discrete``: it has enumerable discrete latents).

    Returns ``(resolved_name, objective)``.
    """
    num_particles = check_int("num_particles", num_particles, low=1)
    if name == "auto":
        name = "enum" if has_discrete else "trace"
    if not isinstance(name, str) or name not in _ELBOS:
        raise PPVAEError(f"elbo: expected one of auto, {', '.join(sorted(_ELBOS))}; got {name!r}")
    factory, _, enumerates = _ELBOS[name]
    if has_discrete and not enumerates:
        choices = ", ".join(n for n, (_, _, e) in sorted(_ELBOS.items()) if e)
        raise PPVAEError(
            f"elbo: the model has discrete latent sites, which '{name}' cannot sum out; use {choices} (or auto)"
        )
    try:
        return name, factory(
            num_particles=num_particles,
            vectorize_particles=vectorize_particles and num_particles > 1,
            max_plate_nesting=max_plate_nesting,
            **options,
        )
    except TypeError as exc:
        raise PPVAEError(f"elbo_options: objective '{name}' does not accept {sorted(options)} ({exc})") from None
