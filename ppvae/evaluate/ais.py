"""Annealed importance sampling with Hamiltonian Monte Carlo transitions, on plain tensors.

Between an initial density p_0 (normalizer Z_0, easy to sample) and a target f_1 (normalizer Z_1,
unknown), AIS (Neal 2001, "Annealed importance sampling", eq. 3-4 and sec. 2) walks the geometric path

    log f_b(z) = (1 - b) log p_0(z) + b log f_1(z),        0 = b_0 < b_1 < ... < b_T = 1,

starting from z_0 ~ p_0 and, for t = 1 .. T, accumulating

    log w += (b_t - b_{t-1}) [log f_1(z_{t-1}) - log p_0(z_{t-1})],

then moving z_{t-1} -> z_t by a Markov transition that leaves f_{b_t} invariant. E[w] = Z_1 / Z_0, so
log-mean-exp of log w over chains is a stochastic lower bound of log Z_1 - log Z_0 (Jensen). The last
transition (at b_T) cannot change the weight and is skipped, so T = 1 makes no transition at all and
``log_weights`` are the importance weights log f_1(z_0) - log p_0(z_0) exactly.

With decreasing betas (b_0 = 1 .. b_T = 0) and z_0 an exact draw from the normalized target, the same
recursion is reverse AIS: ``log_weights`` estimate log Z_0 - log Z_1 and ``-log_weights`` is a
stochastic upper bound of log Z_1 - log Z_0 (Grosse et al. 2015, "Sandwiching the marginal
likelihood using bidirectional Monte Carlo", sec. 3-4).

Transitions are HMC (Neal 2011) with ``num_leapfrog`` leapfrog steps and a unit mass matrix. The
step size is adapted during the run as in Wu et al. 2017 ("On the quantitative analysis of
decoder-based generative models", sec. 3-4, and their released code): after each transition it is
multiplied by 1.02 when the acceptance rate (averaged over the dims where ``step_size`` broadcasts)
is above ``target_accept`` and by 0.98 otherwise (``adapt=True``), or with ``adapt`` a float g by the
stochastic-approximation step log eps += g (rate - target_accept) (Andrieu & Thoms 2008, sec. 4),
clamped to [1e-4, 10]. A ``step_size`` of shape
(1, N) for a batch (C, N) thus adapts one step size per data point over its C chains.

Everything here is pure tensors: callers (``ppvae.evaluate.marginal`` for per-point AIS, the evidence code)
supply log p_0 and log f_1 on the unconstrained space, Jacobians included.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable

import torch

from ppvae._util.validation import PPVAEError, check_float, check_int

__all__ = ["AISResult", "anneal", "linear_schedule", "sigmoid_schedule", "make_schedule", "SCHEDULES"]

STEP_UP, STEP_DOWN = 1.02, 0.98  # Wu et al. 2017's released code (and Salakhutdinov's AIS before it)
STEP_MIN, STEP_MAX = 1e-4, 10.0


def linear_schedule(num_steps: int) -> torch.Tensor:
    """Betas b_t = t / T, t = 0 .. T, float64 of shape (T + 1,)."""
    num_steps = check_int("num_steps", num_steps, low=1)
    return torch.linspace(0.0, 1.0, num_steps + 1, dtype=torch.float64)


def sigmoid_schedule(num_steps: int, radius: float = 4.0) -> torch.Tensor:
    """The sigmoidal schedule of Grosse et al. 2015 (sec. 6) and Wu et al. 2017 (sec. 3):
    s_t = sigmoid(-r + 2 r t / T), b_t = (s_t - s_0) / (s_T - s_0); float64 of shape (T + 1,).
    It spends more steps near b = 0 and b = 1, where the intermediate densities change fastest."""
    num_steps = check_int("num_steps", num_steps, low=1)
    radius = check_float("radius", radius, low=0.0, strict=True)
    s = torch.sigmoid(torch.linspace(-radius, radius, num_steps + 1, dtype=torch.float64))
    betas = (s - s[0]) / (s[-1] - s[0])
    betas[0], betas[-1] = 0.0, 1.0  # exact endpoints despite rounding
    return betas


SCHEDULES = {"sigmoid": sigmoid_schedule, "linear": linear_schedule}


def make_schedule(schedule, num_steps: int) -> torch.Tensor:
    """Betas from a schedule name ('sigmoid', 'linear'), a callable ``num_steps -> betas`` or a
    sequence of betas (which must then have ``num_steps + 1`` entries), checked (:func:`check_betas`)."""
    num_steps = check_int("num_steps", num_steps, low=1)
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise PPVAEError(f"schedule: expected one of {', '.join(SCHEDULES)}, a callable or a sequence of betas; "
                             f"got '{schedule}'")
        return SCHEDULES[schedule](num_steps)
    betas = schedule(num_steps) if callable(schedule) else schedule
    betas = check_betas(betas, "schedule")
    if len(betas) != num_steps + 1:
        raise PPVAEError(f"schedule: expected {num_steps + 1} betas for num_steps={num_steps}; got {len(betas)}")
    return betas


def check_betas(betas, name: str = "betas") -> torch.Tensor:
    """``betas`` as float64 of shape (T + 1,), T >= 1, monotone, in [0, 1], from 0 to 1 or 1 to 0."""
    try:
        betas = torch.as_tensor(betas, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise PPVAEError(f"{name}: expected a 1-d sequence of numbers; got {type(betas).__name__} ({exc})") from None
    if betas.dim() != 1 or len(betas) < 2:
        raise PPVAEError(f"{name}: expected a 1-d sequence of at least 2 betas; got shape {tuple(betas.shape)}")
    if not torch.isfinite(betas).all() or (betas < 0).any() or (betas > 1).any():
        raise PPVAEError(f"{name}: expected betas in [0, 1]; got values from {float(betas.min())} to "
                         f"{float(betas.max())}")
    ends = (float(betas[0]), float(betas[-1]))
    if ends not in ((0.0, 1.0), (1.0, 0.0)):
        raise PPVAEError(f"{name}: expected betas from 0 to 1 (or 1 to 0 for reverse AIS); got {ends[0]} .. {ends[1]}")
    diff = betas[1:] - betas[:-1]
    if not ((diff >= 0).all() or (diff <= 0).all()):
        raise PPVAEError(f"{name}: expected monotone betas; got a sequence that goes both up and down")
    return betas


@dataclass
class AISResult:
    """What :func:`anneal` returns.

    ``log_weights``: float64 of shape ``batch``, log w per chain (see the module docstring).
    ``accept_rate``: mean Metropolis acceptance over the transitions, of the adapted step size's
    shape (NaN when there was no transition). ``step_size``: the final (adapted) step sizes.
    ``z``: the final states (*batch, D). ``num_steps``: T. ``num_transitions``: T - 1.
    ``num_gradients``: evaluations of log f_1 with its gradient per chain, 1 + (T - 1) * num_leapfrog.
    """

    log_weights: torch.Tensor
    accept_rate: torch.Tensor
    step_size: torch.Tensor
    z: torch.Tensor
    num_steps: int
    num_leapfrog: int
    num_transitions: int
    num_gradients: int

    def log_mean_exp(self, dim: int = 0) -> torch.Tensor:
        """log (1/C) sum_c w_c over chains along ``dim`` (float64)."""
        return torch.logsumexp(self.log_weights, dim) - math.log(self.log_weights.shape[dim])


def _evaluate(z, log_init, log_target, need_grad: bool):
    """(log p_0(z), log f_1(z), grad log p_0, grad log f_1), the log-densities detached."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(need_grad)
        li, lt = log_init(z), log_target(z)
        if not need_grad:
            return li.detach(), lt.detach(), None, None
        gi = _grad(li, z, retain=True)  # the two densities may share a graph (a memoized model trace)
        gt = _grad(lt, z)
    return li.detach(), lt.detach(), gi, gt


