"""log p(X) by annealed importance sampling over all continuous latents (Neal 2001).

The chains anneal, on the unconstrained space u of every continuous latent (globals and continuous
locals, the space NUTS moves in; :mod:`ppvae.evaluate.joint`), from a normalized Gaussian p_0 to the
unnormalized posterior

    pi(u) = sum_z p(X, z, T(u)) |det J_T(u)|,     int pi(u) du = p(X),

(discrete locals z summed exactly) along the geometric path of :func:`ppvae.evaluate.ais.anneal`, so that
log (1/C) sum_c w_c estimates log p(X) - log 1 (Neal 2001, eqs. 3-4; a stochastic lower bound in
expectation). p_0 = N(m, S) is fitted by moments to draws on the unconstrained space: draws of the
fitted guide (for an ``auto_normal`` or ``auto_mvn`` guide, a Gaussian on this very space, p_0 is
the guide up to the Monte Carlo error of its moments) or the draws of an MCMC run. The chains move
in whitened coordinates w = L^-1 (u - m), S = L L^T, where p_0 is N(0, I) and HMC's unit mass
matrix fits the posterior's scales; the affine map leaves the normalizer unchanged (its Jacobian
|L| is added to log pi). The model's network weights are held fixed. For a :class:`ppvae.Mixture`, p_0 is
symmetrized over the K! labellings of its components (:mod:`ppvae.evaluate.symmetry`), so that chains started in
every labelling see all K! copies of the posterior, not one of them.
"""

from __future__ import annotations

import math
import sys

import pyro
import torch
from pyro import poutine

from ppvae._util.validation import PPVAEError, check_float, check_int
from ppvae.evaluate.ais import anneal, frozen, make_schedule
from ppvae.evaluate.estimate import KHAT_THRESHOLD, LogEvidence, _resolve, psis_khat
from ppvae.evaluate.joint import dataset_of, log_density, ordered_log_count, potential_for, unconstrained_draws
from ppvae.evaluate.symmetry import covered_labellings, relabel_randomly, symmetrized_log_density, symmetry_of_potential
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.infer.proposal import autoguide_subsample

__all__ = ["ais_evidence", "initial_gaussian"]

DRAWS = "_ppvae_evidence_draws"
MAX_FULL_COV = 1000  # above this many latent coordinates p_0 is diagonal (a D x D Cholesky per step is too dear)


def _guide_draws(potential, guide, num: int) -> dict:
    """``num`` draws of every continuous latent from ``guide`` (site -> (num, *shape)), vectorized
    under a plate over draws, or one trace per draw for a guide that does not vectorize."""
    batch, mpn = potential.batch, potential.mpn

    def vectorized(b):
        with pyro.plate(DRAWS, num, dim=-mpn - 1):
            return guide(b)

    # a guide with per-point parameters fitted to other data is refused in one line (autoguide_subsample)
    with torch.no_grad(), pyro.validation_enabled(False), poutine.block(), autoguide_subsample(guide, len(batch)):
        try:
            tr = poutine.trace(vectorized).get_trace(batch)
            out = {n: tr.nodes[n]["value"] for n in potential.names}
            return {n: v.reshape((num,) + tuple(potential.sites[n]["value"].shape)) for n, v in out.items()}
        except (RuntimeError, ValueError, IndexError, KeyError, NotImplementedError):
            traces = [poutine.trace(guide).get_trace(batch) for _ in range(num)]
    missing = sorted(n for n in potential.names if n not in traces[0].nodes)
    if missing:
        raise PPVAEError(f"proposal: the guide does not sample the model's latent site(s) {', '.join(missing)}")
    return {n: torch.stack([t.nodes[n]["value"] for t in traces]) for n in potential.names}


