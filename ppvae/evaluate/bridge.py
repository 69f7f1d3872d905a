"""log p(X) by bridge sampling from the draws of a ppvae NUTS/HMC run.

Let pi(u) = sum_z p(X, z, T(u)) |det J_T(u)| be the unnormalized posterior of all continuous latents
on the unconstrained space the sampler moved in (discrete locals summed out exactly; see
:mod:`ppvae.evaluate.joint`), so that p(X) = int pi(u) du, and let g be a normalized proposal density. For
any bridge function h (Meng & Wong 1996, "Simulating ratios of normalizing constants via a simple
identity", eq. 2.1)

    p(X) = E_g[pi(u) h(u)] / E_post[g(u) h(u)],

and the bridge h that minimizes the relative mean-squared error, h ~ 1 / (s1 pi(u) + s2 p(X) g(u)),
gives the fixed-point iteration of Meng & Wong 1996, eq. 4.1::

    r^(t+1) = [ (1/N2) sum_i l2_i / (s1 l2_i + s2 r^(t)) ] / [ (1/N1) sum_j 1 / (s1 l1_j + s2 r^(t)) ],

    l1_j = pi(u_j) / g(u_j) at N1 posterior draws u_j,    l2_i = pi(v_i) / g(v_i) at N2 draws v_i ~ g,
    s1 = N1 / (N1 + N2),  s2 = 1 - s1,

which converges to the estimate r = p-hat(X). The recipe is Gronau et al. 2017 ("A tutorial on
bridge sampling", J. Math. Psych. 81), as in their R package ``bridgesampling`` (method "normal"):
g is the multivariate normal whose mean and covariance are those of the first half of every chain's
draws; the second half are the u_j; N2 = N1 draws v_i come from g; the iteration runs on the log
scale, shifted by the median of log l1 for stability, from the importance-sampling estimate until
|log r^(t+1) - log r^(t)| < tol; s1 uses the effective sample size of the u_j in place of N1 (the
package's default ``use_neff``).

The error is the approximate relative mean-squared error of Frühwirth-Schnatter 2004 ("Estimating
marginal likelihoods for mixture and Markov switching models using bridge sampling techniques",
Econometrics J. 7, sec. 3.4), with f1 = p(v) / (s1 p(v) + s2 g(v)) at the proposal draws and
f2 = g(u) / (s1 p(u) + s2 g(u)) at the posterior draws, p = pi / p-hat(X) the normalized posterior::

    RE^2 = Var_g(f1) / (N2 E_g(f1)^2) + rho_f2(0) Var_post(f2) / (N1 E_post(f2)^2),

rho_f2(0) being the integrated autocorrelation time of the f2 series, N1 / ESS(f2) (Pyro's
``effective_sample_size`` over the chains; the R package uses ``coda::spectrum0.ar``, the same
quantity). The standard error of log p-hat(X) is RE (delta method).

Draws made with ``order=(site, column)`` cover one of the K! label-permuted copies of a mixture's
posterior, whose mass is p(X) / K!; log K! is added (exact for models symmetric in their labels). Otherwise, for
a model that declares :class:`ppvae.Mixture`, g is symmetrized over the K! labellings and every posterior draw
relabelled by a random permutation (:mod:`ppvae.evaluate.symmetry`; Frühwirth-Schnatter 2004, sec. 4), so the
estimate is right whether the chains stayed in one labelling or switched.
"""

from __future__ import annotations

import math

import torch
from pyro.ops.stats import effective_sample_size

from ppvae._util.validation import PPVAEError, check_float, check_int, warn_at_caller
from ppvae.evaluate.estimate import LogEvidence
from ppvae.evaluate.joint import (
    check_against_potential,
    dataset_of,
    log_density,
    ordered_log_count,
    potential_for,
    unconstrained_draws,
)
from ppvae.evaluate.symmetry import (
    covered_labellings,
    relabel_randomly,
    symmetrized_log_density,
    symmetry_of_potential,
)
from ppvae.infer.mcmc.sampler import MCMCResult

__all__ = ["bridge_sampling", "iterate_bridge", "relative_mse", "BridgeWarning", "MIN_DRAWS_PER_DIM"]

MIN_DRAWS_PER_DIM = 2  # each half must hold at least 2 D + 2 draws: a covariance with room to spare


class BridgeWarning(UserWarning):
    """The iterative scheme did not converge within ``max_iter`` iterations."""


