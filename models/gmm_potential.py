"""The full-covariance GMM's potential and its gradient in closed form (the Fisher identity), for NUTS and SVI.

A full-covariance GMM's potential through Pyro (enumeration, ``MultivariateNormal``, ``LKJCholesky``, the
``CorrCholeskyTransform``) and autograd is a few hundred tiny tensor operations; written out here it is about a
hundred, with no autograd graph, which makes a traced SVI step several times cheaper (issue 24).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch


def ordered_locs(umu: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The locations with column ``idx`` ordered across components: mu_0 = u_0, mu_k = mu_{k-1} + exp(u_k); returns
    (mu, the steps u_0, exp(u_1), ...), whose tail is also d mu_k / d u_k (the diagonal and full GMM share it)."""
    steps = umu.index_select(1, idx).squeeze(1)
    steps = torch.cat([steps[:1], steps[1:].exp()])
    return umu.index_copy(1, idx, steps.cumsum(0).unsqueeze(1)), steps


def full_constants(x: torch.Tensor, K: int, concentration: float, loc_mean: torch.Tensor, loc_scale: torch.Tensor,
                   scale_median: torch.Tensor, column: int | None) -> dict:
    """The data- and prior-dependent constants of :func:`full_potential` (computed once per data set)."""
    N, D = x.shape
    a = concentration
    rows, cols = torch.tril_indices(D, D, -1, device=x.device)
    M = len(rows)
    # position in the flat (D, D) matrix -> 1 + index into the vector of strictly-lower entries (0: a zero)
    spread = torch.zeros(D * D, dtype=torch.long, device=x.device)
    spread[rows * D + cols] = torch.arange(1, M + 1, device=x.device)
    lkj_norm = float(dist.LKJCholesky(D, torch.tensor(1.0, dtype=torch.float64)).log_prob(
        torch.eye(D, dtype=torch.float64)))  # the normalizer: log diag(I) = 0
    const = (-0.5 * N * D * math.log(2 * math.pi) + math.lgamma(K * a) - K * math.lgamma(a)
             - K * float(loc_scale.log().sum()) - K * D * math.log(2 * math.pi) + K * lkj_norm)
    return {"x": x, "log_offset": torch.arange(K - 1, 0, -1, dtype=x.dtype, device=x.device).log(),
            "zero": x.new_zeros(1), "const": x.new_tensor(const), "alpha_m1": x.new_tensor(a - 1.0),
            "jac_weights": torch.cat([x.new_ones(K - 1), x.new_zeros(1)]), "loc_mean": loc_mean,
            "inv_loc_scale": 1 / loc_scale, "log_scale_median": scale_median.log(),
            "column": torch.tensor([column if column is not None else 0], device=x.device),
            "spread": spread, "gather": rows * D + cols, "eye": torch.eye(D, dtype=x.dtype, device=x.device),
            # the prior and Jacobian of the correlation factor weigh s_il = log sqrt(1 - t_il^2) by D - l
            "corr_weight": (D - torch.arange(D, dtype=x.dtype, device=x.device)).expand(D, D)}


def _weights(uw: torch.Tensor, c: dict):
    """log w from the stick-breaking coordinates (torch's ``StickBreakingTransform``), and (z, log(1 - z))."""
    t = uw - c["log_offset"]
    log1mz = torch.nn.functional.logsigmoid(-t)  # log(1 - z)
    zero = c["zero"]
    logw = torch.cat([t + log1mz, zero]) + torch.cat([zero, log1mz.cumsum(0)])  # log z = t + log(1 - z)
    return logw, torch.sigmoid(t), log1mz


def _weights_grad(nk: torch.Tensor, z: torch.Tensor, c: dict) -> torch.Tensor:
    """d/du_j of sum_k a_k log w_k = a_j (1 - z_j) - z_j sum_{k>j} a_k, with a = N_k + alpha - 1 (likelihood and
    prior) + 1 for k < K-1 (the log w_k of the stick-breaking Jacobian), whose log(1 - z_j) adds -z_j."""
    a = nk + c["alpha_m1"] + c["jac_weights"]
    tail = a.sum() - a.cumsum(0)
    return a[:-1] * (1 - z) - z * tail[:-1] - z


def _corr_cholesky(uc: torch.Tensor, c: dict, D: int):
    """torch's ``CorrCholeskyTransform`` of the (K, D(D-1)/2) coordinates: t = tanh(u) (clamped as torch clamps it)
    in the strictly lower triangle T, C_ij = (T_ij + [i = j]) prod_{l<j} sqrt(1 - T_il^2). Returns (C, T,
    S = log sqrt(1 - T^2), P_prev = prod_{l<j} sqrt(1 - T_il^2))."""
    eps = torch.finfo(uc.dtype).eps
    t = torch.tanh(uc).clamp(-1 + eps, 1 - eps)
    K = uc.shape[0]
    padded = torch.cat([uc.new_zeros(K, 1), t], -1)
    T = padded.index_select(-1, c["spread"]).view(K, D, D)
    S = 0.5 * torch.log1p(-T * T)
    log_prev = S.cumsum(-1) - S  # sum_{l<j} S_il
    P_prev = log_prev.exp()
    return (T + c["eye"]) * P_prev, T, S, P_prev


