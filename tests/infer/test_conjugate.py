"""Conjugate-exponential mean-field VI (ppvae.conjugate): the Normal-Gamma model's CAVI against a numerical
maximization of the mean-field ELBO written independently in scipy, and the Result interface of its fit."""

import math

import numpy as np
import pytest
import scipy.optimize as so
import scipy.special as sp
import torch

import ppvae
from ppvae.infer.conjugate import kl_normal_wishart, wishart_expected_log_det, wishart_log_norm
from ppvae.models import NormalGamma

HYPER = dict(mu0=0.5, lambda0=2.0, a0=3.0, b0=2.0)


@pytest.fixture(scope="module")
def data():  # the data of tests/test_normal_gamma.py
    return torch.randn(30, 1, generator=torch.Generator().manual_seed(0)) * 0.7 + 1.0


def _meanfield_elbo(theta, x, h=HYPER):
    """The ELBO of q(mu) q(tau) = N(m, 1/p) Gamma(a, b) in scipy, theta = (m, log p, log a, log b):
    E[log p(x | mu, tau)] + E[log p(mu | tau)] + E[log p(tau)] + H[q(mu)] + H[q(tau)]."""
    m, p, a, b = theta[0], math.exp(theta[1]), math.exp(theta[2]), math.exp(theta[3])
    et, elt = a / b, sp.digamma(a) - math.log(b)
    e_sq = ((x - m) ** 2).sum() + len(x) / p  # E sum (x_i - mu)^2
    lik = 0.5 * len(x) * (elt - math.log(2 * math.pi)) - 0.5 * et * e_sq
    pmu = 0.5 * (math.log(h["lambda0"]) + elt - math.log(2 * math.pi)) - 0.5 * h["lambda0"] * et * (
        (m - h["mu0"]) ** 2 + 1 / p)
    ptau = h["a0"] * math.log(h["b0"]) - sp.gammaln(h["a0"]) + (h["a0"] - 1) * elt - h["b0"] * et
    hmu = 0.5 * math.log(2 * math.pi * math.e / p)
    htau = a - math.log(b) + sp.gammaln(a) + (1 - a) * sp.digamma(a)
    return lik + pmu + ptau + hmu + htau


def test_normal_gamma_cavi_reaches_the_mean_field_optimum(data):
    """CAVI's fixed point: ELBO equal to a numerical maximization (BFGS from CAVI's start far away, then
    Nelder-Mead polish) to 1e-6; E[tau] = 2.16774; a_n = a0 + (n + 1)/2; the ELBO never decreases."""
    model = NormalGamma(**HYPER)
    fit = model.fit_cavi(ppvae.Dataset(data))
    x = data[:, 0].double().numpy()
    res = so.minimize(lambda t: -_meanfield_elbo(t, x), np.array([0.0, 0.0, 0.0, 0.0]), method="BFGS",
                      options={"gtol": 1e-10})
    res = so.minimize(lambda t: -_meanfield_elbo(t, x), res.x, method="Nelder-Mead",
                      options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 20000})
    assert fit.converged
    assert fit.elbo == pytest.approx(-res.fun, abs=1e-6)
    assert fit.elbo == pytest.approx(-32.177252, abs=1e-6)  # the number
    assert float(fit.params["a"]) == HYPER["a0"] + (len(x) + 1) / 2
    assert float(fit.params["a"] / fit.params["b"]) == pytest.approx(2.16774, abs=5e-6)
    assert math.exp(res.x[2]) == pytest.approx(float(fit.params["a"]), rel=1e-4)  # the optimizer's shape too
    assert (np.diff(fit.trace) >= -1e-12).all()
    # the seed notes' iteration (eq. 86: a_n = a0 + n/2, the same b_n and q(mu) updates) to its fixed point
    h, n, xbar = HYPER, len(x), x.mean()
    p_mu, m = None, (h["lambda0"] * h["mu0"] + n * xbar) / (h["lambda0"] + n)
    a, b = h["a0"] + n / 2, h["b0"]
    for _ in range(200):
        p_mu = (h["lambda0"] + n) * a / b
        b = h["b0"] + 0.5 * (((x - m) ** 2).sum() + n / p_mu + h["lambda0"] * ((m - h["mu0"]) ** 2 + 1 / p_mu))
    notes = _meanfield_elbo(np.log([1.0, p_mu, a, b]) + np.array([m, 0, 0, 0]), x)
    assert notes == pytest.approx(-32.184520, abs=1e-6)  # the number, 7.3e-3 nats below the optimum