def _grad(out, z, retain: bool = False):
    if not out.requires_grad:  # e.g. a density that does not depend on z
        return torch.zeros_like(z)
    (g,) = torch.autograd.grad(out.sum(), z, allow_unused=True, retain_graph=retain)
    return torch.zeros_like(z) if g is None else g


def _check_anneal_args(z0, betas, num_leapfrog, step_size, target_accept):
    if not isinstance(z0, torch.Tensor) or z0.dim() < 1 or not z0.is_floating_point():
        raise PPVAEError(f"z0: expected a floating-point tensor of shape (*batch, D); got "
                         f"{type(z0).__name__ if not isinstance(z0, torch.Tensor) else tuple(z0.shape)}")
    betas = check_betas(betas)
    num_leapfrog = check_int("num_leapfrog", num_leapfrog, low=1)
    target_accept = check_float("target_accept", target_accept, low=0.0, high=1.0, strict=True)
    eps = torch.as_tensor(step_size, dtype=z0.dtype, device=z0.device).detach().clone()
    if not torch.isfinite(eps).all() or (eps <= 0).any():
        raise PPVAEError("step_size: expected positive finite step size(s); got "
                         f"{eps.tolist() if eps.numel() < 5 else tuple(eps.shape)}")
    batch = z0.shape[:-1]
    try:
        torch.broadcast_shapes(eps.shape, batch)
    except RuntimeError:
        raise PPVAEError(f"step_size: expected a float or a tensor broadcastable to the batch shape {tuple(batch)}; "
                         f"got shape {tuple(eps.shape)}") from None
    if eps.dim() > len(batch):
        raise PPVAEError(f"step_size: expected at most {len(batch)} dims (the batch shape {tuple(batch)}); "
                         f"got shape {tuple(eps.shape)}")
    return betas, num_leapfrog, target_accept, eps