def full_potential(uw, umu, uv, uc, c: dict, column: int | None):
    """U(u) and dU/du for the full-covariance GMM (models/gmm.py) in the MCMC potential's unconstrained
    coordinates, without autograd. Returns (U, dU/du_w, dU/du_mu, dU/dv, dU/du_corr).

    Coordinates (torch's ``biject_to``): w = StickBreaking(u_w); mu = u_mu (one column ordered with ``column``);
    sigma = exp(v); C_k = CorrCholesky(u_corr,k); L_k = diag(sigma_k) C_k, Sigma_k = L_k L_k^T. With
    e_ik = L_k^{-1}(x_i - mu_k) and the responsibilities r_ik, the log-likelihood's gradient is the Fisher identity
    (Dempster, Laird & Rubin 1977, eq. 2.14): the r-weighted gradient of log[w_k N(x_i | mu_k, Sigma_k)], i.e.

        dL/dmu_k = L_k^{-T} sum_i r_ik e_ik,   dL/dL_k = tril(L_k^{-T} E_k) - N_k diag(1 / L_k,dd),

    E_k = sum_i r_ik e_ik e_ik^T; then dL/dv_kd = sum_j (dL/dL_k)_dj L_k,dj and dL/dC_k = diag(sigma_k) dL/dL_k.
    Through the correlation transform, with G = dL/dC, Y = C, t_ij in the strictly lower triangle,

        dL/du_ij = (1 - t_ij^2) G_ij prod_{l<j} sqrt(1 - t_il^2) - t_ij sum_{m>j} G_im Y_im,

    and the LKJ(1) prior plus the transform's log-Jacobian together are sum_{l<i} (D - l) log sqrt(1 - t_il^2),
    whose gradient is -(D - l) t_il. The weights' and scales' terms are the diagonal GMM's (models/gmm.py)."""
    K, D = umu.shape
    logw, z, log1mz = _weights(uw, c)
    if column is not None:
        idx = c["column"]
        mu, steps = ordered_locs(umu, idx)
    else:
        mu = umu
    sigma = uv.exp()
    C, T, S, P_prev = _corr_cholesky(uc, c, D)
    L = sigma.unsqueeze(-1) * C  # (K, D, D)
    diff = (c["x"].unsqueeze(1) - mu).permute(1, 2, 0)  # (K, D, N)
    e = torch.linalg.solve_triangular(L, diff, upper=False)  # L_k^{-1} (x_i - mu_k)
    log_diag = uv + S.sum(-1)  # log L_k,dd = log sigma_kd + log C_k,dd, and log C_k,dd = sum_l S_k,dl
    log_det = log_diag.sum(-1)
    comp = (logw - log_det).unsqueeze(-1) - 0.5 * (e * e).sum(1)  # (K, N): log w_k N(x_i | k) + D/2 log 2 pi
    top = comp.max(0, keepdim=True).values
    ex = (comp - top).exp()
    total = ex.sum(0, keepdim=True)
    r = ex / total  # responsibilities (K, N)
    nk = r.sum(-1)
    re = e * r.unsqueeze(1)
    Lt = L.transpose(-1, -2)
    g_mu = torch.linalg.solve_triangular(Lt, re.sum(-1).unsqueeze(-1), upper=True).squeeze(-1)
    outer = torch.linalg.solve_triangular(Lt, re @ e.transpose(-1, -2), upper=True)  # L_k^{-T} E_k
    GL = outer.tril() - c["eye"] * (nk.unsqueeze(-1) * (-log_diag).exp()).unsqueeze(-1)  # - N_k diag(1 / L_k,dd)
    g_v = (GL * L).sum(-1)
    G = sigma.unsqueeze(-1) * GL
    A = G * C
    tail = A.sum(-1, keepdim=True) - A.cumsum(-1)  # sum_{m>j} G_im C_im
    weight = c["corr_weight"]
    g_corr = ((1 - T * T) * G * P_prev - T * tail - weight * T).reshape(K, D * D).index_select(-1, c["gather"])
    dm = (mu - c["loc_mean"]) * c["inv_loc_scale"]
    dv = uv - c["log_scale_median"]
    log_joint = ((total.log() + top).sum() + c["const"] + c["alpha_m1"] * logw.sum() - 0.5 * (dm * dm).sum()
                 - 0.5 * (dv * dv).sum() + log1mz.sum() + logw[:-1].sum() + (weight * S).sum())
    g_mu = g_mu - dm * c["inv_loc_scale"]
    g_v = g_v - dv
    g_w = _weights_grad(nk, z, c)
    if column is not None:
        log_joint = log_joint + umu[1:].index_select(1, idx).sum()
        g_col = g_mu.index_select(1, idx).squeeze(1)
        tail_mu = g_col.flip(0).cumsum(0).flip(0)  # dL/du_kc = sum_{k' >= k} dL/dmu_k'c * dmu/du
        g_mu = g_mu.index_copy(1, idx, torch.cat([tail_mu[:1], steps[1:] * tail_mu[1:] + 1]).unsqueeze(1))
    return -log_joint, -g_w, -g_mu, -g_v, -g_corr


__all__ = ["full_constants", "full_potential", "ordered_locs"]
