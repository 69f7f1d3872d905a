"""Per-datapoint log p(x) by importance sampling, with diagnostics.

For every data point, with the global latents G fixed at the fit's point estimate and K draws of the
local continuous latents c_ik from a proposal q (the fitted guide, the prior, or a user's guide)::

    log p(x_i | G) ~ log (1/K) sum_k w_ik,     w_ik = sum_{z_i} p(x_i, z_i, c_ik | G) / q(c_ik | x_i)

(Burda et al. 2015, eq. 8; discrete locals z_i are summed out exactly inside each weight). The
estimate is a lower bound in expectation that tightens with K (Burda et al. 2015, theorem 1); K = 1
is the ELBO. Per point it reports the effective sample size 1 / sum_k wbar_ik^2 of the normalized
weights (Kong 1992) and the Pareto k-hat of the weights (Yao et al. 2018, "Yes, but did it work?",
sec. 2; computed by ``arviz.psislw``): k-hat > 0.7 means the estimate is unreliable.

:func:`log_evidence` (in :mod:`ppvae.evaluate.evidence`, importable from here) estimates log p(X) by importance
sampling over the globals, by AIS over all latents or by bridge sampling from NUTS draws.

Weights are computed vectorized over particles (:mod:`ppvae.infer.importance`), batched over data points
in chunks whose size is given or chosen from free memory, halved on an out-of-memory error; the
log-sum-exp is taken in float64.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine

from ppvae._util import display as _display
from ppvae._util.validation import PPVAEError, check_choice, check_int, renamed, warn_at_caller
from ppvae.evaluate.estimate import (  # noqa: F401 -- KHAT_THRESHOLD, ImportanceWarning and psis_khat re-exported
    KHAT_THRESHOLD,
    ImportanceWarning,
    _finite,
    _global_values,
    _prepare,
    _seeded,
    _summarize,
    psis_khat,
)
from ppvae.evaluate.evidence import LogEvidence, log_evidence  # noqa: F401 -- re-exported (moved to evidence.py)
from ppvae.evaluate.local_ais import ais_log_marginal, check_ais_options
from ppvae.infer.importance import auto_chunk, check_log_weights, local_log_weights, run_chunks
from ppvae.infer.proposal import autoguide_subsample, check_guide_is_factorized, draws_discrete
from ppvae.model.capabilities import ConditionsOnSubset, require

__all__ = ["LogMarginal", "LogEvidence", "ImportanceWarning", "log_marginal", "log_evidence", "psis_khat",
           "impute_weighted"]

@dataclass
class LogMarginal:
    """Per-point estimates of log p(x_i | G) (float64 tensors of shape (N,)) and their summaries."""

    values: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    elbo: torch.Tensor
    mc_stderr: torch.Tensor  # per point, delta method: sqrt((K / ESS - 1) / K)
    num_particles: int  # weights per point: K for importance sampling, the number of chains C for AIS
    proposal: str
    chunk_size: int
    method: str = "is"
    accept_rate: torch.Tensor | None = None  # AIS: per point, mean HMC acceptance over its chains and steps
    settings: dict = field(default_factory=dict)  # AIS: num_steps, num_chains, schedule, leapfrog, step size

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean over data points: sd / sqrt(N)."""
        n = len(self.values)
        return float(self.values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def mc_stderr_mean(self) -> float:
        """Monte Carlo standard error of ``mean`` given the data: sqrt(sum_i se_i^2) / N."""
        return float(self.mc_stderr.pow(2).sum().sqrt() / len(self.values))

    @property
    def total(self) -> float:
        return float(self.values.sum())

    @property
    def elbo_mean(self) -> float:
        return float(self.elbo.mean())

    @property
    def gap_mean(self) -> float:
        """Mean of log p(x_i) - ELBO_i, an estimate of KL(q(c_i | x_i) || p(c_i | x_i))."""
        return float((self.values - self.elbo).mean())

    @property
    def ess_mean(self) -> float:
        return float(self.ess.mean())

    @property
    def khat_max(self) -> float:
        k = self.khat[torch.isfinite(self.khat)]
        return float(k.max()) if len(k) else float("nan")

    @property
    def num_khat_over_0_7(self) -> int:
        return int((self.khat > KHAT_THRESHOLD).sum())

    def to_dict(self) -> dict:
        """The ``log_marginal`` object of metrics.json (non-finite numbers as null)."""
        return {
            "mean": _finite(self.mean), "stderr": _finite(self.stderr), "total": _finite(self.total),
            "num_points": len(self.values), "num_particles": self.num_particles, "proposal": self.proposal,
            "ess_mean": _finite(self.ess_mean), "ess_min": _finite(float(self.ess.min())),
            "khat_max": _finite(self.khat_max), "num_khat_over_0_7": self.num_khat_over_0_7,
            "mc_stderr": _finite(self.mc_stderr_mean), "elbo_mean": _finite(self.elbo_mean),
            "gap_mean": _finite(self.gap_mean), "chunk_size": self.chunk_size, "method": self.method,
            **({"settings": self.settings} if self.settings else {}),
            **({} if self.accept_rate is None else {"accept_rate_mean": _finite(float(self.accept_rate.nanmean()))}),
        }

    def __repr__(self) -> str:  # headline numbers; the per-point tensors are attributes
        return _display.log_marginal_repr(self)

    def _repr_html_(self) -> str:
        return _display.log_marginal_html(self)


# -- inputs -------------------------------------------------------------------------------------------
# -- the API ------------------------------------------------------------------------------------------
@renamed(num_samples="num_particles")
def log_marginal(fit_or_model_guide, data, *, num_particles: int = 1000, proposal="guide",
                 chunk_size: int | None = None, seed: int = 0, global_values: dict | None = None, warn: bool = True,
                 method: str = "is", num_steps: int = 500, num_chains: int = 16, schedule="sigmoid",
                 num_leapfrog: int = 5, step_size: float = 0.1, target_accept: float = 0.65,
                 progress: bool | None = None, num_draws: int | None = None) -> LogMarginal:
    """Per-point log p(x_i | G) by importance sampling (see the module docstring) or, with
    ``method="ais"``, by annealed importance sampling (:mod:`ppvae.evaluate.local_ais`; Neal 2001, Wu et al.
    2017 sec. 3-4): ``num_chains`` chains per point annealed from the proposal to the posterior over
    ``num_steps`` steps of ``schedule`` ('sigmoid', 'linear', a callable or betas; :mod:`ppvae.evaluate.ais`)
    with HMC transitions of ``num_leapfrog`` leapfrog steps, the step size (from ``step_size``)
    adapted per point toward ``target_accept``. ``num_particles`` is for importance sampling only.

    ``fit_or_model_guide``: a :class:`ppvae.Fit` or a ``(model, guide)`` pair. ``proposal``:
    ``"guide"`` (the fitted guide's local sites), ``"prior"``, or a guide callable. ``chunk_size``:
    data points per vectorized pass (default: chosen from free memory). The globals G are the fit's
    point estimate (:meth:`Fit.global_values`), the guide's median for a pair, or ``global_values``.
    A model whose only local latents are discrete has exact weights: log p(x_i | G) is computed once
    by enumeration, every one of the K weights equals it (ESS = K, k-hat = -inf).

    ``num_draws=S`` averages over the guide's q(G) instead of fixing G (e.g. the Bayesian VAE decoder's weights):
    S draws G_s ~ q(G), shared by every point, each with K = ``num_particles`` local draws c_sk ~ q(c | x_i, G_s),
    and the S K joint weights pooled::

        log p(x_i | D) ~ log (1/(S K)) sum_s sum_k p(x_i, c_sk | G_s) / q(c_sk | x_i, G_s),

    an estimate of the log of the variational posterior predictive p(x_i | D) ~ E_{q(G)} p(x_i | G) (unbiased for
    p(x_i | D) inside the log, so a lower bound in expectation after it, tightening with S and K). ESS and k-hat are
    of the S K pooled weights; ``num_particles`` of the result is S K.

    Example (for a mixture every local latent is discrete, so the estimate is exact: it equals the
    enumerated log-likelihood, with all K = 10 weights equal):

    >>> import ppvae
    >>> from ppvae.models import GMM
    >>> data = ppvae.load_dataset("faithful", standardize=True)
    >>> fit = ppvae.fit(GMM(K=2), data, guide="auto_delta", steps=300, lr=0.05, progress=False)
    >>> lm = ppvae.log_marginal(fit, data, num_particles=10)
    >>> round(lm.mean, 4) == round(float(fit.log_likelihood(data).mean()), 4), float(lm.ess.min())
    (True, 10.0)
    """
    if check_choice("method", method, ("is", "ais")) == "ais":
        settings, betas = check_ais_options(num_steps, num_chains, schedule, num_leapfrog, step_size, target_accept)
        num_particles = settings["num_chains"]
    prepared = _prepare(fit_or_model_guide, data, proposal, num_particles, chunk_size, seed)
    num, chunk_size, seed, model, guide, fit, ds, device, q, qname, mpn, global_names, local_cont = prepared
    if q is not None:
        check_guide_is_factorized(q, bool(local_cont))
    if num_draws is not None:
        num_draws = check_int("num_draws", num_draws, low=1)
        if method == "ais" or global_values is not None:
            raise PPVAEError("num_draws: averages over q(G) by importance sampling; not with method='ais' or "
                             "global_values (which fix the globals)")
    if method == "ais":
        out, accept, steps, chunk = ais_log_marginal(prepared, settings, betas, global_values, progress)
        result = LogMarginal(num_particles=num, proposal=qname, chunk_size=chunk, method="ais", accept_rate=accept,
                             settings={**settings, "final_step_size_median": _finite(float(steps.nanmedian()))},
                             **out)
        return _warn_khat(result, warn)
    n = len(ds)
    out = {k: torch.empty(n, dtype=torch.float64) for k in ("values", "ess", "khat", "elbo", "mc_stderr")}
    draws = num if local_cont or draws_discrete(q, ds.batch(torch.arange(1, device=device))) else 1
    with torch.no_grad(), pyro.validation_enabled(False), _seeded(seed, device):
        if num_draws is None:
            global_sets = [_global_values(fit, model, guide, ds, global_names, global_values)]
        else:
            global_sets = global_draws(guide, ds, global_names, num_draws)
            num = num_draws * num

        def run(start: int, m: int) -> int:
            idx = torch.arange(start, start + m, device=device)
            batch, parts = ds.batch(idx), []
            for s, globals_ in enumerate(global_sets):
                with autoguide_subsample(q, n) if q is not None else contextlib.nullcontext():
                    log_w, traces = local_log_weights(model, q, batch, draws, mpn, globals_, check=start + s == 0)
                check_log_weights(log_w, traces)
                parts.append(log_w)
            _summarize(torch.cat(parts) if len(parts) > 1 else parts[0], num, out, slice(start, start + m))
            if num_draws is not None:
                out["mc_stderr"][start:start + m] = nested_stderr(torch.stack(parts))
            return auto_chunk(traces, m, n, device)

        chunk = run_chunks(n, chunk_size, run, probe=max(2, min(16, 100_000 // draws)), model=model)
    return _warn_khat(LogMarginal(num_particles=num, proposal=qname, chunk_size=chunk, **out), warn)


def nested_stderr(log_w: torch.Tensor) -> torch.Tensor:
    """Monte Carlo standard error of log p_hat for weights (S, K, m) nested in S global draws: the weights of one
    draw are correlated (they share G_s), so the S per-draw means p_s = (1/K) sum_k w_sk are the independent
    replicates; delta method: se(log p_hat) = sd_s(p_s / p_hat) / sqrt(S)."""
    S, K = log_w.shape[:2]
    per_draw = torch.logsumexp(log_w.double(), 1) - math.log(K)
    rel = torch.exp(per_draw - (torch.logsumexp(per_draw, 0) - math.log(S)))
    return (rel.std(0) / math.sqrt(S) if S > 1 else torch.full_like(rel[0], math.nan)).cpu()


def global_draws(guide, ds, names, num_draws: int) -> list[dict]:
    """``num_draws`` independent draws of the global sites ``names`` from ``guide`` (one guide pass each, on the
    data set's first points), site -> value dicts."""
    if guide is None:
        raise PPVAEError("num_draws: draws of the globals come from a guide; pass a Fit or a (model, guide) pair")
    if not names:
        raise PPVAEError("num_draws: the model has no global latents to average over; leave num_draws unset")
    batch = ds.batch(torch.arange(min(2, len(ds)), device=ds.x.device))
    out = []
    for _ in range(num_draws):
        with autoguide_subsample(guide, len(ds)):
            tr = poutine.trace(guide).get_trace(batch)
        out.append({n: tr.nodes[n]["value"].detach() for n in names})
    return out


def _warn_khat(result: LogMarginal, warn: bool) -> LogMarginal:
    if warn and result.num_khat_over_0_7:
        advice = ("more chains or steps" if result.method == "ais" else
                  "a better proposal, more samples, or method='ais'")
        warn_at_caller(
            f"log_marginal: Pareto k-hat > {KHAT_THRESHOLD} for {result.num_khat_over_0_7} of {len(result.values)} "
            f"points (max {result.khat_max:.2f}): the estimate for those points is unreliable (Yao et al. 2018); "
            f"use {advice}", ImportanceWarning,
        )
    return result




def impute_weighted(fit_or_model_guide, data, *, num_particles: int = 1000, seed: int = 0,
                    chunk_size: int | None = None) -> dict[str, torch.Tensor]:
    """E[x_mis | x_obs] by self-normalized importance sampling (Mattei & Frellsen 2019, "MIWAE", sec. 4.2):
    with K draws c_k ~ q(c | x_obs) of the local latents (the fitted guide), globals at the fit's point estimate,

        E[x_mis | x_obs] ~ sum_k wbar_k E[x_mis | c_k],  wbar_k = w_k / sum_j w_j,  w_k = p(x_obs, c_k) / q(c_k | x_obs)

    consistent as K grows whatever the guide (unlike averaging predictive draws from q, which inherits q's error: an
    encoder that reads missing pixels as 0 is biased). Returns ``mean`` (N, ...) with the observed entries kept,
    ``ess`` (N,), the effective sample size of the weights, and ``mask``. Needs a likelihood whose distribution has
    a ``mean`` and a model declaring :class:`ppvae.ConditionsOnSubset`."""
    prepared = _prepare(fit_or_model_guide, data, "guide", num_particles, chunk_size, seed)
    num, chunk_size, seed, model, guide, fit, ds, device, q, _, mpn, global_names, local_cont = prepared
    require(model, ConditionsOnSubset, "impute_weighted")
    if ds.mask is None:
        raise PPVAEError("impute_weighted: the data have no missing values (a Dataset with NaN entries or a mask=)")
    if not local_cont:
        raise PPVAEError("impute_weighted: the model has no continuous local latents to weight")
    site, n = model.masked_site(), len(ds)
    mean, ess = torch.empty(ds.x.shape, dtype=ds.x.dtype), torch.empty(n, dtype=torch.float64)
    with torch.no_grad(), pyro.validation_enabled(False), _seeded(seed, device):
        globals_ = _global_values(fit, model, guide, ds, global_names, None)

        def run(start: int, m: int) -> int:
            batch = ds.batch(torch.arange(start, start + m, device=device))
            with autoguide_subsample(q, n):
                log_w, traces = local_log_weights(model, q, batch, num, mpn, globals_, check=start == 0)
            check_log_weights(log_w, traces)
            w = torch.softmax(log_w.double(), 0)  # (K, m)
            cond = traces["model"].nodes[site]["fn"].mean  # E[x | c_k], (K, m', ...) (m' = 2 for one point)
            cond = cond.reshape((num, -1) + tuple(ds.x.shape[1:]))[:, :m].double()
            avg = (w.reshape(w.shape + (1,) * (cond.dim() - 2)) * cond).sum(0)
            mean[start:start + m] = torch.where(batch.mask, batch.x, avg.to(ds.x.dtype)).cpu()
            ess[start:start + m] = (1.0 / w.pow(2).sum(0)).cpu()
            return auto_chunk(traces, m, n, device)

        run_chunks(n, chunk_size, run, probe=max(2, min(16, 100_000 // num)))
    return {"mean": mean, "ess": ess, "mask": ds.mask.cpu()}