def anneal(z0: torch.Tensor, log_init: Callable, log_target: Callable, betas, *, num_leapfrog: int = 5,
           step_size=0.1, target_accept: float = 0.65, adapt: bool = True, progress: Callable | None = None
           ) -> AISResult:
    """Run AIS (Neal 2001) with HMC transitions from ``z0`` along ``betas``; see the module docstring.

    ``z0``: (*batch, D) start states, draws from p_0 (forward) or exact target draws (reverse AIS).
    ``log_init(z)``, ``log_target(z)``: (*batch, D) -> (*batch,), differentiable in z.
    ``betas``: (T + 1,) monotone from 0 to 1 (forward) or 1 to 0 (reverse).
    ``step_size``: a float or a tensor broadcastable to the batch shape (one step size per broadcast
    group, adapted toward ``target_accept`` when ``adapt``). ``progress``: called with 1 after every
    annealing step (e.g. a tqdm bar's ``update``).
    """
    betas, num_leapfrog, target_accept, eps = _check_anneal_args(z0, betas, num_leapfrog, step_size, target_accept)
    num_steps = len(betas) - 1
    batch = z0.shape[:-1]
    eps_shape = eps.shape
    # the batch dims over which each step size's acceptance is averaged
    padded = (1,) * (len(batch) - len(eps_shape)) + tuple(eps_shape)
    avg_dims = tuple(d for d, (s, b) in enumerate(zip(padded, batch, strict=True)) if s == 1 and b != 1)
    need_grad = num_steps > 1
    z = z0.detach()
    li, lt, gi, gt = _evaluate(z, log_init, log_target, need_grad)
    log_w = torch.zeros(batch, dtype=torch.float64, device=z.device)
    accept_sum = torch.zeros(eps_shape, dtype=torch.float64, device=z.device)
    for t in range(1, num_steps + 1):
        log_w = log_w + (betas[t] - betas[t - 1]).item() * (lt.double() - li.double())
        if t < num_steps:  # the transition at b_T cannot change any weight
            b = betas[t].item()
            z, li, lt, gi, gt, accepted = _hmc_step(z, li, lt, gi, gt, b, eps, num_leapfrog, log_init, log_target)
            rate = accepted.double().mean(avg_dims, keepdim=True) if avg_dims else accepted.double()
            rate = rate.reshape(padded).reshape(eps_shape) if rate.dim() else rate
            accept_sum = accept_sum + rate
            if adapt:
                eps = _adapt(eps, rate, target_accept, adapt)
                eps = eps.to(z0.dtype)
        if progress is not None:
            progress(1)
    transitions = num_steps - 1
    accept = accept_sum / transitions if transitions else torch.full(eps_shape, math.nan, dtype=torch.float64)
    return AISResult(log_weights=log_w, accept_rate=accept, step_size=eps, z=z, num_steps=num_steps,
                     num_leapfrog=num_leapfrog, num_transitions=transitions,
                     num_gradients=1 + transitions * num_leapfrog)