def iterate_bridge(l1: torch.Tensor, l2: torch.Tensor, s1: float, tol: float = 1e-10,
                   max_iter: int = 1000) -> tuple[float, int]:
    """Meng & Wong 1996, eq. 4.1 on the log scale: ``l1`` = log pi/g at the posterior draws,
    ``l2`` = log pi/g at the proposal draws (float64). Returns (log r, iterations used); iterations
    equal to ``max_iter`` mean it did not converge."""
    l1, l2 = l1.double(), l2.double()
    shift = float(l1.median())  # Gronau et al.'s l*: keeps exp() of the ratios near 1
    a1, a2 = l1 - shift, l2 - shift
    log_s1, log_s2 = math.log(s1), math.log(1.0 - s1)
    lme = _log_mean_exp
    log_r = float(lme(a2))  # the importance-sampling estimate under g as the start
    if not math.isfinite(log_r):
        log_r = 0.0
    for it in range(1, max_iter + 1):
        num = lme(a2 - torch.logaddexp(log_s1 + a2, torch.full_like(a2, log_s2 + log_r)))
        den = lme(-torch.logaddexp(log_s1 + a1, torch.full_like(a1, log_s2 + log_r)))
        new = float(num - den)
        if abs(new - log_r) < tol:
            return new + shift, it
        log_r = new
    return log_r + shift, max_iter