def initial_gaussian(u: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean m, lower-triangular L with L L^T = S) of draws ``u`` (S, D) in float64: the full
    covariance when there are more than 2 D draws and D <= MAX_FULL_COV, else its diagonal."""
    u = u.detach().double()
    num, dim = u.shape
    mean = u.mean(0)
    sd = u.std(0) if num > 1 else torch.zeros(dim, dtype=u.dtype)
    flat = ~(sd > 1e-9 * (1 + mean.abs()))  # equal draws up to rounding (NaN counts as flat too)
    if bool(flat.any()):
        raise PPVAEError(f"{what}: its draws do not vary in {int(flat.sum())} of {dim} unconstrained "
                         "coordinate(s) (e.g. an auto_delta guide), so no initial density can be fitted; "
                         "use a guide with spread (auto_normal, auto_mvn) or MCMC draws")
    if num > 2 * dim and dim <= MAX_FULL_COV:
        cov = torch.cov(u.T).reshape(dim, dim)
        chol, info = torch.linalg.cholesky_ex(cov + 1e-10 * cov.diagonal().mean() * torch.eye(dim, dtype=u.dtype))
        if int(info) == 0:
            return mean, chol
    return mean, torch.diag(sd)


def _source(source, data, num_init_draws):
    """(potential, m, L, description) from a Fit, a (model, guide) pair or an MCMCResult."""
    ds = dataset_of(data)
    if isinstance(source, MCMCResult):
        if source.model is None:
            raise PPVAEError("fit_or_model_guide: the MCMC result carries no model")
        potential = potential_for(source.model, ds, source.config.get("order"))
        u = unconstrained_draws(potential, source.samples)
        u = u.reshape(-1, u.shape[-1])
        return potential, *initial_gaussian(u, "mcmc"), source.model, "normal fitted to the MCMC draws"
    model, guide, _ = _resolve(source)
    if guide is None:
        raise PPVAEError("proposal: method='ais' starts from the fitted guide; pass a Fit or a (model, guide) pair "
                         "(or an MCMCResult)")
    potential = potential_for(model, ds)
    draws = _guide_draws(potential, guide, num_init_draws)
    u = potential.flatten({n: potential.transforms[n](v) for n, v in draws.items()})
    return potential, *initial_gaussian(u, "proposal"), model, "normal fitted to the guide's draws"


def ais_evidence(source, data, *, num_steps: int = 200, num_chains: int = 64, schedule="sigmoid",
                 num_leapfrog: int = 5, step_size: float = 0.2, target_accept: float = 0.65,
                 num_init_draws: int = 1000, seed: int = 0, progress: bool | None = None, chunk_size: int = 256):
    """log p(X) by AIS over all continuous latents (module docstring): ``num_chains`` chains and
    ``num_steps`` annealing steps along ``schedule`` ('sigmoid', 'linear', a callable or betas),
    HMC with ``num_leapfrog`` leapfrog steps whose one step size adapts toward ``target_accept``.
    ``num_init_draws`` guide draws fit p_0. Returns a :class:`ppvae.LogEvidence` (``method="ais"``)
    whose ESS, k-hat and delta-method ``stderr`` are those of the C chain weights."""
    num_steps = check_int("num_steps", num_steps, low=1)
    num_chains = check_int("num_chains", num_chains, low=1)
    num_init_draws = check_int("num_init_draws", num_init_draws, low=2)
    seed = check_int("seed", seed, low=0)
    chunk_size = check_int("chunk_size", chunk_size, low=1)
    step_size = check_float("step_size", step_size, low=0.0, strict=True)
    betas = make_schedule(schedule, num_steps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        potential, mean, chol, model, initial = _source(source, data, num_init_draws)
        dim, dtype = len(mean), potential.batch.x.dtype
        log_jac = float(chol.diagonal().log().sum())
        const = -0.5 * dim * math.log(2 * math.pi)

        def log_init(w):
            return const - 0.5 * w.pow(2).sum(-1)

        def log_target(w):
            return log_density(potential, (mean + w @ chol.T).to(dtype), chunk_size) + log_jac

        z0 = torch.randn(num_chains, dim, dtype=torch.float64)
        sym = symmetry_of_potential(model, potential)
        if sym is not None:  # p_0 symmetrized over the K! labellings, the chains started in random ones
            log_init, z0, sym_info = _symmetrized_start(potential, sym, mean, chol, const, z0)
        bar = _bar(num_steps, progress)
        with frozen(model), pyro.validation_enabled(False):
            result = anneal(z0, log_init, log_target, betas, num_leapfrog=num_leapfrog, step_size=step_size,
                            target_accept=target_accept, progress=bar.update if bar is not None else None)
        if bar is not None:
            bar.close()
    lw = result.log_weights.cpu()
    if torch.isnan(lw).any() or (lw == math.inf).any():
        raise PPVAEError("proposal: AIS log-weights are NaN or +inf: the log joint is not finite where the chains went")
    lse = float(torch.logsumexp(lw, 0))
    ess = float(1.0 / torch.exp(2 * (lw - lse)).sum())
    khat = float(psis_khat(lw[None].numpy())[0])
    info = {"num_steps": num_steps, "num_chains": num_chains, "num_leapfrog": num_leapfrog,
            "schedule": schedule if isinstance(schedule, str) else "custom", "target_accept": target_accept,
            "accept_rate": float(result.accept_rate.mean()) if result.num_transitions else None,
            "step_size_final": float(result.step_size.mean()), "num_init_draws": num_init_draws, "seed": seed,
            "num_latent_dims": dim, "khat_threshold": KHAT_THRESHOLD,
            "log_label_permutations": ordered_log_count(potential)}
    if sym is not None:
        info["label_symmetry"] = sym_info
    return LogEvidence(value=lse - math.log(num_chains) + info["log_label_permutations"],
                       stderr=math.sqrt(max(num_chains / ess - 1, 0.0) / num_chains), ess=ess, khat=khat,
                       elbo=float(lw.mean()), num_particles=num_chains, proposal=initial, method="ais", info=info)


def _symmetrized_start(potential, sym, mean, chol, const, z0):
    """(log p_0_sym in whitened coordinates, chains started from it, what p_0 covered): p_0 = N(m, L L^T) on the
    unconstrained space symmetrized over the K! labellings (:func:`ppvae.evaluate.symmetry.symmetrized_log_density`),
    each chain started from p_0 and relabelled by a random permutation."""
    log_det = float(chol.diagonal().log().sum())

    def log_p0(u):  # N(u; m, L L^T) on the unconstrained space
        w = torch.linalg.solve_triangular(chol, (u - mean).T, upper=False).T
        return const - 0.5 * w.pow(2).sum(-1) - log_det

    def log_init(w):
        return symmetrized_log_density(log_p0, potential, mean + w @ chol.T, sym) + log_det

    u0 = mean + z0 @ chol.T
    overlap = symmetrized_log_density(log_p0, potential, u0, sym) + sym.log_count - log_p0(u0)
    u0 = relabel_randomly(potential, u0, sym)
    z0 = torch.linalg.solve_triangular(chol, (u0 - mean).T, upper=False).T
    info = {**covered_labellings(overlap, sym),
            "method": "p_0 symmetrized over the K! labellings, chains started in random ones "
                    "(Frühwirth-Schnatter 2004)"}
    return log_init, z0, info


def _bar(total: int, progress):
    if not (sys.stderr.isatty() if progress is None else bool(progress)):
        return None
    from tqdm.auto import tqdm  # heavy-ish: only when a progress bar is shown

    return tqdm(total=total, desc="ais evidence", unit="step", leave=False, dynamic_ncols=True)
