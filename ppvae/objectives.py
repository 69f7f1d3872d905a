"""Training objectives (ELBO estimators) by name.

* ``trace`` -- :class:`pyro.infer.Trace_ELBO`: the Monte Carlo KL estimator, "SGVB estimator A" of
  Kingma & Welling (2013), eq. 6: L(x) ~ 1/L sum_l [log p(x, z_l) - log q(z_l | x)].
* ``meanfield`` -- :class:`pyro.infer.TraceMeanField_ELBO`: the analytic KL where
  ``torch.distributions.kl_divergence`` has a closed form, "SGVB estimator B", eq. 7:
  L(x) ~ -KL(q(z|x) || p(z)) + 1/L sum_l log p(x | z_l).
* ``enum`` -- :class:`pyro.infer.TraceEnum_ELBO`: discrete latents marked for enumeration are summed
  out exactly (Obermeyer et al. 2019, "Tensor variable elimination for plated factor graphs").
* ``iwae`` -- the importance-weighted bound with K = ``num_particles`` (Burda et al. 2015, eq. 8) on
  the per-point log-weights of :mod:`ppvae._importance` (enumerated discrete latents summed exactly).
* ``auto`` -- ``enum`` when the model has discrete latent sites, else ``trace``.

Every objective exposes ``differentiable_loss(model, guide, *args)``; the trainer differentiates it
and steps one torch optimizer over all parameters.
"""

from __future__ import annotations

from typing import Callable

import pyro.infer

from ._validation import PPVAEError, check_int

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


register_elbo("trace", "Trace_ELBO: Monte Carlo KL (Kingma & Welling 2013, estimator A)")(_pyro_elbo(pyro.infer.Trace_ELBO))
register_elbo("meanfield", "TraceMeanField_ELBO: analytic KL where registered (estimator B)")(
    _pyro_elbo(pyro.infer.TraceMeanField_ELBO)
)
register_elbo("enum", "TraceEnum_ELBO: discrete latents summed out by enumeration", enumerates=True)(
    _pyro_elbo(pyro.infer.TraceEnum_ELBO)
)


@register_elbo("iwae", "importance-weighted bound, K = num_particles (Burda et al. 2015, eq. 8)", enumerates=True)
def _iwae(num_particles=1, vectorize_particles=True, max_plate_nesting=float("inf"), **options):
    from ._importance import IWAE  # per-point log-weights with enumerated discrete latents summed exactly

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
