"""The potential NUTS and HMC sample: U(u) = -log p(x, T(u)) - log|J_T(u)| over a model's continuous latents,
with every discrete local latent summed out (the math is in :mod:`ppvae.infer.mcmc.sampler`'s docstring).

:class:`Potential` flattens all continuous latents into one unconstrained vector (Pyro's kernel then loops
over one site per leapfrog step), takes the model's closed-form likelihood and gradient where it declares
:class:`ppvae.ClosedFormPotential` (checked against autograd at the start), and compiles the computation
with ``torch.jit.trace`` on request. ``_OrderedColumn`` is the ordering transform behind ``order=``.
Used by :mod:`ppvae.infer.mcmc.sampler`, :mod:`ppvae.infer.mcmc.local` and :mod:`ppvae.evaluate.joint`.
"""
from __future__ import annotations

import warnings
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import OrderedTransform
from pyro.poutine.runtime import NonlocalExit
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

from ppvae._util.validation import PPVAEError
from ppvae.data.loaders import Batch
from ppvae.model.base import DATA_PLATE, ClosedFormPotential, Model, is_local, latent_sites
from ppvae.model.enumeration import DRAWS_PLATE, enumerated_log_likelihood, outside_terms


# -- transforms --------------------------------------------------------------------------------------
class _OrderedColumn(Transform):
    """R^{K x D} -> {mu : mu_1c < ... < mu_Kc}: column ``c`` through ``OrderedTransform``, the rest as is."""

    domain = constraints.independent(constraints.real, 2)
    codomain = constraints.independent(constraints.real, 2)
    bijective = True

    def __init__(self, column: int, cache_size: int = 0):
        super().__init__(cache_size=cache_size)
        self.column, self._ordered = column, OrderedTransform()

    def _call(self, u):
        col = self._ordered(u[..., self.column])
        return torch.cat([u[..., : self.column], col.unsqueeze(-1), u[..., self.column + 1:]], -1)

    def _inverse(self, y):
        col = self._ordered.inv(y[..., self.column])
        return torch.cat([y[..., : self.column], col.unsqueeze(-1), y[..., self.column + 1:]], -1)

    def log_abs_det_jacobian(self, u, y):
        return self._ordered.log_abs_det_jacobian(u[..., self.column], y[..., self.column])


def _check_enumerable(sites: dict) -> None:
    for name, site in sites.items():
        fn = site["fn"]
        if fn.support.is_discrete and not getattr(fn, "has_enumerate_support", False):
            raise PPVAEError(
                f"model: discrete latent site '{name}' ({type(fn).__name__}) has no finite support to enumerate; "
                "NUTS/HMC need every discrete latent summed out (give it a finite support or marginalize it by hand)")
        if fn.support.is_discrete and not is_local(site):
            raise PPVAEError(f"model: discrete latent site '{name}' lies outside pyro.plate('{DATA_PLATE}'); "
                             "ppvae's MCMC enumerates only per-data-point discrete latents")