def test_normal_gamma_cavi_result_interface(data, tmp_path):
    """global_values are q's means; predict gives draws of mu, tau and replicated data; save/load round trip."""
    model = NormalGamma(**HYPER)
    fit = model.fit_cavi(ppvae.Dataset(data))
    values = fit.global_values()
    assert float(values["tau"]) == pytest.approx(2.16774, abs=5e-6)
    assert float(values["mu"]) == pytest.approx(float(model.exact_posterior(data).mu_n), rel=1e-6)  # same mean
    draws = fit.predict(data, num_draws=4000, seed=0)
    assert draws["obs"].shape == (4000, 30) and draws["mu"].shape == (4000,)
    assert draws["tau"].mean().item() == pytest.approx(2.16774, rel=0.03)  # sd/sqrt(4000) ~ 0.35%
    fit.save(str(tmp_path / "run"))
    back = model.load_cavi(str(tmp_path / "run"))
    assert back.elbo == fit.elbo and back.method == "cavi"
    assert torch.equal(back.params["b"], fit.params["b"])
    assert "tau" in str(back.summary())


def test_natural_svi_reaches_the_cavi_optimum_from_minibatches(data):
    """Natural-gradient SVI, minibatches of 10 of the 30 points, default schedule (tau0 1, kappa 0.7), 3,000
    steps from the prior: the ELBO within 1e-6 of CAVI's optimum, E[tau] within 1e-3 (measured: 4.4e-7 and
    4.5e-4; 30,000 steps give 1.7e-8 and 9.3e-5)."""
    model = NormalGamma(**HYPER)
    cavi = model.fit_cavi(ppvae.Dataset(data))
    svi = ppvae.fit_svi_natural(model, data, batch_size=10, num_steps=3000, eval_every=500, seed=0)
    assert svi.method == "svi_natural" and svi.history["step"][-1] == 3000
    assert abs(svi.elbo - cavi.elbo) < 1e-6
    assert float(svi.params["a"] / svi.params["b"]) == pytest.approx(2.16774, abs=1e-3)
    assert svi.trace[0] < svi.trace[-1] - 10  # started at the prior, far below


def test_natural_svi_full_batch_step_one_is_cavi(data):
    """With the whole data as the batch the steps are deterministic, damped Jacobi CAVI sweeps, whose fixed point
    is CAVI's: the same ELBO to 1e-9 after 400 steps with the slowest-decaying allowed schedule (kappa 0.51)."""
    model = NormalGamma(**HYPER)
    cavi = model.fit_cavi(ppvae.Dataset(data))
    svi = ppvae.fit_svi_natural(model, data, batch_size=30, num_steps=400, kappa=0.51, eval_every=0)
    assert svi.elbo == pytest.approx(cavi.elbo, abs=1e-9)


def test_natural_svi_bad_arguments(data):
    model = NormalGamma(**HYPER)
    with pytest.raises(ppvae.PPVAEError, match="kappa"):
        ppvae.fit_svi_natural(model, data, kappa=0.5)
    with pytest.raises(ppvae.PPVAEError, match="batch_size"):
        ppvae.fit_svi_natural(model, data, batch_size=0)
    with pytest.raises(ppvae.PPVAEError, match="ConjugateExponential"):
        ppvae.fit_svi_natural(ppvae.models.PPCA(), data)