def _adapt(eps, rate, target_accept, adapt):
    """Wu et al.'s rule (``adapt=True``: x1.02 above the target acceptance, x0.98 below) or, with
    ``adapt`` a float g, the stochastic-approximation step log eps += g (rate - target_accept)."""
    if adapt is True:
        eps = torch.where(rate > target_accept, eps * STEP_UP, eps * STEP_DOWN)
    else:
        eps = eps * torch.exp(float(adapt) * (rate - target_accept))
    return eps.clamp(STEP_MIN, STEP_MAX)


def _hmc_step(z, li, lt, gi, gt, beta, eps, num_leapfrog, log_init, log_target):
    """One HMC transition leaving f_beta invariant (Neal 2011, "MCMC using Hamiltonian dynamics", fig. 2),
    vectorized over the batch; non-finite proposals are rejected. Returns the new state with its
    cached log-densities and gradients, and the per-chain acceptance (0/1)."""
    e = _per_chain(eps, z)
    p0 = torch.randn_like(z)
    grad = (1 - beta) * gi + beta * gt
    zn, p = z, p0 + 0.5 * e * grad
    for k in range(num_leapfrog):
        zn = zn + e * p
        lin, ltn, gin, gtn = _evaluate(zn, log_init, log_target, True)
        grad = (1 - beta) * gin + beta * gtn
        p = p + (e if k < num_leapfrog - 1 else 0.5 * e) * grad
    log_f0 = (1 - beta) * li.double() + beta * lt.double()
    log_f1 = (1 - beta) * lin.double() + beta * ltn.double()
    log_ratio = log_f1 - log_f0 - 0.5 * (p.double().pow(2).sum(-1) - p0.double().pow(2).sum(-1))
    finite = torch.isfinite(log_ratio) & torch.isfinite(zn).all(-1)
    log_u = torch.log(torch.rand(log_ratio.shape, dtype=torch.float64, device=z.device))
    accepted = finite & (log_u < torch.nan_to_num(log_ratio, nan=-math.inf))
    a = accepted.unsqueeze(-1)
    z = torch.where(a, zn.detach(), z)
    li, lt = torch.where(accepted, lin, li), torch.where(accepted, ltn, lt)
    gi, gt = torch.where(a, gin, gi), torch.where(a, gtn, gt)
    return z, li, lt, gi, gt, accepted


def _per_chain(eps, z):
    """Step sizes broadcast to (*batch, 1) against states (*batch, D)."""
    return eps.reshape(eps.shape + (1,)) if eps.dim() else eps


@contextlib.contextmanager
def frozen(*modules):
    """Parameters of ``modules`` with ``requires_grad`` off inside the context (restored after), so
    gradients of the annealed densities flow to the latents only."""
    params = [p for m in modules if isinstance(m, torch.nn.Module) for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, saved, strict=True):
            p.requires_grad_(flag)
