"""The log joint density on the unconstrained space of all continuous latents, vectorized over draws.

For S points u_s of the flat unconstrained vector that :class:`ppvae.infer.mcmc.sampler.Potential` defines (every
continuous latent, global and local, through its ``biject_to`` transform T), this computes

    log pi(u_s) = log sum_z p(X, z, T(u_s)) + log |det J_T(u_s)|,      s = 1..S,

with discrete local latents z summed exactly (tensor variable elimination, ``ppvae.model.enumeration``): the
negative of the NUTS potential U(u) (see :mod:`ppvae.infer.mcmc.sampler`), whose integral over u is the evidence
p(X). The model is traced once per chunk of draws under a plate over draws left of its own plates,
so S evaluations cost one vectorized pass instead of S Python-level traces. Both evidence
estimators over all latents (bridge sampling, :mod:`ppvae.evaluate.bridge`, and AIS, :mod:`ppvae.evaluate.evidence_ais`)
use it; :func:`check_against_potential` compares it with the potential at one draw.
"""

from __future__ import annotations

import math

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError
from ppvae.data.loaders import Batch, Dataset
from ppvae.infer.importance import draws_broadcast, expand_to_shape, global_log_density
from ppvae.infer.mcmc.potential import Potential
from ppvae.model.enumeration import enumerated_log_likelihood, outside_terms

DRAWS = "_ppvae_joint_draws"

__all__ = ["potential_for", "log_joint_at", "log_density", "unconstrained_draws", "check_against_potential",
           "ordered_log_count"]


def potential_for(model, data: Dataset, order=None) -> Potential:
    """The NUTS potential of ``model`` on all of ``data`` (the generic autograd path, no closed form)."""
    batch = data.batch()
    with pyro.validation_enabled(False):
        return Potential(model, batch, max_plate_nesting=model.max_plate_nesting(batch), model=model,
                         order=tuple(order) if order else None, closed_form=False)


def _place(value: torch.Tensor, site: dict, num: int, mpn: int) -> torch.Tensor:
    """(S, *site shape) -> a shape whose draw dim sits at -(mpn + 1) of the site's batch dims."""
    shape = tuple(site["value"].shape)
    batch_dims = len(shape) - site["fn"].event_dim
    pad = mpn - batch_dims
    if pad < 0:
        raise PPVAEError(f"model: site '{site['name']}' has {batch_dims} batch dims but the model declares only "
                         f"{mpn} plate dims; put its batch dims in plates or use .to_event()")
    return value.reshape((num,) + (1,) * pad + shape)


def log_joint_at(potential: Potential, values: dict, num: int) -> torch.Tensor:
    """log sum_z p(X, z, theta_s) of shape (S,) for constrained ``values`` (site -> (S, *shape))."""
    mpn, batch = potential.mpn, potential.batch
    placed = {n: _place(v, potential.sites[n], num, mpn) for n, v in values.items()}
    with draws_broadcast(potential.fn, num, list(values)), pyro.validation_enabled(False), \
            pyro.plate(DRAWS, num, dim=-(mpn + 1)):
        if potential._enumerates:  # the one pointwise likelihood, inside the plate of draws
            local, trace = enumerated_log_likelihood(potential.fn, batch, placed, max_plate_nesting=mpn + 1,
                                                     validate=None, with_trace=True)
        else:
            trace = poutine.trace(poutine.condition(potential.fn, data=placed)).get_trace(batch)
    sample = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    if not potential._enumerates:
        return global_log_density(trace, sample, num, mpn)
    outside = outside_terms(trace)
    local = expand_to_shape(local, (num, len(batch))).double().sum(-1)
    return local + global_log_density(trace, outside, num, mpn).to(local.device)


def log_density(potential: Potential, theta: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """log pi(u) (module docstring) at flat unconstrained draws ``theta`` (S, D) -> float64 (S,).

    Differentiable in ``theta``; evaluated ``chunk`` draws per vectorized pass."""
    if theta.dim() != 2:
        raise PPVAEError(f"theta: expected draws of shape (S, D); got {tuple(theta.shape)}")
    parts = [_log_density(potential, theta[i:i + chunk]) for i in range(0, theta.shape[0], chunk)]
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _log_density(potential: Potential, theta: torch.Tensor) -> torch.Tensor:
    num = theta.shape[0]
    params = potential.unflatten(theta)
    values, ladj = {}, torch.zeros(num, dtype=torch.float64, device=theta.device)
    for name, transform in potential.transforms.items():
        u = params[name]
        v = transform.inv(u)
        jac = transform.inv.log_abs_det_jacobian(u, v)
        ladj = ladj + (jac.reshape(num, -1).sum(-1) if jac.dim() else jac.expand(num)).double()
        values[name] = v
    return log_joint_at(potential, values, num) + ladj


def unconstrained_draws(potential: Potential, samples: dict) -> torch.Tensor:
    """Constrained draws (site -> (chains, draws, *shape)) -> flat unconstrained (chains, draws, D)."""
    missing = sorted(set(potential.names) - set(samples))
    if missing:
        raise PPVAEError(f"mcmc: the draws lack the model's continuous latent site(s) {', '.join(missing)}")
    u = {}
    for name in potential.names:
        v = torch.as_tensor(samples[name])
        want = tuple(potential.sites[name]["value"].shape)
        if v.dim() != len(want) + 2 or tuple(v.shape[2:]) != want:
            raise PPVAEError(f"mcmc: draws of site '{name}' should have shape (chains, draws, *{want}); "
                             f"got {tuple(v.shape)}")
        u[name] = potential.transforms[name](v.to(potential.batch.x.dtype))
    return potential.flatten(u)


def check_against_potential(potential: Potential, theta: torch.Tensor, rtol: float = 1e-5) -> None:
    """log pi at the first draw must equal -U from :class:`Potential` (one un-vectorized trace):
    a mismatch means the vectorized trace broadcast a site wrongly, so refuse instead of estimating."""
    with torch.no_grad():
        fast = float(log_density(potential, theta[:1])[0])
        slow = -float(potential.energy(theta[0].detach()))
    if not abs(fast - slow) <= rtol * (1 + abs(slow)):
        raise PPVAEError(f"model: the vectorized log joint ({fast:.8g}) disagrees with the NUTS potential "
                         f"({slow:.8g}) at a draw; the model's sites do not broadcast over a plate of draws "
                         "(give every batch dim a pyro.plate)")


def ordered_log_count(potential: Potential) -> float:
    """log K! when the draws were made in the ordered region of a K-component site (``order=``): the
    integral over that region is p(X) / K! for a model symmetric in its component labels."""
    if potential.order is None:
        return 0.0
    return math.lgamma(potential.sites[potential.order[0]]["value"].shape[0] + 1)


def dataset_of(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, Batch):
        return Dataset(data.x, data.y)
    return Dataset(data, name="data")
