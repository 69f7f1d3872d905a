"""Does a method's posterior differ from MCMC's by more than Monte Carlo noise? Per scalar parameter:

* **mean**: z = (mean_q - mean_mcmc) / sqrt(MCSE_mcmc^2 + sd_q^2 / S), MCSE_mcmc from the chains' effective sample
  size (``arviz.mcse(method="mean")``, Vehtari et al. 2021), the S draws of the other method independent (a guide,
  exact draws). |z| > 3 is a real difference.
* **sd ratio** sd_q / sd_mcmc with a 95% interval from se(log ratio) = sqrt((MCSE(sd_mcmc) / sd_mcmc)^2 +
  1 / (2 (S - 1))) (delta method; ``arviz.mcse(method="sd")``). An interval that excludes 1 is a real difference.
* **distance**: the 1-D Wasserstein-1 distance between the method's draws and the MCMC draws, against the same
  distance between the first and second halves of the MCMC chains (the distance that MCMC noise alone produces at
  half the draws, an upper reference). W1 > 2 x the halves' W1 (and > 0.1 sd, so exact agreement is never flagged
  for noise) is a real difference in shape.

Convergence (Vehtari, Gelman, Simpson, Carpenter & Bürkner 2021, sec. 4): R-hat <= 1.01 and bulk ESS >= 100 per
chain for every parameter, else the chains are not converged and no verdict against them means anything.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RHAT_MAX", "ESS_PER_CHAIN_MIN", "reference_stats", "verdict", "verdict_line"]

RHAT_MAX = 1.01
ESS_PER_CHAIN_MIN = 100
Z_REAL = 3.0
W1_RATIO_REAL = 2.0


def _keys(name: str, shape: tuple) -> list[tuple[str, tuple]]:
    out = []
    for j in range(int(np.prod(shape)) if shape else 1):
        idx = np.unravel_index(j, shape) if shape else ()
        out.append((name + (f"[{','.join(str(int(i)) for i in idx)}]" if idx else ""), tuple(int(i) for i in idx)))
    return out


def _w1(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import wasserstein_distance  # scipy comes with scikit-learn and arviz

    return float(wasserstein_distance(a, b))


def reference_stats(idata) -> dict:
    """Per scalar parameter of an MCMC InferenceData: mean, sd, mcse_mean, mcse_sd, ess_bulk, rhat (None for
    one chain), w1_halves and the flat draws (a numpy array, for :func:`verdict`). Constant entries are left out."""
    import arviz as az  # heavy: loaded only when ArviZ summaries are needed

    post = idata.posterior
    mcse_mean, mcse_sd = az.mcse(idata, method="mean"), az.mcse(idata, method="sd")
    ess = az.ess(idata, method="bulk")
    rhat = az.rhat(idata) if post.sizes["chain"] >= 2 else None
    out = {}
    for var in post.data_vars:
        values = np.asarray(post[var].values, dtype=np.float64)  # (chains, draws, *shape)
        half = values.shape[1] // 2
        for key, idx in _keys(var, values.shape[2:]):
            v = values[(slice(None), slice(None)) + idx]
            if not v.std() > 0:
                continue
            out[key] = {"mean": float(v.mean()), "sd": float(v.std()),
                        "mcse_mean": float(np.asarray(mcse_mean[var].values)[idx]),
                        "mcse_sd": float(np.asarray(mcse_sd[var].values)[idx]),
                        "ess_bulk": float(np.asarray(ess[var].values)[idx]),
                        "rhat": None if rhat is None else float(np.asarray(rhat[var].values)[idx]),
                        "w1_halves": _w1(v[:, :half].ravel(), v[:, half:].ravel()), "draws": v.ravel()}
    return out


def verdict(draws: dict, reference: dict) -> dict:
    """Per scalar parameter present in both: z of the mean difference, the sd ratio with its 95% interval, the W1
    distance and the halves' W1, and ``real``: the list of real differences ("mean", "sd", "shape")."""
    out = {}
    for name, value in draws.items():
        v = np.asarray(value, dtype=np.float64)
        flat = v.reshape(v.shape[0], -1)
        for j, (key, _) in enumerate(_keys(name, v.shape[1:])):
            ref = reference.get(key)
            if ref is None or flat.shape[0] < 2:
                continue
            x, s = flat[:, j], flat.shape[0]
            z = (x.mean() - ref["mean"]) / math.sqrt(ref["mcse_mean"] ** 2 + x.var() / s)
            ratio = x.std() / ref["sd"]
            se = math.sqrt((ref["mcse_sd"] / ref["sd"]) ** 2 + 1 / (2 * (s - 1)))
            low, high = ratio * math.exp(-1.96 * se), ratio * math.exp(1.96 * se)
            w1 = _w1(x, ref["draws"])
            real = (["mean"] if abs(z) > Z_REAL else []) + (["sd"] if not low <= 1 <= high else []) + (
                ["shape"] if w1 > W1_RATIO_REAL * ref["w1_halves"] and w1 > 0.1 * ref["sd"] else [])
            out[key] = {"z_mean": float(z), "sd_ratio": float(ratio), "sd_ratio_low": float(low),
                        "sd_ratio_high": float(high), "w1": w1, "w1_halves": ref["w1_halves"], "real": real}
    return out


def verdict_line(per_key: dict) -> str:
    """'agrees' or 'differs: w[1] (mean, sd), b (sd)'."""
    real = [f"{k} ({', '.join(v['real'])})" for k, v in per_key.items() if v["real"]]
    return "differs: " + "; ".join(real) if real else "agrees"


def converged(reference: dict, num_chains: int) -> tuple[bool, str | None]:
    """(whether every parameter has R-hat <= 1.01 and bulk ESS >= 100 per chain, the reason when not)."""
    bad_rhat = [k for k, r in reference.items() if r["rhat"] is not None and r["rhat"] > RHAT_MAX]
    bad_ess = [k for k, r in reference.items() if r["ess_bulk"] < ESS_PER_CHAIN_MIN * num_chains]
    reasons = []
    if bad_rhat:
        worst = max(reference[k]["rhat"] for k in bad_rhat)
        reasons.append(f"R-hat > {RHAT_MAX} for {len(bad_rhat)} parameter(s) (max {worst:.3f})")
    if bad_ess:
        worst = min(reference[k]["ess_bulk"] for k in bad_ess)
        reasons.append(f"bulk ESS < {ESS_PER_CHAIN_MIN} per chain for {len(bad_ess)} parameter(s) (min {worst:.0f} "
                       f"over {num_chains} chain(s))")
    return (not reasons), "; ".join(reasons) or None
