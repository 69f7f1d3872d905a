"""Lower-variance gradient estimators for reparameterized guides: ``stl`` and ``iwae_dreg``.

Both keep the objective's VALUE and change only its gradient with respect to the guide's parameters phi.
With z = g_phi(eps) a reparameterized draw, the total derivative of the guide's log-density splits as

    d/dphi log q_phi(z) = d log q_phi(z)/dz * dz/dphi  (path)  +  d log q_phi(z)/dphi |_z fixed  (score),

and the score term has expectation zero, E_q[d/dphi log q_phi(z)] = 0, so dropping it leaves the gradient unbiased.

* ``stl`` -- "sticking the landing" (Roeder, Wu & Duvenaud 2017, "Sticking the landing: simple, lower-variance
  gradient estimators for variational inference", eq. 8): the ELBO of ``trace`` (``enum`` where the model has
  discrete latents, summed out exactly) with the guide's log-density evaluated at detached parameters, so only
  the path term remains. When q(z) equals the posterior, log p(x, z) - log q(z) = log p(x) is constant in z and
  every single-sample gradient of the guide's parameters is exactly zero (zero variance at the optimum).
* ``iwae_dreg`` -- the doubly reparameterized gradient of the importance-weighted bound (Tucker, Lawson, Gu &
  Maddison 2019, "Doubly reparameterized gradient estimators for Monte Carlo objectives", eq. 5-6): with
  log w_k = log p(x, z_k) - log q_phi(z_k) and normalized weights w~_k = w_k / sum_j w_j,

      grad_phi L_K = E[ sum_k w~_k^2 * d log w_k / dz_k * dz_k/dphi ],     grad_theta L_K as for ``iwae``.

  Discrete latents of the model are summed exactly inside each weight, as for ``iwae``.

Implementation (no copy of any distribution): the score term is computed from the guide's own distribution
objects at a DETACHED copy of the draw, log q_phi(stop_grad(z)), whose gradient is exactly the score; subtracting
``a - stop_grad(a)`` of it from the loss removes the score and adds exactly zero to the value. This equals
evaluating log q at detached parameters, log q_{stop_grad(phi)}(z) (checked in tests/infer/svi/test_estimators.py
against a hand-written detached Normal), and works for every guide whose sites are reparameterized: the
amortized encoders, ``auto_normal``, ``auto_mvn``, ``auto_lowrank_mvn``, ``auto_iaf`` (its inverse is recomputed at
the detached draw). ``Delta`` sites (the autoguides' constrained values: their log-density is the Jacobian of the
unconstraining map, a function of the draw only) carry no score and are left as they are. A guide site
without ``rsample`` (a discrete or score-function site) is refused, naming the site. For ``iwae_dreg`` the extra
factor w~_k on the path term is applied by a gradient hook on each draw z_k, so the objective runs eagerly
(``fit(..., jit=True)`` falls back to eager for it, silently: the traced graph cannot hold the hook).
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pyro.distributions as dist
import pyro.infer
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError
from ppvae.infer.importance import IWAE, global_log_density, local_log_weights
from ppvae.infer.svi.objectives import LeanTrace_ELBO, register_elbo
from ppvae.model.enumeration import data_plate_log_prob
from ppvae.model.structure import DATA_PLATE, is_local, structure_of

__all__ = ["STL", "IWAEDReG"]


def _base_distribution(fn):
    while isinstance(fn, (dist.Independent, dist.MaskedDistribution, dist.ExpandedDistribution)):
        fn = fn.base_dist
    return fn


def has_score_term(msg, elbo: str) -> bool:
    """Whether a guide sample site carries a score term: a latent (not observed, not a subsample index) that
    is not a ``Delta``. Raises when such a site cannot be reparameterized (its name and distribution said)."""
    if msg["type"] != "sample" or msg["is_observed"] or site_is_subsample(msg):
        return False
    fn = msg["fn"]
    if isinstance(_base_distribution(fn), dist.Delta):
        return False
    if not getattr(fn, "has_rsample", False):
        raise PPVAEError(f"elbo '{elbo}': guide site '{msg['name']}' ({type(_base_distribution(fn)).__name__}) is not "
                         "reparameterized; it needs every guide site to have rsample (use trace, enum or iwae)")
    return True


class _ScoreRecorder(poutine.messenger.Messenger):
    """Inside the guide: for each latent site, the scaled and masked log q_phi(stop_grad(z)) (gradient = score)."""

    def __init__(self, elbo: str):
        super().__init__()
        self.elbo, self.passes = elbo, []

    def __enter__(self):
        self.passes.append(0.0)
        return super().__enter__()

    def _postprocess_message(self, msg):
        if has_score_term(msg, self.elbo):
            lp = msg["fn"].log_prob(msg["value"].detach())
            self.passes[-1] = self.passes[-1] + scale_and_mask(lp, msg["scale"], msg["mask"]).sum()


class STL:
    """``trace`` (or ``enum`` for a model with discrete latents) with the path-derivative gradient of Roeder et
    al. (2017, eq. 8): loss = -ELBO - (S - stop_grad(S)), S = sum over guide sites of log q_phi(stop_grad(z)),
    averaged over particles. Same value as the base objective; the score term of the guide's parameters is gone."""

    def __init__(self, num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf")):
        kw = dict(num_particles=num_particles, vectorize_particles=vectorize_particles,
                  max_plate_nesting=max_plate_nesting)
        self.num_particles, self.vectorize_particles = num_particles, vectorize_particles
        self.trace, self.enum = LeanTrace_ELBO(**kw), pyro.infer.TraceEnum_ELBO(**kw)
        self._discrete: dict[int, bool] = {}

    def base(self, model, *args):
        """The base objective for this model: TraceEnum_ELBO where it has discrete latent sites, else Trace_ELBO."""
        key = id(model)
        if key not in self._discrete:
            self._discrete[key] = bool(args) and bool(structure_of(model, args[0]).discrete_sites)
        return self.enum if self._discrete[key] else self.trace

    def differentiable_loss(self, model, guide, *args, **kwargs):
        recorder = _ScoreRecorder("stl")

        def recorded_guide(*a, **k):  # a plain function, so LeanTrace_ELBO keeps its short path
            with recorder:
                return guide(*a, **k)

        loss = self.base(model, *args).differentiable_loss(model, recorded_guide, *args, **kwargs)
        # the last passes are the particles' (a base objective may trace the guide once more to guess plates)
        kept = recorder.passes[-(1 if self.vectorize_particles else self.num_particles):]
        score = sum(kept[1:], kept[0]) / self.num_particles if kept else 0.0
        return loss - (score - score.detach()) if torch.is_tensor(score) else loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        return self.base(model, *args).loss(model, guide, *args, **kwargs)


class _GradScale:
    """Gradient hooks that multiply d loss / d z_k by the normalized weight w~_k of z_k's particle (set after the
    forward pass, read by the hooks during the backward one). With one particle the factor is 1: no hook."""

    def __init__(self, num: int, max_plate_nesting: int):
        self.num, self.mpn, self.weights = num, max_plate_nesting, None
        self.names: list[str] = []

    def add(self, msg) -> None:
        self.names.append(msg["name"])
        if self.num == 1 or not msg["value"].requires_grad:
            return
        data_dim = next(f.dim for f in msg["cond_indep_stack"] if f.name == DATA_PLATE)
        shape, event_dim = tuple(msg["value"].shape), msg["fn"].event_dim  # no tensor captured: no reference cycle
        msg["value"].register_hook(lambda g: g * self._weights_like(shape, event_dim, data_dim).to(g.dtype))

    def _weights_like(self, shape, event_dim: int, data_dim: int) -> torch.Tensor:
        nbatch = len(shape) - event_dim
        view = [1] * len(shape)
        view[nbatch - (self.mpn + 1)] = self.weights.shape[0]
        view[nbatch + data_dim] = shape[nbatch + data_dim]
        w = self.weights
        if shape[nbatch + data_dim] != w.shape[1]:  # a single point evaluated as two copies of it
            w = w[:, :1].expand(-1, shape[nbatch + data_dim])
        return w.reshape(view)


class _Hooks(poutine.messenger.Messenger):
    def __init__(self, scale: _GradScale):
        super().__init__()
        self.scale = scale

    def _postprocess_message(self, msg):
        if has_score_term(msg, "iwae_dreg") and is_local(msg):
            self.scale.add(msg)


def _score(proposal_trace, names) -> torch.Tensor:
    """Per-particle, per-point sum of log q_phi(stop_grad(z)) over the guide's local latent sites ``names``."""
    detached = copy.copy(proposal_trace)
    detached.nodes = OrderedDict()
    for name, site in proposal_trace.nodes.items():
        if name in names:
            site = {k: v for k, v in site.items() if k not in ("log_prob", "unscaled_log_prob", "log_prob_sum")}
            site["value"] = site["value"].detach()
        detached.nodes[name] = site
    return data_plate_log_prob(detached, include=lambda n, s: n in names)


class IWAEDReG(IWAE):
    """The importance-weighted bound of :class:`ppvae.infer.importance.IWAE` (same value, same theta-gradient) with
    the doubly reparameterized phi-gradient of Tucker et al. (2019, eq. 6), for the local latents:

        loss = -[ log p(G) - log q(G) + N/M sum_i ( log (1/K) sum_k w_ik + sum_k w~_ik (S_ik - stop_grad(S_ik)) ) ],

    S_ik = log q_phi(stop_grad(z_ik) | x_i) (its gradient is the score, so the second sum removes it), and a hook
    on each draw z_ik multiplies the path gradient reaching it, w~_ik * d log w_ik / dz_ik, by w~_ik once more.
    Global latents G (drawn once per step) keep the ordinary reparameterized ELBO gradient. K = 1 is ``stl``."""

    traceable = False  # the trainer runs it eagerly: a traced graph drops the gradient hooks

    def differentiable_loss(self, model, guide, batch) -> torch.Tensor:
        if torch.jit.is_tracing():
            raise RuntimeError("iwae_dreg scales gradients by tensor hooks, which a traced graph cannot hold")
        mpn = self._mpn(model, batch)
        globals_, log_q_g = {}, torch.zeros(())
        if not self._no_globals.get((id(model), id(guide))):
            globals_, log_q_g = self._globals(model, guide, batch)
        hooks = _GradScale(self.num_particles, mpn)
        log_w, traces = local_log_weights(model, _Hooks(hooks)(guide), batch, self.num_particles, mpn, globals_)
        hooks.weights = torch.softmax(log_w.detach(), dim=0)  # w~_ik, read by the hooks in the backward pass
        local = self._log_mean_exp(log_w)
        if hooks.names:
            score = _score(traces["proposal"], set(hooks.names)).expand_as(log_w)
            local = local + (hooks.weights * (score - score.detach())).sum(0)
        log_p_g = 0.0
        model_globals = [n for n, s in traces["model"].nodes.items() if s["type"] == "sample" and n in globals_]
        if model_globals:
            log_p_g = global_log_density(traces["model"], model_globals, self.num_particles, mpn).mean()
        return -(log_p_g - log_q_g + (batch.num_total / len(batch)) * local.sum())

    def _globals(self, model, guide, batch):
        """One draw of the guide's global latents (values to condition on) and its log-density."""
        gtr = poutine.trace(guide).get_trace(batch)
        names = [n for n, s in gtr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
                 and not is_local(s) and not site_is_subsample(s)]
        self._no_globals[(id(model), id(guide))] = not names
        values = {n: gtr.nodes[n]["value"] for n in names if not gtr.nodes[n]["infer"].get("is_auxiliary")}
        log_q = sum((gtr.nodes[n]["fn"].log_prob(gtr.nodes[n]["value"]).sum() for n in names), torch.zeros(()))
        return values, log_q


@register_elbo("stl", "Trace_ELBO (enum for discrete latents) with the path-derivative gradient (Roeder et al. 2017)",
               enumerates=True)
def _stl(num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf")):
    return STL(num_particles=num_particles, vectorize_particles=vectorize_particles,
               max_plate_nesting=max_plate_nesting)


@register_elbo("iwae_dreg", "iwae with doubly reparameterized gradients, K = num_particles (Tucker et al. 2019)",
               enumerates=True)
def _iwae_dreg(num_particles=1, vectorize_particles=True, max_plate_nesting=float("inf")):
    return IWAEDReG(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
