"""The Normal-Gamma model's closed forms (Murphy 2007, eqs. 85-95) against numerical integration and
Bayes' identity, and the evidence estimate of ppvae.log_evidence against the closed form."""

import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.stats as st
import torch

import ppvae
from ppvae.models import NormalGamma

HYPER = dict(mu0=0.5, lambda0=2.0, a0=3.0, b0=2.0)


@pytest.fixture(scope="module")
def data():
    return torch.randn(30, 1, generator=torch.Generator().manual_seed(0)) * 0.7 + 1.0


def _log_joint(x, mu, tau, h=HYPER):
    """log p(x, mu, tau) in scipy, independent of the model's code."""
    ss = ((x[:, None] - mu) ** 2).sum(0)
    return (st.gamma.logpdf(tau, h["a0"], scale=1 / h["b0"])
            + st.norm.logpdf(mu, h["mu0"], 1 / np.sqrt(h["lambda0"] * tau))
            + 0.5 * len(x) * np.log(tau / (2 * np.pi)) - 0.5 * tau * ss)


def test_evidence_and_moments_match_quadrature(data):
    """log p(D), E[mu], E[tau], Var[mu] by Simpson's rule on a 1201 x 1201 grid over the posterior's
    bulk agree with the closed forms to 1e-6 (relative)."""
    model = NormalGamma(**HYPER)
    x = data[:, 0].double().numpy()
    post = model.exact_posterior(data)
    ref = model.log_evidence_exact(data)
    mu = np.linspace(post.mu_n - 2.5, post.mu_n + 2.5, 1201)
    tau = np.linspace(1e-6, 10 * post.mean_tau, 1201)
    M, T = np.meshgrid(mu, tau, indexing="ij")
    dens = np.exp(_log_joint(x, M.ravel(), T.ravel()).reshape(M.shape) - ref)  # p(mu, tau | D) if ref is right

    def integral(g):
        return si.simpson(si.simpson(g * dens, x=tau, axis=1), x=mu)

    assert integral(1.0) == pytest.approx(1.0, rel=1e-6)  # i.e. log p(D) matches quadrature to 1e-6
    assert integral(M) == pytest.approx(post.mean_mu, rel=1e-6)
    assert integral(T) == pytest.approx(post.mean_tau, rel=1e-6)
    assert integral((M - post.mean_mu) ** 2) == pytest.approx(post.var_mu, rel=1e-5)


def test_bayes_identity_at_arbitrary_points(data):
    """log p(D) = log p(D, mu, tau) - log NG(mu, tau | posterior) for any (mu, tau), to 1e-9."""
    model = NormalGamma(**HYPER)
    post = model.exact_posterior(data)
    x = data[:, 0].double().numpy()
    for mu, tau in [(0.0, 0.5), (1.2, 2.0), (-1.0, 4.0)]:
        log_post = st.gamma.logpdf(tau, post.a_n, scale=1 / post.b_n) + st.norm.logpdf(
            mu, post.mu_n, 1 / math.sqrt(post.lambda_n * tau))
        value = _log_joint(x, np.array([mu]), np.array([tau]))[0] - log_post
        assert value == pytest.approx(model.log_evidence_exact(data), abs=1e-9)
    assert post.var_tau == pytest.approx(post.a_n / post.b_n**2)
    assert post.var_mu == pytest.approx(post.b_n / (post.lambda_n * (post.a_n - 1)))
    assert post.corr_mu_tau == 0.0


def test_log_evidence_with_fitted_guide_within_three_stderr(data):
    """S = 1,000 draws from a fitted AutoNormal: |log p-hat(D) - exact| < 3 stderr, and the prior as
    proposal has a far smaller ESS and a larger gap to its ELBO; the exact posterior as proposal gives
    every weight = p(D)."""
    model = NormalGamma(**HYPER)
    ds = ppvae.Dataset(data)
    fit = ppvae.fit(model, ds, guide="auto_normal", steps=400, lr=0.05, lr_schedule="cosine", progress=False, seed=0)
    exact = model.log_evidence_exact(data)
    est = ppvae.log_evidence(fit, ds, num_particles=1000, seed=0)
    assert abs(est.value - exact) < 3 * est.stderr + 1e-9
    assert est.khat < 0.7 and est.ess > 500
    assert est.gap > 0  # log p-hat above the ELBO
    prior = ppvae.log_evidence(fit, ds, num_particles=1000, proposal="prior", seed=0)
    assert abs(prior.value - exact) < 3 * prior.stderr  # also consistent, but far less efficient:
    assert prior.ess < est.ess / 4 and prior.gap > 5 * est.gap
    perfect = ppvae.log_evidence((model, None), ds, num_particles=200, proposal=model.posterior_guide(data))
    assert perfect.value == pytest.approx(exact, abs=1e-4)  # float32 weights
    assert perfect.ess == pytest.approx(200, rel=1e-6)


def test_bad_hyperparameters_and_data():
    with pytest.raises(ppvae.PPVAEError, match="lambda0"):
        NormalGamma(lambda0=0.0)
    model = NormalGamma()
    with pytest.raises(ppvae.PPVAEError, match="shape"):
        model.setup(ppvae.Dataset(torch.zeros(5, 2)))
    with pytest.raises(ppvae.PPVAEError, match="at least one"):
        model.exact_posterior(torch.zeros(0))