def _log_mean_exp(x: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(x, 0) - math.log(x.numel())


def relative_mse(log_pi_post, log_g_post, log_pi_prop, log_g_prop, log_z: float, num_chains: int) -> float:
    """Frühwirth-Schnatter 2004's RE^2 of p-hat(X) (module docstring); ``*_post`` are (chains * draws,)
    in chain-major order, ``*_prop`` are (N2,)."""
    n1, n2 = log_pi_post.numel(), log_pi_prop.numel()
    s1, s2 = n1 / (n1 + n2), n2 / (n1 + n2)
    p_prop, p_post = (log_pi_prop - log_z).exp(), (log_pi_post - log_z).exp()
    f1 = p_prop / (s1 * p_prop + s2 * log_g_prop.exp())
    f2 = log_g_post.exp() / (s1 * p_post + s2 * log_g_post.exp())
    # f1, f2 in (0, 1/s1] and (0, 1/s2]: no overflow once both densities are normalized
    ess = float(effective_sample_size(f2.reshape(num_chains, -1).unsqueeze(-1))[0])
    rho = n1 / ess if math.isfinite(ess) and ess > 0 else float(n1)
    term1 = float(f1.var() / (n2 * f1.mean() ** 2))
    term2 = float(rho * f2.var() / (n1 * f2.mean() ** 2))
    return term1 + term2


def _split(draws: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(chains, draws, D) -> (fit half, iteration half): each chain's first and second halves."""
    chains, num = draws.shape[:2]
    half = num // 2
    need = MIN_DRAWS_PER_DIM * dim + 2
    if chains * half < need or half < 2:
        raise PPVAEError(
            f"mcmc: bridge sampling needs at least {need} draws in each half (2 D + 2 for the D={dim} continuous "
            f"latents: half fit the proposal's covariance, half enter the bridge) and 2 per chain; got {chains} "
            f"chain(s) x {num} draws (run NUTS with num_draws >= {2 * math.ceil(need / chains)})")
    return draws[:, :half].reshape(-1, dim), draws[:, half:2 * half]


def _fit_normal(u: torch.Tensor) -> torch.distributions.MultivariateNormal:
    mean = u.mean(0)
    cov = torch.cov(u.T).reshape(u.shape[1], u.shape[1])
    jitter = 1e-10 * cov.diagonal().mean().clamp_min(1e-30)
    for _ in range(8):  # as bridgesampling's nearPD: make a near-singular covariance usable
        try:
            return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov + jitter * torch.eye(len(mean),
                                                          dtype=u.dtype))
        except (ValueError, RuntimeError):
            jitter *= 100
    raise PPVAEError("mcmc: the draws' covariance is singular (a latent never moved); bridge sampling needs "
                     "draws that vary in every coordinate")


def bridge_sampling(mcmc, data, *, tol: float = 1e-10, max_iter: int = 1000, use_ess: bool = True, seed: int = 0,
                    chunk_size: int = 256):
    """log p(X) by bridge sampling from a :class:`ppvae.MCMCResult` (module docstring).

    ``data``: the data the chains were run on. ``tol``: convergence tolerance on log r. ``use_ess``:
    s1 from the effective sample size of the bridge draws (else their count). ``chunk_size``: draws
    per vectorized evaluation of the log joint. Returns a :class:`ppvae.LogEvidence` with
    ``method="bridge"``, ``stderr`` = RE, and ``info`` holding N1, N2, iterations and RE^2.
    """
    if not isinstance(mcmc, MCMCResult):
        raise PPVAEError(f"mcmc: expected a ppvae.MCMCResult (from ppvae.run_mcmc); got {type(mcmc).__name__}")
    if mcmc.model is None:
        raise PPVAEError("mcmc: the result carries no model to evaluate the log joint with")
    tol = check_float("tol", tol, low=0.0, strict=True)
    max_iter = check_int("max_iter", max_iter, low=1)
    seed = check_int("seed", seed, low=0)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    potential = potential_for(mcmc.model, dataset_of(data), mcmc.config.get("order"))
    draws = unconstrained_draws(potential, mcmc.samples).double()
    fit_half, iter_half = _split(draws, draws.shape[-1])
    chains = iter_half.shape[0]
    post = iter_half.reshape(-1, draws.shape[-1])
    g = _fit_normal(fit_half)
    sym = symmetry_of_potential(mcmc.model, potential)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        prop = g.sample((post.shape[0],))
        if sym is not None:  # g_sym covers every labelling; the posterior draws are relabelled at random to match
            overlap = symmetrized_log_density(g.log_prob, potential, prop, sym) + sym.log_count - g.log_prob(prop)
            post, prop = relabel_randomly(potential, post, sym), relabel_randomly(potential, prop, sym)
    dtype = potential.batch.x.dtype
    with torch.no_grad():
        check_against_potential(potential, post.to(dtype))
        log_pi_post = log_density(potential, post.to(dtype), chunk_size).double()
        log_pi_prop = log_density(potential, prop.to(dtype), chunk_size).double()
        if sym is None:
            log_g_post, log_g_prop, settings = g.log_prob(post), g.log_prob(prop), {}
        else:
            log_g_post = symmetrized_log_density(g.log_prob, potential, post, sym)
            log_g_prop = symmetrized_log_density(g.log_prob, potential, prop, sym)
            settings = {"label_symmetry": {**covered_labellings(overlap, sym), "method": "g symmetrized over the "
                        "K! labellings, posterior draws relabelled at random (Frühwirth-Schnatter 2004)"}}
    if not torch.isfinite(log_pi_post).all():
        raise PPVAEError(f"mcmc: the log joint is not finite at {int((~torch.isfinite(log_pi_post)).sum())} posterior "
                         "draw(s); were the draws made on this data and model?")
    log_pi_prop = torch.nan_to_num(log_pi_prop, nan=-math.inf)  # overflow far in g's tails: zero density
    return _estimate(LogEvidence, log_pi_post - log_g_post, log_pi_prop - log_g_prop, log_pi_post, log_g_post,
                     log_pi_prop, log_g_prop, chains, tol, max_iter, use_ess,
                     ordered_log_count(potential), {"seed": seed, "tol": tol, "use_ess": bool(use_ess), **settings})


def _estimate(LogEvidence, l1, l2, log_pi_post, log_g_post, log_pi_prop, log_g_prop, chains, tol, max_iter, use_ess,
              log_count, settings):
    n1, n2 = l1.numel(), l2.numel()
    ess = float(effective_sample_size(l1.reshape(chains, -1).unsqueeze(-1))[0]) if chains * 2 <= n1 else float(n1)
    ess = min(ess, float(n1)) if math.isfinite(ess) and ess > 0 else float(n1)
    neff = ess if use_ess else float(n1)
    log_z, iterations = iterate_bridge(l1, l2, neff / (neff + n2), tol, max_iter)
    if iterations == max_iter:
        warn_at_caller(f"bridge_sampling: the iterative scheme did not converge in {max_iter} iterations "
                       f"(tol {tol:g}); the estimate may be off", BridgeWarning)
    re2 = relative_mse(log_pi_post, log_g_post, log_pi_prop, log_g_prop, log_z, chains)
    info = {**settings, "num_posterior": n1, "num_proposal": n2, "ess_posterior": ess, "iterations": iterations,
            "re2": re2, "log_label_permutations": log_count}
    return LogEvidence(value=log_z + log_count, stderr=math.sqrt(re2), ess=ess, khat=math.nan, elbo=math.nan,
                       num_particles=n1 + n2, proposal="normal fitted to the first half of the draws",
                       method="bridge", info=info)
