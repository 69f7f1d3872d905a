"""SVI on the compiled potential: the reparameterized ELBO of a Gaussian guide over the unconstrained globals
at the cost of one potential gradient per particle and step.

For a model whose continuous latents are all global (discrete locals summed exactly, as for NUTS) the
:class:`ppvae.infer.mcmc.potential.Potential` gives U(u) = -log p(x, T(u)) - log|J_T(u)| and grad U on one flat
unconstrained vector u. For a guide q(u) = N(mu, L L^T), the ELBO is (Kucukelbir et al. 2017, ADVI, eqs. 5-7)

    ELBO(mu, L) = E_{eps ~ N(0, I)} [ -U(mu + L eps) ] + H[q],   H[q] = log|det L| + D/2 (1 + log 2 pi),

and its gradients are (eqs. 8-9, ``grad_mu``, ``grad_L``)

    d ELBO / d mu = E[-grad U(u)],   d ELBO / d L = E[-grad U(u) eps^T] + L^{-T},   u = mu + L eps.

The step estimates them with ``num_particles`` draws of eps and minimizes the Monte Carlo loss Pyro's
``Trace_ELBO`` / ``TraceEnum_ELBO`` report, -ELBO with the entropy as -log q(u) at the draw
(-log q(u) = |eps|^2 / 2 + log|det L| + D/2 log 2 pi, the same function of the parameters, so the two paths'
values and gradients agree to float rounding; ``tests/infer/svi/test_potential_svi.py``). The guide is Pyro's own
autoguide object, with its own parameters (``locs.*``/``scales.*`` of AutoNormal, ``loc``, ``scale``,
``scale_tril`` of AutoMultivariateNormal, ``cov_factor`` of AutoLowRankMultivariateNormal, one constrained
value per site of AutoDelta): they are views into one flat vector that one fused Adam steps, so ``predict``,
``evaluate``, ``save`` and ``load`` see an ordinary fitted autoguide.

Per step: one draw of eps, a small autograd graph from the flat parameters to u and log q (the guide's own
constraint transforms), the traced potential's value and gradient at u (the model's closed-form gradient
where it declares :class:`ppvae.ClosedFormPotential`, else autograd through the trace), one backward pass
of u . grad U + log q, one Adam step; with ``compile`` (:mod:`ppvae.infer.svi.compiled`) all but the draw and Adam
are one function compiled to C++. AutoDelta (MAP) minimizes -log p(x, theta) = U(u) + log|J_T(u)|.
With minibatches the potential is the generic one on the batch (the data plate scales it by N/M), traced
once per batch size with the data as input.

:func:`potential_path` decides whether a :class:`ppvae.Trainer` takes this path; :class:`PotentialSVI`
runs its steps.
"""

from __future__ import annotations

import math
import warnings

import pyro
import torch
from pyro import poutine
from torch.distributions import constraints, transform_to

from ppvae._util.validation import NonFiniteError, PPVAEError
from ppvae.data.loaders import Batch
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.svi.compiled import compile_step, trace, wants_compile, with_grad
from ppvae.infer.svi.config import batch_index
from ppvae.infer.svi.distributed import SingleProcess
from ppvae.infer.svi.steps import adam, fused_adam_step, make_scheduler, nonfinite_error, rng_state, set_rng_state
from ppvae.model.structure import declared_structure, is_local

__all__ = ["potential_path", "PotentialSVI", "FAST_GUIDES"]

FAST_GUIDES = ("auto_delta", "auto_normal", "auto_lowrank_mvn", "auto_mvn")
_FAST_ELBOS = ("trace", "enum")
_LOG_2PI = math.log(2 * math.pi)


