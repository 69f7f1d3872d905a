"""Online LDA's local step (models/lda_online.py): the minibatch-batched E step against a plain per-document loop
(the algorithm of Hoffman, Blei & Bach 2010, alg. 2, and scikit-learn's ``_update_doc_distribution``, written out
in numpy one document at a time) and against batch CAVI's E step; exact to 1e-10. Seeded."""

import numpy as np
import pytest
import torch
from _helpers import planted_corpus
from scipy.special import digamma

from ppvae.infer.conjugate import expected_log_dirichlet
from ppvae.models.lda_cavi import _Sparse, e_step, lambda_update
from ppvae.models.lda_online import minibatch_e_step


def _per_document(x, elog_beta, alpha, max_iter, tol, zero_order=False):
    """One document at a time: gamma_d <- alpha + A_d * ((c_d / Z_d) @ B_d^T) until mean |change| < tol, then
    S[:, words] += outer(A_d, c_d / Z_d) * B_d (scikit-learn's form; B unscaled, exp E[log beta]). A_d =
    exp E[log theta_d], or gamma_d itself with ``zero_order`` (SCVB0's N_theta + alpha)."""
    expect = (lambda g: g) if zero_order else (lambda g: np.exp(digamma(g) - digamma(g.sum())))
    x, b = x.numpy(), np.exp(elog_beta.numpy())
    K = b.shape[0]
    gamma, stats = np.zeros((len(x), K)), np.zeros_like(b)
    for d, row in enumerate(x):
        words = np.flatnonzero(row)
        c, bd = row[words], b[:, words]
        g = np.full(K, alpha + row.sum() / K)
        for _ in range(max_iter):
            a = expect(g)
            new = alpha + a * ((c / (a @ bd)) @ bd.T)
            done = np.abs(new - g).mean() < tol
            g = new
            if done:
                break
        a = expect(g)
        stats[:, words] += np.outer(a, c / (a @ bd)) * bd
        gamma[d] = g
    return torch.from_numpy(gamma), torch.from_numpy(stats)


@pytest.fixture(scope="module")
def batch():
    ds, beta = planted_corpus(D=40, n=60, seed=3)
    x = ds.x.double()
    x[7] = 0.0  # an empty document: gamma stays alpha, no statistics
    lam = 50.0 * beta.double() + torch.rand(beta.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return x, expected_log_dirichlet(lam)


@pytest.mark.parametrize("max_iter,tol", [(100, 1e-3), (7, 1e-3), (500, 1e-9)])
def test_batched_e_step_equals_the_per_document_loop(batch, max_iter, tol):
    """Per-document stopping (documents freeze at different sweeps, some at the cap) gives what the loop gives,
    gamma and the statistics S_kw = sum_d c_dw phi_dwk to 1e-10 relative."""
    x, elog_beta = batch
    gamma, stats = minibatch_e_step(x, elog_beta, 0.3, max_iter=max_iter, tol=tol)
    ref_gamma, ref_stats = _per_document(x, elog_beta, 0.3, max_iter, tol)
    assert torch.allclose(gamma, ref_gamma, rtol=1e-10, atol=1e-12)
    assert torch.allclose(stats, ref_stats, rtol=1e-10, atol=1e-12 * ref_stats.abs().max().item())
    assert torch.equal(gamma[7], torch.full((3,), 0.3, dtype=torch.float64)) and stats.sum().item() == pytest.approx(
        x.sum().item(), rel=1e-12)  # every token's phi sums to one


@pytest.mark.parametrize("max_iter,tol", [(100, 1e-3), (500, 1e-9)])
def test_zero_order_e_step_is_scvb0s_document_fixed_point(batch, max_iter, tol):
    """zero_order=True (online LDA's warm-up, Foulds et al. 2013): with B = E[beta] (its log passed as elog_beta),
    the batched step equals the per-document loop with A_d = gamma_d to 1e-10; at tol 1e-9 gamma is SCVB0's
    fixed point gamma_dk = alpha + sum_w c_dw phi_dwk, phi_dwk = gamma_dk E[beta_kw] / sum_j gamma_dj E[beta_jw]
    (closed form, 1e-8), and S_kw = sum_d c_dw phi_dwk are the expected counts N_phi of those phi."""
    x, elog_beta = batch
    log_mean = elog_beta.exp() / elog_beta.exp().sum(-1, keepdim=True)
    log_mean = log_mean.log()
    gamma, stats = minibatch_e_step(x, log_mean, 0.3, max_iter=max_iter, tol=tol, zero_order=True)
    ref_gamma, ref_stats = _per_document(x, log_mean, 0.3, max_iter, tol, zero_order=True)
    assert torch.allclose(gamma, ref_gamma, rtol=1e-10, atol=1e-12)
    assert torch.allclose(stats, ref_stats, rtol=1e-10, atol=1e-12 * ref_stats.abs().max().item())
    if tol < 1e-6:
        mean = log_mean.exp()  # (K, V)
        phi = gamma.unsqueeze(-1) * mean.unsqueeze(0)  # (D, K, V)
        phi = phi / phi.sum(1, keepdim=True)
        assert torch.allclose(gamma, 0.3 + (x.unsqueeze(1) * phi).sum(-1), rtol=1e-8, atol=0)
        assert torch.allclose(stats, (x.unsqueeze(1) * phi).sum(0), rtol=1e-8, atol=1e-10)


def test_batched_e_step_equals_batch_cavis_e_step(batch):
    """The same fixed point as models.lda_cavi.e_step (CSR products, re-indexed each sweep) and its lambda update."""
    x, elog_beta = batch
    gamma, stats = minibatch_e_step(x, elog_beta, 0.3, max_iter=100, tol=1e-6)
    sp = _Sparse(x)
    ref = e_step(None, elog_beta, 0.3, None, 100, 1e-6, sp)
    assert torch.allclose(gamma, ref, rtol=1e-10, atol=0)
    assert torch.allclose(stats, lambda_update(sp, ref, elog_beta, 0.0), rtol=1e-10, atol=1e-13)


def test_cvb0_start_is_batch_cavis_start_on_a_subsample_scaled_to_the_corpus():
    """init={"cvb0": M}: lambda = eta + (D / M) N_kw with N from cvb0_init's sweeps on M documents drawn without
    replacement (the same draws, exactly); a sample larger than the corpus is refused, naming the argument."""
    from ppvae import PPVAEError
    from ppvae.models import LDA
    from ppvae.models.lda_cavi import cvb0_init

    ds, _ = planted_corpus(D=60, n=40, seed=2)
    x = ds.x.double()
    model = LDA(topics=3, alpha=0.3, eta=0.1)
    lam = model.ce_init(x, torch.Generator().manual_seed(5), {"cvb0": 20, "sweeps": 15})["lambda"]
    gen = torch.Generator().manual_seed(5)
    rows = torch.randperm(60, generator=gen)[:20]
    _, ref = cvb0_init(_Sparse(x[rows]), 3, 0.3, 0.1, 15, gen)
    assert torch.equal(lam, 0.1 + 3.0 * (ref - 0.1))
    assert (lam.sum(0) - 0.3).sum().item() == pytest.approx(3.0 * x[rows].sum().item(), rel=1e-6)  # tokens x D/M
    with pytest.raises(PPVAEError, match=r"init\['cvb0'\]"):
        model.ce_init(x, torch.Generator().manual_seed(5), {"cvb0": 61})
