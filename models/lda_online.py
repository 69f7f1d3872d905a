"""The local step of online LDA (Hoffman, Blei & Bach 2010, alg. 2, lines 4-8): the per-document CAVI loop on
(phi_d, gamma_d) with E[log beta] fixed, for a whole minibatch at once.

For document d with counts c_dw and A_dk = exp E[log theta_dk], B_kw = exp E[log beta_kw] (each scaled by its
maximum, which cancels in phi), the fixed point iterated is

    Z_dw = sum_k A_dk B_kw,   gamma_dk <- alpha + A_dk sum_w c_dw B_kw / Z_dw     (phi_dwk = A_dk B_kw / Z_dw),

until the mean |change| of gamma_d is below ``tol`` or ``max_iter`` sweeps (scikit-learn's ``mean_change_tol`` and
``max_doc_update_iter``). Documents are independent given lambda, so the minibatch runs as one batched fixed
point over the nonzero (d, w) entries: a document that has converged is frozen (a mask) and the entries of frozen
documents are dropped from the arrays once they are at least a quarter of them, so the work follows the documents
still moving, as a per-document loop's does, without re-indexing every sweep. The result equals the per-document
loop (tests/models/test_lda_online.py: to 1e-10). The statistics returned are those of the final gamma,
S_kw = sum_d c_dw phi_dwk, the minibatch's part of lambda_hat = eta + (D / M) S.

``zero_order=True`` is the local step of stochastic zero-order collapsed VB (SCVB0; Foulds, Boyles, DuBois, Smyth &
Welling 2013, alg. 1), online LDA's warm-up (``LDA.ce_local_warmup``). In SCVB0's counts lambda = eta + N_phi (so
N_phi,wk + eta = lambda_kw, N_z,k + V eta = sum_v lambda_kv) and gamma_d = alpha + N_theta,d; a token's
responsibilities are CVB0's without the token left out (Foulds et al. eq. 5; Asuncion et al. 2009, eq. 5),

    phi_dwk  ∝  (lambda_kw / sum_v lambda_kv) gamma_dk,

i.e. A_dk = gamma_dk and B_kw = E[beta_kw] in place of the exponentiated expected logs (the caller passes
log E[beta] as ``elog_beta``). Iterated to the fixed point gamma_dk = alpha + sum_w c_dw phi_dwk, this is the limit
of SCVB0's burn-in passes over a document with a word's tokens clumped; S is then SCVB0's N_phi-hat and the
driver's step lambda <- (1 - rho) lambda + rho (eta + (D / M) S) its update of N_phi (alg. 1 scales by tokens,
C / |M|, where we scale by documents as online LDA does, and has its own schedule s / (tau + t)^kappa; we keep
online LDA's).
"""

from __future__ import annotations

import torch

from ppvae.infer.conjugate import expected_log_dirichlet

__all__ = ["minibatch_e_step", "sufficient_statistics"]


def _exp_scaled(values: torch.Tensor, dim: int) -> torch.Tensor:
    """exp(values - max along ``dim``): the per-row (column) scale cancels in phi."""
    return (values - values.max(dim, keepdim=True).values).exp()


def _compact(live, doc, b_nz, count):
    """Keep only the entries of the ``live`` documents, documents renumbered 0..n_live-1."""
    remap = torch.full((len(live),), -1, dtype=torch.long)
    remap[live] = torch.arange(int(live.sum()))
    keep = live[doc]
    return remap[doc[keep]], b_nz[keep], count[keep]


def _theta_factor(gamma: torch.Tensor, zero_order: bool) -> torch.Tensor:
    """A_dk: exp E[log theta_dk] (mean field), or gamma_dk itself (zero order), each scaled by its row maximum."""
    if zero_order:
        return gamma / gamma.max(1, keepdim=True).values
    return _exp_scaled(expected_log_dirichlet(gamma), 1)


def minibatch_e_step(x: torch.Tensor, elog_beta: torch.Tensor, alpha: float, gamma: torch.Tensor | None = None,
                     max_iter: int = 100, tol: float = 1e-3, zero_order: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(gamma (M, K), S (K, V)) for the documents ``x`` (M, V) (module docstring), from ``gamma`` (default
    alpha + n_d / K, the symmetric point). float64 in, float64 out; zero rows keep gamma = alpha."""
    doc, word = x.nonzero(as_tuple=True)  # row-major: grouped by document
    count = x[doc, word]
    M, K = x.shape[0], elog_beta.shape[0]
    b_t = _exp_scaled(elog_beta, 0).T.contiguous()  # (V, K)
    if gamma is None:
        gamma = alpha + x.sum(1, keepdim=True).expand(M, K) / K
    gamma = gamma.clone()
    rows, live, g = torch.arange(M), torch.ones(M, dtype=torch.bool), gamma
    d, b_nz, c = doc, b_t.index_select(0, word), count
    for _ in range(max_iter):
        a = _theta_factor(g, zero_order)
        z = (a.index_select(0, d) * b_nz).sum(-1)
        new = alpha + a * torch.zeros_like(g).index_add_(0, d, b_nz * (c / z).unsqueeze(-1))
        moving = (new - g).abs().mean(1) >= tol
        g = torch.where(live.unsqueeze(-1), new, g)
        live = live & moving
        n_live = int(live.sum())
        if n_live == 0:
            break
        if n_live <= 0.75 * len(live):
            gamma[rows] = g
            d, b_nz, c = _compact(live, d, b_nz, c)
            rows, g, live = rows[live], g[live], torch.ones(n_live, dtype=torch.bool)
    gamma[rows] = g
    return gamma, sufficient_statistics(doc, word, count, gamma, b_t, zero_order)


def sufficient_statistics(doc, word, count, gamma, b_t, zero_order: bool = False) -> torch.Tensor:
    """S_kw = sum_d c_dw phi_dwk with phi at its optimum for (gamma, B): B_kw sum_d A_dk c_dw / Z_dw, (K, V)."""
    a = _theta_factor(gamma, zero_order)
    a_nz = a.index_select(0, doc)
    b_nz = b_t.index_select(0, word)
    z = (a_nz * b_nz).sum(-1)
    s = torch.zeros_like(b_t).index_add_(0, word, a_nz * (count / z).unsqueeze(-1))
    return (s * b_t).T