def potential_path(trainer) -> tuple["PotentialSVI | None", str]:
    """(the engine, why) when the potential path applies to ``trainer``'s run, else (None, why not).

    It applies when the guide is one of :data:`FAST_GUIDES` given by name, the objective is the plain ELBO
    (``trace`` or ``enum``), ``jit`` is off, the run is single-process on fixed data, the model has no parameters of
    its own, every continuous latent is global and the model compiles to a :class:`ppvae.infer.mcmc.potential.Potential`
    whose trace equals the model's log density."""
    cfg = trainer.cfg
    reasons = [
        (cfg.guide not in FAST_GUIDES, f"guide '{cfg.guide}' is not one of {', '.join(FAST_GUIDES)}"),
        (trainer.elbo_name not in _FAST_ELBOS, f"objective '{trainer.elbo_name}' is not the plain ELBO"),
        (type(trainer.strategy) is not SingleProcess, "data-parallel training"),
        (trainer.dynamic_binarization, "dynamically binarized data"),
        (trainer.data.mask is not None, "data with missing values (the potential has no mask)"),
        (cfg.jit, "jit=True asks for the traced Pyro objective"),
        (any(p.requires_grad for p in trainer.model.parameters()), "the model has parameters of its own"),
    ]
    for applies, why in reasons:
        if applies:
            return None, why
    try:
        return PotentialSVI(trainer), "the model compiles to a potential over global latents"
    except _NotApplicable as exc:
        return None, str(exc)
    except (ValueError, RuntimeError, IndexError, TypeError) as exc:  # the model fails on its data: Pyro's path
        return None, f"the potential could not be evaluated ({type(exc).__name__}); Pyro's path reports why"


class _NotApplicable(Exception):
    pass


