"""Newton updates of LDA's Dirichlet hyperparameters (Blei, Ng & Jordan 2003, appendix A.4.2; Minka 2000)."""

from __future__ import annotations

import math

import torch

from ppvae.infer.conjugate import expected_log_dirichlet

__all__ = ["dirichlet_objective", "newton_alpha", "newton_dirichlet", "newton_eta"]


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


def dirichlet_objective(gamma: torch.Tensor, alpha: torch.Tensor) -> float:
    """f(alpha) = D [lgamma(sum_k alpha_k) - sum_k lgamma(alpha_k)] + sum_k (alpha_k - 1) sum_d E[log theta_dk],
    E under q(theta_d) = Dir(gamma_d): the alpha-dependent part of the LDA ELBO (sum_d E_q[log p(theta_d | alpha)];
    Blei et al. 2003, eq. 15 and A.4.2). Concave in alpha (Minka 2000, sec. 1)."""
    s = expected_log_dirichlet(gamma).sum(0)
    return (len(gamma) * (torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum()) + ((alpha - 1) * s).sum()).item()


def newton_dirichlet(gamma: torch.Tensor, alpha, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """The asymmetric alpha (K,) maximizing :func:`dirichlet_objective` by Newton's method in linear time
    (Blei, Ng & Jordan 2003, appendix A.2 and A.4.2; Minka 2000, sec. 3). Gradient and Hessian:

        g_k = D [psi(sum_j alpha_j) - psi(alpha_k)] + sum_d E[log theta_dk],
        H = diag(h) + z 1 1^T,   h_k = -D psi'(alpha_k),   z = D psi'(sum_j alpha_j),

    so (H^-1 g)_k = (g_k - c) / h_k with c = sum_j (g_j / h_j) / (1 / z + sum_j 1 / h_j) (A.2), and
    alpha <- alpha - H^-1 g. The step is halved until alpha stays positive and f does not decrease; stops when the
    largest |step| is below ``tol`` x max alpha. ``alpha``: the start, a scalar or (K,). float64."""
    D, K = gamma.shape
    alpha = torch.as_tensor(alpha, dtype=torch.float64).expand(K).clone()
    s = expected_log_dirichlet(gamma.double()).sum(0)
    for _ in range(max_iter):
        total = alpha.sum()
        g = D * (torch.digamma(total) - torch.digamma(alpha)) + s
        h = -D * torch.polygamma(1, alpha)
        z = D * torch.polygamma(1, total)
        c = (g / h).sum() / (1 / z + (1 / h).sum())
        step = (g - c) / h  # H^-1 g
        f0, scale = dirichlet_objective(gamma, alpha), 1.0
        while scale > 1e-12 and ((alpha - scale * step).min() <= 0
                                 or dirichlet_objective(gamma, alpha - scale * step) < f0):
            scale /= 2
        alpha = alpha - scale * step
        if (scale * step).abs().max() < tol * alpha.max():
            break
    return alpha


def newton_eta(lam: torch.Tensor, eta: float, **options) -> float:
    """The symmetric eta maximizing the eta-dependent part of the ELBO, -sum_k KL(Dir(lambda_k) || Dir(eta 1_V)) up to
    terms free of eta: :func:`newton_alpha` on the K topics' lambda_k (V-dimensional) in place of the documents'
    gamma_d (Blei et al. 2003, A.4.2 applies to any Dirichlet with Dirichlet variational factors)."""
    return newton_alpha(lam, eta, **options)
