"""``ppvae evaluate`` on run directories whose kind needs no sampler (SVI runs: :func:`ppvae.cli.ais.evaluate_run`).

What each kind reports per data point x_i (the ``log_marginal`` entry of metrics.json has the same keys
as for an SVI run; ``quantity`` says which number it is):

* **em** -- log p(x_i | theta_hat), exact: the model's closed-form E step at the EM parameters, with the
  discrete latents summed out (for a GMM, log sum_k w_k N(x_i | mu_k, Sigma_k)).
* **mcmc** -- the log pointwise predictive density lppd_i = log (1/S) sum_s p(x_i | theta_s) over the S
  saved draws (Gelman, Hwang & Vehtari 2014, eq. 5; discrete latents enumerated exactly), beside PSIS-LOO
  (``arviz.loo`` on the same pointwise log-likelihood; Vehtari, Gelman & Gabry 2017): elpd_loo, its
  standard error, p_loo = lppd - elpd_loo, and per-point Pareto k-hat (> 0.7: unreliable).
* **cavi** (registered by LDA's model family, ``models/lda.py``) -- the per-document ELBO bound.

Each kind's evaluator is registered with :func:`ppvae.results.register_evaluator`; this module registers
EM's and MCMC's and writes what every evaluator returns.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ppvae._util.validation import PPVAEError
from ppvae.comparison.inference_data import pointwise_log_likelihood
from ppvae.infer.em import EMFit
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.plots.figures import plot_log_marginal
from ppvae.results.kinds import Pointwise, kind_of, register_evaluator
from ppvae.runs import directory as runs

__all__ = ["evaluate_saved", "psis_loo", "describe", "check_shape"]


def check_shape(ds, info: dict) -> None:
    expected = tuple(info["x_shape"][1:])
    if tuple(ds.x.shape[1:]) != expected:
        raise PPVAEError(f"data: the run was fitted on points of shape {expected}; "
                         f"got points of shape {tuple(ds.x.shape[1:])}")


def psis_loo(log_lik: torch.Tensor, samples: dict) -> tuple[dict, np.ndarray]:
    """PSIS-LOO by ``arviz.loo`` from log p(x_i | theta_{c,s}) of shape (chains, draws, N) and the draws
    (site -> (chains, draws, ...); arviz takes the relative ESS from them): the summary (elpd_loo,
    elpd_loo_se, p_loo, khat_max, num_khat_over_0_7, loo_warning) and the per-point k-hat."""
    import arviz as az  # optional heavy dependency, loaded only for MCMC runs

    ll = log_lik.double().numpy()
    posterior = {k: v.double().numpy() for k, v in samples.items()}
    idata = az.from_dict(posterior=posterior, log_likelihood={"x": ll})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = az.loo(idata, pointwise=True)
    k = np.asarray(loo.pareto_k, dtype=float)
    finite = k[np.isfinite(k)]
    summary = {"elpd_loo": float(loo.elpd_loo), "elpd_loo_se": float(loo.se), "p_loo": float(loo.p_loo),
               "khat_max": float(finite.max()) if finite.size else None, "num_khat_over_0_7": int((k > 0.7).sum()),
               "loo_warning": "; ".join(sorted({str(w.message).split("\n")[0] for w in caught})) or None}
    return summary, k


def _em(run_dir: str, ds, own_data: bool) -> Pointwise:
    fit = EMFit.load(run_dir)
    check_shape(ds, fit.data_info)
    with torch.no_grad():
        _, values = fit.model.em_step(ds.x.to(torch.float64), fit.params)
    return Pointwise(fit.model.name, values.double(), "log p(x_i | EM parameters), exact", exact=True,
                     extra={"num_particles": None})


def _mcmc(run_dir: str, ds, own_data: bool) -> Pointwise:
    result = MCMCResult.load(run_dir)
    check_shape(ds, result.data_info)
    ll = pointwise_log_likelihood(result.model, ds, result.flat_samples(), chunk_size=250).double()  # (S, N)
    num = ll.shape[0]
    values = torch.logsumexp(ll, 0) - math.log(num)
    loo, khat = psis_loo(ll.reshape(result.num_chains, result.num_draws, -1), result.samples)
    extra = {"num_particles": None, "num_draws": num, "lppd": float(values.sum()), "loo": loo,
             "khat_max": loo["khat_max"], "num_khat_over_0_7": loo["num_khat_over_0_7"]}
    khat_text = "n/a" if loo["khat_max"] is None else f"{loo['khat_max']:.3f}"
    lines = [f"PSIS-LOO: elpd_loo {loo['elpd_loo']:.3f} (se {loo['elpd_loo_se']:.3f}), p_loo "
             f"{loo['p_loo']:.2f}; k-hat max {khat_text}; {loo['num_khat_over_0_7']} points with k-hat > 0.7 "
             f"({num} draws)"]
    return Pointwise(result.model.name, values, "lppd_i = log mean_s p(x_i | theta_s)", khat=khat, extra=extra,
                     describe=lines)


register_evaluator("em", _em)
register_evaluator("mcmc", _mcmc)


def evaluate_saved(run_dir: str, data: str | None = None, *, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Per-point numbers of a run whose kind registered an evaluator (EM, MCMC, CAVI: no sampler needed) on
    ``data`` (default: the run's own data), added to ``metrics.json`` as ``log_marginal`` with
    ``log_marginal.png``; returns (values, entry)."""
    spec = kind_of(run_dir)
    if spec.evaluator is None:
        raise PPVAEError(f"run_dir: {run_dir} holds a run of kind '{spec.name}', whose log p(x) is estimated by "
                         "importance sampling: use ppvae.cli.ais.evaluate_run")
    config = runs.read_config(run_dir)
    ds = runs.run_dataset(config["data"], data)
    point = spec.evaluator(run_dir, ds, data is None)
    values, n = point.values, len(point.values)
    entry = {"mean": float(values.mean()), "stderr": float(values.std() / math.sqrt(n)) if n > 1 else None,
             "total": float(values.sum()), "num_points": n, "proposal": None, "ess_mean": None, "ess_min": None,
             "khat_max": None, "num_khat_over_0_7": 0, "mc_stderr": 0.0 if point.exact else None,
             "elbo_mean": float(values.mean()) if point.elbo_per_point else None, "gap_mean": None,
             "chunk_size": None, "method": spec.name, "quantity": point.quantity, "exact": point.exact,
             **point.extra, "data": ds.name, "seed": seed, "warnings": [], "describe": point.describe}
    if point.extra.get("num_khat_over_0_7"):
        entry["warnings"].append(f"PSIS-LOO: Pareto k-hat > 0.7 for {point.extra['num_khat_over_0_7']} of {n} "
                                 "points: elpd_loo is unreliable for those points (Vehtari et al. 2017)")
    runs.update_metrics(run_dir, "log_marginal", {k: v for k, v in entry.items() if k != "describe"})
    khat = np.full(n, np.nan) if point.khat is None else point.khat
    runs.write_figure(run_dir, "log_marginal.png", lambda path: plot_log_marginal(
        values.numpy(), khat, path, f"{point.model_name} ({spec.name}): {point.quantity}"))
    return values, entry


def describe(entry: dict) -> list[str]:
    """What ``ppvae evaluate`` prints for a run evaluated by its kind's evaluator."""
    se = float("nan") if entry["stderr"] is None else entry["stderr"]
    return [f"{entry['quantity']}: mean {entry['mean']:.4f} over {entry['num_points']} points (standard error "
            f"over points {se:.4f}), total {entry['total']:.3f}", *entry.get("describe", [])]
