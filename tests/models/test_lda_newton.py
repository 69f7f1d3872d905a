"""Newton updates of LDA's Dirichlet hyperparameters (models/lda_newton.py; Blei, Ng & Jordan 2003, A.2, A.4.2):
the asymmetric alpha's fixed point has zero gradient (1e-6) and equals a numerical maximization of the ELBO's
alpha part (scipy); that part differs from -sum_d KL(Dir(gamma_d) || Dir(alpha)) by a constant; the symmetric eta
likewise. Seeded."""

import pytest
import torch
from scipy import optimize
from torch.distributions import Dirichlet, kl_divergence

from ppvae.models.lda_newton import dirichlet_objective, newton_alpha, newton_dirichlet, newton_eta


@pytest.fixture(scope="module")
def gamma():
    g = torch.Generator().manual_seed(0)
    shape = torch.tensor([0.3, 1.0, 2.5, 0.7, 5.0], dtype=torch.float64).expand(60, 5)
    return torch._standard_gamma(shape, generator=g) * 3.0 + 0.05  # q(theta_d) of uneven topic use


def _neg_elbo_part(log_alpha, gamma, jac=False):
    """-sum_d E_q[log p(theta_d | alpha)] + const = sum_d KL(Dir(gamma_d) || Dir(alpha)) - sum_d H[q(theta_d)];
    with ``jac`` also its gradient in log alpha by autograd (independent of the Newton step's formulas)."""
    log_alpha = torch.tensor(log_alpha, dtype=torch.float64, requires_grad=True)
    value = kl_divergence(Dirichlet(gamma), Dirichlet(log_alpha.exp().expand_as(gamma))).sum()
    if not jac:
        return value.item()
    value.backward()
    return value.item(), log_alpha.grad.numpy()


def test_objective_is_the_elbos_alpha_part(gamma):
    a1, a2 = torch.tensor([0.2, 0.4, 1.0, 0.3, 2.0], dtype=torch.float64), torch.full((5,), 0.5, dtype=torch.float64)
    diff_kl = _neg_elbo_part(a1.log().numpy(), gamma) - _neg_elbo_part(a2.log().numpy(), gamma)
    assert dirichlet_objective(gamma, a1) - dirichlet_objective(gamma, a2) == pytest.approx(-diff_kl, rel=1e-10)


def test_newton_asymmetric_alpha_maximizes_the_elbo(gamma):
    alpha = newton_dirichlet(gamma, 0.1)
    D = len(gamma)
    s = (torch.digamma(gamma) - torch.digamma(gamma.sum(1, keepdim=True))).sum(0)
    grad = D * (torch.digamma(alpha.sum()) - torch.digamma(alpha)) + s
    assert grad.abs().max().item() < 1e-6
    ref = optimize.minimize(_neg_elbo_part, torch.zeros(5).numpy(), args=(gamma, True), jac=True, method="BFGS",
                            options={"gtol": 1e-9})
    ref_alpha = torch.tensor(ref.x).exp()
    assert torch.allclose(alpha, ref_alpha, rtol=1e-5)
    assert _neg_elbo_part(alpha.log().numpy(), gamma) <= ref.fun + 1e-9
    assert alpha.argmax().item() == 4 and alpha.argmin().item() == 0  # the uneven use is learned, not averaged


def test_newton_symmetric_alpha_and_eta_are_maximizers(gamma):
    """The 1-D Newton step (symmetric alpha, and eta on lambda's rows) against a bounded scalar maximization."""
    for conc in (gamma, gamma.T.contiguous() * 10):  # documents' gamma; then K = 60 'topics' over V = 5 words
        best = newton_alpha(conc, 0.1, tol=1e-12)
        ref = optimize.minimize_scalar(lambda la, c=conc: _neg_elbo_part([la] * c.shape[1], c), bounds=(-8, 4),
                                       method="bounded", options={"xatol": 1e-12})
        assert best == pytest.approx(float(torch.tensor(ref.x).exp()), rel=1e-5)
    assert newton_eta(gamma.T.contiguous() * 10, 0.1, tol=1e-12) == newton_alpha(gamma.T.contiguous() * 10, 0.1,
                                                                                 tol=1e-12)
