"""Posterior results from a guide's draws, corrected for the guide not being the posterior.

Draws theta_s ~ q from a variational guide are not posterior draws. With the guide's log importance weights
log r_s = log p(theta_s, X) - log q(theta_s) (:func:`ppvae.comparison.guide_diagnostics.guide_diagnostic`),
Pareto-smoothed (PSIS, Vehtari et al. 2024) and self-normalized to w_s, the corrected results are:

* weighted posterior summaries: E[f(theta) | X] ~ sum_s w_s f(theta_s) (mean and sd of every scalar parameter);
* PSIS-LOO for an approximate posterior (Magnusson, Andersen, Jonasson & Vehtari 2019, "Bayesian leave-one-out
  cross-validation for large data", sec. 3, eqs. 6-8; R's ``loo::loo_approximate_posterior``): per point i the
  ratios log r_is = log r_s - log p(x_i | theta_s) are Pareto-smoothed to w_is, and

      elpd_loo,i = log sum_s w_is p(x_i | theta_s) / sum_s w_is,

  with se = sqrt(N Var_i elpd_loo,i) and p_loo = lpd - elpd_loo, lpd = sum_i log sum_s w_s p(x_i | theta_s).

Without the correction (every r_s equal), an underdispersed guide predicts held-out points too confidently and its
"LOO" is not the posterior's. The result is trustworthy when both the guide's k-hat (over the globals) and the
per-point k-hat are below 0.7.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ppvae.evaluate.estimate import KHAT_THRESHOLD

__all__ = ["corrected_loo", "weighted_summary", "loo_record", "LOG_WEIGHT"]

LOG_WEIGHT = "log_importance_weight"  # the sample_stats variable of an SVI fit's InferenceData


def _psis(log_ratios: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed, normalized log weights per row of (rows, S) and each row's k-hat (``arviz.psislw``,
    relative efficiency 1: independent draws from the guide)."""
    import arviz  # heavy: loaded only when PSIS is computed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # arviz warns about k-hat; the caller reports it
        lw, k = arviz.psislw(np.asarray(log_ratios, dtype=np.float64), reff=1.0)
    return np.asarray(lw), np.atleast_1d(np.asarray(k, dtype=np.float64))


def _logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(a - m), axis=axis))


def corrected_loo(log_weights, loglik) -> dict:
    """PSIS-LOO of an approximate posterior (module docstring) from ``log_weights`` (S,) = log p(theta_s, X) -
    log q(theta_s) and ``loglik`` (S, N) = log p(x_i | theta_s). Returns elpd_loo, elpd_loo_se, p_loo, lpd,
    pointwise (N,), khat (N,) per point, guide_khat (the k-hat of the weights over the globals)."""
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    ll = np.asarray(loglik, dtype=np.float64)
    if ll.ndim != 2 or ll.shape[0] != lw.shape[0]:
        raise ValueError(f"loglik: expected shape (S, N) with S = {lw.shape[0]}; got {ll.shape}")
    post, guide_k = _psis(lw[None])
    lpd_i = _logsumexp(post[0][:, None] + ll, 0)
    loo_lw, k = _psis(lw[None, :] - ll.T)
    elpd_i = _logsumexp(loo_lw + ll.T, 1)
    n = ll.shape[1]
    return {"elpd_loo": float(elpd_i.sum()), "elpd_loo_se": float(math.sqrt(n * elpd_i.var())),
            "p_loo": float((lpd_i - elpd_i).sum()), "lpd": float(lpd_i.sum()), "pointwise": elpd_i, "khat": k,
            "guide_khat": float(guide_k[0])}


def weighted_summary(draws: dict, log_weights) -> dict:
    """{"site[i,j]": {"mean", "sd"}}: the PSIS-weighted posterior mean and sd of every scalar parameter, from
    draws site -> (S, ...) and their log importance weights (S,)."""
    w, _ = _psis(np.asarray(log_weights, dtype=np.float64).reshape(1, -1))
    w = torch.as_tensor(np.exp(w[0]))
    out = {}
    for name, value in draws.items():
        v = torch.as_tensor(value).double().reshape(len(w), -1)
        mean = (w[:, None] * v).sum(0)
        sd = ((w[:, None] * (v - mean) ** 2).sum(0)).clamp_min(0).sqrt()
        shape = tuple(torch.as_tensor(value).shape[1:])
        for j in range(v.shape[1]):
            idx = np.unravel_index(j, shape) if shape else ()
            key = name + (f"[{','.join(str(int(i)) for i in idx)}]" if idx else "")
            out[key] = {"mean": float(mean[j]), "sd": float(sd[j])}
    return out


def loo_record(idata) -> dict:
    """compare's LOO columns from an InferenceData: corrected PSIS-LOO when it carries the guide's log importance
    weights (sample_stats ``log_importance_weight``, an SVI fit), else ``arviz.loo`` (MCMC, exact draws)."""
    import arviz as az  # heavy: loaded only when ArviZ summaries are needed

    ll_name = next(iter(idata.log_likelihood.data_vars))
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and LOG_WEIGHT in stats:
        lw = np.asarray(stats[LOG_WEIGHT].values).reshape(-1)
        ll = np.asarray(idata.log_likelihood[ll_name].values)
        out = corrected_loo(lw, ll.reshape(len(lw), -1))
        k = out["khat"]
        warn = None
        if out["guide_khat"] > KHAT_THRESHOLD:
            warn = (f"guide k-hat {out['guide_khat']:.2f} > {KHAT_THRESHOLD}: the guide is too far from the posterior "
                    "for the corrected LOO to be reliable")
        return {"elpd_loo": _finite(out["elpd_loo"]), "elpd_loo_se": _finite(out["elpd_loo_se"]),
                "p_loo": _finite(out["p_loo"]), "khat_max": _finite(np.nanmax(k)) if np.isfinite(k).any() else None,
                "num_khat_over_0_7": int((k > KHAT_THRESHOLD).sum()), "loo_warning": warn, "loo_corrected": True}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loo = az.loo(idata, pointwise=True)
    k = np.asarray(loo.pareto_k)
    finite = k[np.isfinite(k)]
    return {"elpd_loo": _finite(loo.elpd_loo), "elpd_loo_se": _finite(loo.se), "p_loo": _finite(loo.p_loo),
            "khat_max": _finite(finite.max()) if finite.size else None, "num_khat_over_0_7": int((k > 0.7).sum()),
            "loo_warning": "; ".join(sorted({str(w.message).split("\n")[0] for w in caught})) or None,
            "loo_corrected": False}


def _finite(v):
    v = float(v)
    return v if math.isfinite(v) else None
