"""Newton updates of LDA's Dirichlet hyperparameters (Blei, Ng & Jordan 2003, appendix A.4.2; Minka 2000)."""

from __future__ import annotations

import math

import torch

from ppvae.infer.conjugate import expected_log_dirichlet

__all__ = ["newton_alpha"]


def newton_alpha(gamma: torch.Tensor, alpha: float, max_iter: int = 50, tol: float = 1e-8) -> float:
    """Symmetric alpha maximizing f(a) = D[lgamma(K a) - K lgamma(a)] + (a - 1) sum_dk E[log theta_dk]
    by Newton's method in log a (Blei et al. 2003, A.4.2; Minka 2000), with step halving so f never
    decreases."""
    D, K = gamma.shape
    s = expected_log_dirichlet(gamma).sum().item()

    def f(a):
        return D * (math.lgamma(K * a) - K * math.lgamma(a)) + (a - 1) * s

    log_a = math.log(alpha)
    for _ in range(max_iter):
        a = math.exp(log_a)
        t = torch.tensor([K * a, a], dtype=torch.float64)
        dg, tg = torch.digamma(t).tolist(), torch.polygamma(1, t).tolist()
        grad = D * K * (dg[0] - dg[1]) + s  # df/da
        hess = D * K * (K * tg[0] - tg[1])  # d2f/da2 < 0
        g_log, h_log = grad * a, hess * a * a + grad * a  # derivatives in log a
        step = -g_log / h_log if h_log < 0 else math.copysign(1.0, g_log)
        while f(math.exp(log_a + step)) < f(a) and abs(step) > 1e-12:
            step /= 2
        log_a += step
        if abs(step) < tol:
            break
    return math.exp(log_a)