class PotentialSVI:
    """The steps of one :class:`ppvae.Trainer` run on the potential (module docstring). Sets the trainer's
    ``params`` (one flat vector), ``optim`` and ``scheduler`` so checkpoints and resume work unchanged."""

    def __init__(self, trainer):
        self.trainer, cfg, data = trainer, trainer.cfg, trainer.data
        self.kind, self.minibatch = cfg.guide, cfg.batch_size is not None
        probe = data.batch(torch.arange(cfg.batch_size, device=data.x.device)) if self.minibatch else data.batch()
        model = trainer.model
        with pyro.validation_enabled(False):
            tr = poutine.trace(model).get_trace(probe)
            if any(s["type"] == "param" for s in tr.nodes.values()):
                raise _NotApplicable("the model has pyro.param sites")
            try:
                self.potential = Potential(model, data.batch(), max_plate_nesting=trainer.max_plate_nesting,
                                           model=model, closed_form=not self.minibatch)
            except PPVAEError as exc:
                raise _NotApplicable(f"no potential ({exc})") from None
        groups = declared_structure(model) == "groups" and not self.minibatch  # group effects: globals
        if not groups and any(is_local(s) for s in self.potential.sites.values()):
            raise _NotApplicable("the model has continuous local latents")
        if self.potential.closed_form_gradient is not None:
            self.potential.check_closed_form(self._init_point(data))
        self.dim, self._energies = sum(self.potential._sizes), {}
        state = rng_state()  # the check below may run draws inside the model: put every RNG back after it
        try:
            self._check_trace(probe, self.potential.flatten(self._init_point(data)))
        finally:
            set_rng_state(state)
        self._setup_guide(trainer.guide, probe)
        self.flat = torch.nn.Parameter(torch.cat([p.detach().reshape(-1) for _, p, _ in self._params]))
        offset = 0
        with torch.no_grad():
            for _, p, _ in self._params:  # the guide's parameters become views into the one flat vector
                p.data = self.flat.data[offset: offset + p.numel()].view_as(p)
                offset += p.numel()
        self.noise_dim = self.dim + (self.rank if self.kind == "auto_lowrank_mvn" else 0)
        self.particles = 1 if self.kind == "auto_delta" else cfg.num_particles
        self._eye = torch.eye(self.dim, dtype=self.flat.dtype, device=self.flat.device)
        self._check_layout()
        trainer.params = [self.flat]
        self.compile, self.compile_reason = wants_compile(cfg.compile, trainer.total, self.minibatch, self.flat.device,
                                                          self.potential.closed_form_gradient is not None)
        self._step_fn = None  # the compiled step (ppvae/infer/svi/compiled.py), made on the first step
        self._closed_form_fn = None  # the traced step of a closed-form gradient, made on the first step

    def initialize(self) -> None:
        """The one Adam over the flat vector and its schedule, on the trainer (``Trainer.initialize`` on this path;
        the first step calls it, so there is nothing to save before it, as on Pyro's path)."""
        t = self.trainer
        t.optim = adam(t.params, t.cfg.lr, tuple(t.cfg.betas))
        t.scheduler = make_scheduler(t.optim, t.cfg, t.total)

    def _init_point(self, data) -> dict:
        init = self.trainer.model.init_values(data, torch.Generator().manual_seed(self.trainer.cfg.seed))
        values = {n: init[n] if n in init else s["value"] for n, s in self.potential.sites.items()}
        return {n: self.potential.transforms[n](v.to(data.x.dtype)) for n, v in values.items()}

    def _check_trace(self, batch: Batch, theta: torch.Tensor) -> None:
        """The traced potential must equal the model's own at a few points, and the model's own must be a function of
        theta: a model that draws inside (torch or numpy), or branches in Python on a value, has no fixed potential to
        trace, so it takes Pyro's path, which re-runs the model every step."""
        pot, gen = self.potential, torch.Generator().manual_seed(0)
        data = () if not self.minibatch else ((batch.x,) if batch.y is None else (batch.x, batch.y))
        energy = self._energy_fn(batch)
        for scale in (0.0, 0.1, 0.5):
            th = theta + scale * torch.randn(theta.shape, generator=gen, dtype=theta.dtype).to(theta.device)
            traced = float(energy(th, *data)[0])
            pot.batch = batch if self.minibatch else pot.batch
            with torch.no_grad(), pyro.validation_enabled(False):
                eager = [float(pot.eager_energy(pot.unflatten(th))) for _ in range(2)]
            close = [abs(a - b) <= 1e-4 * (1 + abs(b)) for a, b in ((eager[0], eager[1]), (traced, eager[0]))]
            if not close[0]:
                raise _NotApplicable(f"the model's log density is random at fixed latents ({eager[0]:.6g} then "
                                     f"{eager[1]:.6g}): a draw inside the model")
            if not close[1]:
                raise _NotApplicable(f"the traced potential ({traced:.6g}) differs from the model's ({eager[0]:.6g}): "
                                     "Python control flow on a value")

    # -- the guide's parameters ----------------------------------------------------------------------
    def _setup_guide(self, guide, probe: Batch) -> None:
        """Create the autoguide's parameters (its prototype trace) and record, per parameter, the
        constraint transform Pyro applies to it; check the guide covers exactly the potential's sites."""
        with pyro.validation_enabled(False), poutine.block():
            guide(probe)
        sites = [n for n, _ in guide.prototype_trace.iter_stochastic_nodes()]
        if sites != self.potential.names:
            raise _NotApplicable(f"the guide's sites {sites} are not the potential's {self.potential.names}")
        self._params = []
        for name, p in guide.named_parameters():
            owner_path, _, attr = name.rpartition(".")
            key = attr.removesuffix("_unconstrained")
            constraint = None if key == attr else self._constraint(guide, owner_path, key)
            transform = None if constraint is None else transform_to(constraint)
            self._params.append(((owner_path + "." if owner_path else "") + key, p, transform))
        self.rank = guide.rank if self.kind == "auto_lowrank_mvn" else 0

    def _constraint(self, guide, owner_path: str, key: str):
        """The constraint of a PyroParam of the autoguide, from the guide's public attributes (see Pyro's
        ``pyro/infer/autoguide/guides.py``: AutoDelta's values live on each site's support)."""
        if self.kind == "auto_delta":
            return guide.prototype_trace.nodes[key]["fn"].support
        if owner_path == "locs":
            return constraints.real
        return guide.scale_tril_constraint if key == "scale_tril" else guide.scale_constraint

    def _check_layout(self) -> None:
        """:meth:`_manual` reads AutoNormal's and AutoMVN's parameters at fixed offsets of the flat vector."""
        D, names = self.dim, [k for k, _, _ in self._params]
        expected = {"auto_normal": [f"locs.{n}" for n in self.potential.names] + [f"scales.{n}" for n in
                                                                                  self.potential.names],
                    "auto_mvn": ["loc", "scale", "scale_tril"]}.get(self.kind)
        if expected is not None and (names != expected or self.flat.numel() != D * (2 + (self.kind == "auto_mvn") * D)):
            raise PPVAEError(f"potential SVI: unexpected {self.kind} parameters {names}; expected {expected}")

    def _constrained(self, flat: torch.Tensor) -> dict:
        """Parameter name -> constrained value, computed from the flat vector (differentiable)."""
        values, offset = {}, 0
        for key, p, transform in self._params:
            view = flat[offset: offset + p.numel()].view(p.shape)
            values[key] = view if transform is None else transform(view)
            offset += p.numel()
        return values

    def sample(self, flat: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, log q(u)) for noise ``eps`` (S, noise_dim): u = mu + L eps (S, D), differentiable in ``flat``.
        For AutoDelta u is the point (1, D) and the second term is log|J_T(u)| (module docstring)."""
        c, pot = self._constrained(flat), self.potential
        if self.kind == "auto_delta":
            u = pot.flatten({n: pot.transforms[n](c[n]) for n in pot.names}).unsqueeze(0)
            return u, pot.constrain(pot.unflatten(u[0]))[1].reshape(1)
        const = -0.5 * (eps * eps).sum(-1) - 0.5 * self.dim * _LOG_2PI
        if self.kind == "auto_normal":
            mu = pot.flatten({n: c["locs." + n] for n in pot.names})
            sigma = pot.flatten({n: c["scales." + n] for n in pot.names})
            return mu + sigma * eps, const - sigma.log().sum()
        if self.kind == "auto_mvn":
            scale_tril = c["scale"].unsqueeze(-1) * c["scale_tril"]
            return c["loc"] + eps @ scale_tril.T, const - c["scale"].log().sum()  # unit-diagonal scale_tril
        scale, r = c["scale"], self.rank
        factor = c["cov_factor"] * scale.unsqueeze(-1)
        u = c["loc"] + eps[:, :r] @ factor.T + scale * eps[:, r:]
        q = pyro.distributions.LowRankMultivariateNormal(c["loc"], factor, scale * scale)
        return u, q.log_prob(u)

    # -- the potential ---------------------------------------------------------------------------------
    def _energy_fn(self, batch: Batch):
        """theta (D,) [, x, y] -> (U, grad U): the model's closed form or autograd through the trace, traced
        once (per batch size with minibatches, the data an input)."""
        pot = self.potential
        key = len(batch) if self.minibatch else None
        if key in self._energies:
            return self._energies[key]
        theta0 = torch.zeros(self.dim, dtype=batch.x.dtype, device=batch.x.device)
        if not self.minibatch:
            if pot.closed_form_gradient is not None:
                fn = trace(pot.closed_form_value_and_grad, (theta0,))
            else:
                traced = trace(lambda th: pot.eager_energy(pot.unflatten(th)), (theta0,))
                fn = with_grad(traced)
        else:
            size = batch.num_total
            inputs = (batch.x,) if batch.y is None else (batch.x, batch.y)

            def energy(th, *xy):
                pot.batch = Batch(xy[0], xy[1] if len(xy) > 1 else None, batch.index, size)
                return pot.eager_energy(pot.unflatten(th))

            fn = with_grad(trace(energy, (theta0, *inputs)))
        self._energies[key] = fn
        return fn

    def loss_and_grad(self, eps: torch.Tensor, batch: Batch, manual: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, d loss / d flat, grad U at the draws) for noise ``eps`` (S, noise_dim) on ``batch``:
        loss = mean_s [U(u_s) + log q(u_s)], the negative ELBO estimate (module docstring). ``manual``: the
        gradients of AutoNormal and AutoMultivariateNormal by hand (:meth:`_manual`), else by autograd."""
        if manual and self.compile:
            return self._compiled_step(eps)(self.flat.detach(), eps)
        energy = self._energy_fn(batch)
        data = () if not self.minibatch else ((batch.x,) if batch.y is None else (batch.x, batch.y))
        # TorchScript's profiling executor re-optimizes a traced graph after its first calls, which can change
        # the rounding; without it a step's numbers do not depend on how often the graph ran before (exact resume)
        with torch.jit.optimized_execution(False):
            if manual and self.kind in ("auto_normal", "auto_mvn"):
                if self.potential.closed_form_gradient is not None:  # no autograd anywhere: one traced graph
                    return self._closed_form_step(eps)(self.flat.detach(), eps)
                return self._manual(eps, energy, data)
            return self._autograd(eps, energy, data)

    def _closed_form_step(self, eps: torch.Tensor):
        """(flat, eps) -> (loss, grad, grads) for a model with a closed-form gradient: :meth:`_manual` and the model's
        closed form contain no autograd, so the whole step is traced once into one TorchScript graph (the guide's
        arithmetic then costs no Python per operation)."""
        if self._closed_form_fn is None:
            def step(flat, noise):
                return self._manual(noise, self.potential.closed_form_value_and_grad, (), flat)

            self._closed_form_fn = trace(step, (self.flat.detach().clone(), eps.clone()))
        return self._closed_form_fn

    def _compiled_step(self, eps: torch.Tensor):
        """(flat, eps) -> (loss, grad, grads) compiled once (:mod:`ppvae.infer.svi.compiled`); on failure, a warning
        and the traced path for the rest of the run."""
        if self._step_fn is None:
            pot = self.potential

            def energy(theta):  # eager: make_fx records the operations (autograd's included) it runs
                if pot.closed_form_gradient is not None:
                    return pot.closed_form_value_and_grad(theta)
                return with_grad(lambda th: pot.eager_energy(pot.unflatten(th)))(theta)

            def step(flat, noise):
                if self.kind in ("auto_normal", "auto_mvn"):
                    return self._manual(noise, energy, (), flat)
                return self._autograd(noise, energy, (), flat.detach().requires_grad_(True))

            try:
                self._step_fn = compile_step(step, (self.flat.detach().clone(), eps.clone()))
                self.compile_reason = f"compiled ({self.compile_reason})"
            except RuntimeError as exc:
                warnings.warn(f"potential SVI: {exc}; running the traced potential instead", stacklevel=2)
                self.compile, self.compile_reason = False, f"compilation failed ({exc})"
                return lambda flat, noise: self.loss_and_grad(noise, self.trainer.data.batch())
        return self._step_fn

    def _autograd(self, eps: torch.Tensor, energy, data: tuple, flat: torch.Tensor | None = None):
        flat = self.flat if flat is None else flat
        with torch.enable_grad():
            u, log_q = self.sample(flat, eps)
            values, grads = self._energies_at(energy, u.detach(), data)
            surrogate = ((grads * u).sum() + log_q.sum()) / u.shape[0]
            (grad,) = torch.autograd.grad(surrogate, flat)
        loss = (values.sum() + log_q.detach().sum()) / u.shape[0]
        return loss, grad, grads

    @staticmethod
    def _energies_at(energy, u: torch.Tensor, data: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        if u.shape[0] == 1:
            value, grad = energy(u[0], *data)
            return value.reshape(1), grad.unsqueeze(0)
        pairs = [energy(row, *data) for row in u]
        return torch.stack([v for v, _ in pairs]), torch.stack([g for _, g in pairs])

    def _manual(self, eps: torch.Tensor, energy, data: tuple, flat: torch.Tensor | None = None):
        """ADVI's gradients (Kucukelbir et al. 2017, eqs. 8-9) through Pyro's parametrization by hand, on the
        flat layout [loc (D), scale (D, softplus), scale_tril (D x D, unit lower triangular; AutoMVN only)]:
        with g_s = grad U(u_s), G = mean_s g_s eps_s^T and sigma = softplus(rho), L = diag(sigma) M,

            d/d loc = mean_s g_s,   d/d rho_i = (sum_j G_ij M_ij - 1 / sigma_i) sigmoid(rho_i),
            d/d M_ij = sigma_i G_ij  (i > j),

        with M = I for AutoNormal (the sum is then G_ii = mean_s g_si eps_si)."""
        D, S, flat = self.dim, eps.shape[0], (self.flat if flat is None else flat).detach()
        loc, rho = flat[:D], flat[D: 2 * D]
        sigma = torch.nn.functional.softplus(rho)
        log_q = -0.5 * (eps * eps).sum(-1) - 0.5 * D * _LOG_2PI - sigma.log().sum()
        if self.kind == "auto_normal":
            u = loc + sigma * eps
        else:
            tril = flat[2 * D:].view(D, D).tril(-1) + self._eye
            u = loc + eps @ (sigma.unsqueeze(-1) * tril).T
        values, grads = self._energies_at(energy, u, data)
        g_loc = grads.mean(0)
        if self.kind == "auto_normal":
            g_rho = ((grads * eps).mean(0) - 1 / sigma) * torch.sigmoid(rho)
            grad = torch.cat([g_loc, g_rho])
        else:
            outer = grads.T @ eps / S
            g_rho = ((outer * tril).sum(-1) - 1 / sigma) * torch.sigmoid(rho)
            grad = torch.cat([g_loc, g_rho, (sigma.unsqueeze(-1) * outer).tril(-1).reshape(-1)])
        return (values.sum() + log_q.sum()) / S, grad, grads

    # -- one step ------------------------------------------------------------------------------------
    def run_step(self) -> float:
        """One Adam step on step ``trainer.step``'s minibatch; the trainer's ``run_step`` on this path."""
        t, cfg = self.trainer, self.trainer.cfg
        if t.optim is None:
            self.initialize()
        index, b = batch_index(t.data, cfg, t.step)
        batch = t.data.batch(index)
        eps = torch.randn(self.particles, self.noise_dim, dtype=self.flat.dtype, device=self.flat.device)
        loss, grad, grads = self.loss_and_grad(eps, batch)
        value = loss.item()
        if not math.isfinite(value) or not math.isfinite(grad.sum().item()):
            raise self._nonfinite(value, grads, batch, b)
        self.flat.grad = grad
        if cfg.optimizer == "clipped_adam":
            torch.nn.utils.clip_grad_norm_(t.params, cfg.clip_norm)
        self._adam_step(t.optim)
        if t.scheduler is not None:
            t.scheduler.step()
        t.losses.append(value)
        t.step += 1
        return value

    def _adam_step(self, optim: torch.optim.Adam) -> None:
        fused_adam_step(optim, self.flat)

    def _nonfinite(self, value: float, grads: torch.Tensor, batch: Batch, b: int) -> NonFiniteError:
        """The trainer's non-finite error (the step, the model/guide sites whose log-probability is not finite on a
        replay through Pyro, non-finite data points), plus the potential's sites whose gradient is not finite."""
        base = nonfinite_error(self.trainer, value, batch, b, torch.get_rng_state())
        bad = [n for n, g in self.potential.unflatten(grads).items() if not torch.isfinite(g).all()]
        extra = f"; the potential's gradient is not finite at site(s) {', '.join(bad)}" if bad else ""
        return NonFiniteError(f"{base} (potential path{extra})")