def test_wishart_pieces_match_scipy():
    """log B(W, nu), E[log |Lambda|] and KL(NW || NW) against scipy's Wishart (density and Monte Carlo)."""
    from scipy.stats import wishart

    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 3))
    w = a @ a.T + 3 * np.eye(3)
    nu = 6.5
    lam = np.eye(3) * 0.7
    log_b = wishart.logpdf(lam, df=nu, scale=w) - 0.5 * (nu - 4) * np.linalg.slogdet(lam)[1] + 0.5 * np.trace(
        np.linalg.solve(w, lam))
    w_inv, nu_t = torch.tensor(np.linalg.inv(w)), torch.tensor(nu, dtype=torch.float64)
    assert wishart_log_norm(w_inv, nu_t).item() == pytest.approx(log_b, abs=1e-10)
    # E[log |Lambda|] and the KL by Monte Carlo with torch's Wishart and MultivariateNormal
    torch.manual_seed(0)
    wq = torch.distributions.Wishart(torch.tensor(nu), covariance_matrix=torch.tensor(w))
    lams = wq.sample((100000,))
    assert wishart_expected_log_det(w_inv, nu_t).item() == pytest.approx(torch.logdet(lams).mean().item(), abs=5e-3)
    m, beta, m0, beta0, nu0 = torch.tensor([0.3, -0.2, 0.1]).double(), 2.0, torch.zeros(3).double(), 1.5, 5.0
    w0 = torch.tensor(w) * 0.8
    mus = torch.distributions.MultivariateNormal(m, precision_matrix=beta * lams).sample()

    def log_nw(mm, bb, ww, nn):
        return (torch.distributions.Wishart(torch.tensor(nn).double(), covariance_matrix=ww).log_prob(lams)
                + torch.distributions.MultivariateNormal(mm, precision_matrix=bb * lams).log_prob(mus))

    ratio = log_nw(m, beta, torch.tensor(w), nu) - log_nw(m0, beta0, w0, nu0)
    kl = kl_normal_wishart(m, torch.tensor(beta).double(), w_inv, nu_t, m0, beta0, torch.linalg.inv(w0), nu0).item()
    assert kl == pytest.approx(ratio.mean().item(), abs=4 * ratio.std().item() / 100000**0.5)


def test_conjugate_runs_load_by_kind(data, tmp_path):
    """A ConjugateFit saves as kind 'conjugate'; ppvae.load finds its loader in the kind registry."""
    fit = NormalGamma(**HYPER).fit_cavi(ppvae.Dataset(data))
    fit.save(str(tmp_path / "run"))
    back = ppvae.load(str(tmp_path / "run"))
    assert type(back).__name__ == "ConjugateFit" and back.elbo == fit.elbo
    mine = tmp_path / "mine"  # like every result's save: a folder ppvae did not write is refused, its files kept
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ppvae.PPVAEError):
        fit.save(str(mine))
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_natural_svi_checkpoint_and_exact_resume(data, tmp_path):
    """200 steps straight equal 120 steps, a checkpoint, and a resumed run to 200, exactly (batches and draws are
    functions of (seed, step)); a resume with other settings is refused."""
    model = NormalGamma(**HYPER)
    straight = ppvae.fit_svi_natural(model, data, batch_size=7, num_steps=200, eval_every=0, seed=3)
    ck = str(tmp_path / "ck")
    ppvae.fit_svi_natural(model, data, batch_size=7, num_steps=120, eval_every=0, seed=3, checkpoint=ck,
                          checkpoint_every=50)
    resumed = ppvae.fit_svi_natural(model, data, batch_size=7, num_steps=200, eval_every=0, seed=3, checkpoint=ck,
                                    resume=True)
    assert all(torch.equal(resumed.params[k], straight.params[k]) for k in straight.params)
    assert resumed.elbo == straight.elbo
    with pytest.raises(ppvae.PPVAEError, match="resume"):
        ppvae.fit_svi_natural(model, data, batch_size=5, num_steps=300, seed=3, checkpoint=ck, resume=True)