# -- the potential -----------------------------------------------------------------------------------
class Potential:
    """U(u) = -log p(x, T(u)) - log|J_T(u)| with discrete locals summed (see module docstring).

    ``transforms`` maps each sampled site's constrained value to unconstrained space (Pyro's MCMC
    convention); calling the object on a dict of unconstrained tensors returns the scalar energy.
    """

    def __init__(self, fn: Callable, batch: Batch, *, max_plate_nesting: int, model: Model | None = None,
                 order: tuple[str, int] | None = None, closed_form: bool = True, jit: bool = False):
        self.fn, self.batch, self.mpn = fn, batch, max_plate_nesting
        with poutine.block(), pyro.validation_enabled(False):
            trace = poutine.trace(fn).get_trace(batch)
        sites = latent_sites(trace)
        _check_enumerable(sites)
        self.sites = {n: s for n, s in sites.items() if not s["fn"].support.is_discrete}
        self._enumerates = len(self.sites) < len(sites)
        if not self.sites:
            raise PPVAEError("model: it has no continuous latent sites for NUTS/HMC to sample")
        self.transforms = {n: biject_to(s["fn"].support).inv for n, s in self.sites.items()}
        if order is not None:
            self._set_order(*order)
        self.order = order
        self._globals = [n for n, s in self.sites.items() if not is_local(s)]
        hook = model.pointwise_log_likelihood if isinstance(model, ClosedFormPotential) else None
        only_discrete_locals = all(not is_local(s) for s in self.sites.values())
        self.closed_form = bool(closed_form and hook is not None and only_discrete_locals and self._prefix_ok(trace))
        self._hook = hook
        self.names = list(self.sites)
        # unconstrained shapes (a K-simplex has K - 1 free coordinates)
        self.shapes = {n: self.transforms[n](s["value"]).shape for n, s in self.sites.items()}
        self._sizes = [s.numel() for s in self.shapes.values()]
        # the batch dims of each site's value (its shape less its event shape): where a plate of draws goes left
        self._batch_dims = {n: s["value"].dim() - len(s["fn"].event_shape) for n, s in self.sites.items()}
        energy_hook = model.closed_form_potential if self.closed_form else None  # closed_form: a ClosedFormPotential
        self.closed_form_gradient = energy_hook(batch.x, order) if energy_hook is not None else None
        self.gradient = "closed form" if self.closed_form_gradient is not None else "autograd"
        self._compiled, self._chain_compiled = None, {}
        self.jit = jit

    def _set_order(self, name: str, column: int) -> None:
        if name not in self.sites:
            raise PPVAEError(f"order: expected a continuous latent site among {', '.join(self.sites)}; got '{name}'")
        site = self.sites[name]
        if site["fn"].support is not constraints.real and not _is_real(site["fn"].support):
            raise PPVAEError(f"order: site '{name}' must have real support to be ordered; got {site['fn'].support}")
        shape = site["value"].shape
        if len(shape) != 2 or not 0 <= column < shape[-1]:
            raise PPVAEError(f"order: expected a column index in [0, {shape[-1] if len(shape) == 2 else 0}) of the "
                             f"(K, D) site '{name}'; got {column} for shape {tuple(shape)}")
        self.transforms[name] = _OrderedColumn(column).inv

    # -- the log joint ----------------------------------------------------------------------------
    def _prefix_ok(self, trace) -> bool:
        """The closed form needs every global latent declared before the data plate."""
        prefix = self._prior_trace({n: s["value"] for n, s in self.sites.items()})
        return set(self._globals) <= set(prefix) and all(not is_local(s) for s in prefix.values())

    def _prior_trace(self, values: dict) -> dict:
        def at_data(msg):
            return msg["type"] == "sample" and not site_is_subsample(msg) and is_local(msg)

        with poutine.trace() as tr, pyro.validation_enabled(False):
            try:
                poutine.escape(poutine.condition(self.fn, data=values), escape_fn=at_data)(self.batch)
            except NonlocalExit:
                pass
        return {n: s for n, s in tr.trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)}

    def log_joint(self, values: dict) -> torch.Tensor:
        """log p(x, theta) with discrete locals summed out, at constrained ``values``; on a minibatch of M of N
        points (``batch.index``) the likelihood is scaled by N / M, as the data plate scales it in SVI."""
        scale = self.batch.num_total / len(self.batch) if self.batch.index is not None else 1.0
        if self.closed_form:
            prior = sum(s["fn"].log_prob(s["value"]).sum() for s in self._prior_trace(values).values())
            return prior + self._hook(values, self.batch.x).sum() * scale
        if not self._enumerates:  # nothing to sum out: the plain log joint
            return poutine.trace(poutine.condition(self.fn, data=values)).get_trace(self.batch).log_prob_sum()
        local, trace = enumerated_log_likelihood(self.fn, self.batch, values, max_plate_nesting=self.mpn,
                                                 with_trace=True)
        total = local.sum() * scale if scale != 1.0 else local.sum()
        for name in outside_terms(trace):
            total = total + trace.nodes[name]["log_prob"].sum()  # compute_log_prob ran in data_plate_log_prob
        return total

    def constrain(self, params: dict) -> tuple[dict, torch.Tensor]:
        values, ladj = {}, 0.0
        for name, t in self.transforms.items():
            values[name] = t.inv(params[name])
            ladj = ladj + t.inv.log_abs_det_jacobian(params[name], values[name]).sum()
        return values, ladj

    def eager_energy(self, params: dict) -> torch.Tensor:
        """U = -(log p(X, T(u)) + log|det J_T(u)|) at the unconstrained ``params`` (site -> tensor), run eagerly
        through the model's trace (what the compiled energy traces once)."""
        values, ladj = self.constrain(params)
        with pyro.validation_enabled(False):
            return -(self.log_joint(values) + ladj)

    # -- one flat vector for the sampler ----------------------------------------------------------
    def flatten(self, params: dict) -> torch.Tensor:
        """Sites (each shaped ``batch + site shape``) -> one tensor ``batch + (n,)`` in ``self.names`` order."""
        lead = params[self.names[0]].shape[: params[self.names[0]].dim() - len(self.shapes[self.names[0]])]
        return torch.cat([params[n].reshape(lead + (-1,)) for n in self.names], -1)

    def unflatten(self, theta: torch.Tensor) -> dict:
        """Inverse of :meth:`flatten`."""
        parts = theta.split(self._sizes, -1)
        return {n: p.reshape(theta.shape[:-1] + self.shapes[n]) for n, p in zip(self.names, parts, strict=True)}

    def closed_form_value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, dU/dtheta) from the model's ``closed_form_potential``."""
        value, grads = self.closed_form_gradient(self.unflatten(theta))
        return value, self.flatten(grads)

    def energy(self, theta: torch.Tensor) -> torch.Tensor:
        """U at the flat unconstrained vector ``theta`` (what the NUTS/HMC kernel sees).

        The sampler sees one site, not one per latent: Pyro's integrator and mass-matrix adapter
        loop over sites in Python on every leapfrog step. With a model's ``closed_form_potential``
        the gradient comes from it (an autograd node that returns it) instead of from autograd.
        ``jit`` compiles the whole computation with ``torch.jit.trace`` on the first call.
        """
        fn = self.closed_form_value_and_grad if self.closed_form_gradient is not None else (
            lambda th: self.eager_energy(self.unflatten(th)))
        if self.jit:
            if self._compiled is None:
                self._compiled = self._trace(fn, theta)
            fn = self._compiled
        if self.closed_form_gradient is None:
            return fn(theta)
        return _GivenGradient.apply(theta, fn)

    def chain_energies(self, theta: torch.Tensor) -> torch.Tensor:
        """U at each row of ``theta`` (C, n), one model run over a leading plate of C draws
        (:func:`ppvae.model.enumeration.enumerated_log_likelihood` with ``num_draws``): the vectorized-chains
        sampler's potential. Needs a model that broadcasts over draws of its globals and no continuous locals."""
        params = self.unflatten(theta)
        values, ladj = {}, 0.0
        for name, t in self.transforms.items():
            values[name] = t.inv(params[name])
            jac = t.inv.log_abs_det_jacobian(params[name], values[name])
            ladj = ladj + jac.reshape(len(theta), -1).sum(-1)
        scale = self.batch.num_total / len(self.batch) if self.batch.index is not None else 1.0
        if self.closed_form:
            return -(torch.stack([self.log_joint({n: v[c] for n, v in values.items()})
                                  for c in range(len(theta))]) + ladj)
        if not self._enumerates:  # nothing to sum out: each site's log-density, the draws dim kept
            return -(self._plated_log_joint(values, len(theta)) + ladj)
        local, trace = enumerated_log_likelihood(self.fn, self.batch, values, num_draws=len(theta),
                                                 max_plate_nesting=self.mpn, with_trace=True)
        total = local.sum(-1) * scale
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site) and not is_local(site):
                total = total + site["log_prob"].reshape(len(theta), -1).sum(-1)
        return -(total + ladj)

    def _plated_log_joint(self, values: dict, num: int) -> torch.Tensor:
        """log p(x, theta_c) for each of ``num`` draws (site -> (num, ...)) by one trace under a plate of draws
        left of the model's plates (no enumeration; the data plate's own scale applies to minibatches)."""
        shaped = {n: v.reshape((num,) + (1,) * (self.mpn - self._batch_dims[n]) + tuple(v.shape[1:]))
                  for n, v in values.items()}

        def plated(batch):
            with pyro.plate(DRAWS_PLATE, num, dim=-self.mpn - 1):
                return self.fn(batch)

        trace = poutine.trace(poutine.condition(plated, data=shaped)).get_trace(self.batch)
        total = 0.0
        for site in trace.nodes.values():
            if site["type"] == "sample" and not site_is_subsample(site):
                lp = site["fn"].log_prob(site["value"])
                lp = lp * site["scale"] if not isinstance(site["scale"], float) or site["scale"] != 1.0 else lp
                draws_dim = lp.dim() == self.mpn + 1 and lp.shape[0] == num  # else the same for every draw
                total = total + (lp.reshape(num, -1).sum(-1) if draws_dim else lp.sum())
        return total

    def chain_value_and_grad(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, dU/dtheta) at each row of ``theta`` (C, n): :meth:`chain_energies` and one backward pass (the rows
        are independent, so the gradient of their sum is each row's gradient)."""
        if self.closed_form_gradient is not None:
            pairs = [self.closed_form_value_and_grad(row) for row in theta]
            return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
        fn = self.chain_energies
        if self.jit:  # one compiled graph per number of chains (the plate of draws has that size)
            if theta.shape[0] not in self._chain_compiled:
                self._chain_compiled[theta.shape[0]] = self._trace(self.chain_energies, theta)
            fn = self._chain_compiled[theta.shape[0]]
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            with pyro.validation_enabled(False):
                energies = fn(leaf)
            (grad,) = torch.autograd.grad(energies.sum(), leaf)
        return energies.detach(), grad

    @staticmethod
    def _trace(fn, theta: torch.Tensor):
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", ".*torch.jit.trace. is deprecated", DeprecationWarning)
            return torch.jit.trace(fn, (theta.detach(),), check_trace=False)

    def __call__(self, params: dict) -> torch.Tensor:
        """U at a dict of unconstrained site values (differentiable in them)."""
        return self.energy(self.flatten(params))

    def check_closed_form(self, params: dict, rtol: float = 1e-4) -> None:
        """Compare the model's closed-form U and gradient with autograd on the generic potential at
        ``params``; a mismatch is a bug in the model's hook, so raise rather than sample the wrong target."""
        if self.closed_form_gradient is None:
            return
        theta = self.flatten({n: v.detach() for n, v in params.items()})
        value, grad = self.closed_form_value_and_grad(theta)
        leaf = theta.clone().requires_grad_(True)
        expected = self.eager_energy(self.unflatten(leaf))
        (expected_grad,) = torch.autograd.grad(expected, leaf)
        expected = expected.detach()
        # "not <=" so that a NaN on either side counts as a mismatch
        bad_value = not abs(float(value) - float(expected)) <= rtol * (1 + abs(float(expected)))
        scale = 1 + float(expected_grad.abs().max())
        diffs = {n: float(d.abs().max()) if d.numel() else 0.0 for n, d in self.unflatten(grad - expected_grad).items()}
        bad = {n: d for n, d in diffs.items() if not d <= rtol * scale}
        if bad_value or bad:
            raise PPVAEError(
                f"model: closed_form_potential disagrees with autograd on the model at the start point (U "
                f"{float(value):.6g} vs {float(expected):.6g}; max |gradient difference| per site: {bad}); "
                "fix the model's hook or run with closed_form=False")


class _GivenGradient(torch.autograd.Function):
    """An autograd node whose backward returns a gradient computed with the value (``fn(theta) = (U, dU)``)."""

    @staticmethod
    def forward(ctx, theta, fn):
        value, grad = fn(theta)
        ctx.save_for_backward(grad)
        return value

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output * grad, None


def _is_real(support) -> bool:
    base = getattr(support, "base_constraint", support)
    return base is constraints.real
