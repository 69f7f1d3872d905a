"""One result interface (ppvae.Result): predictions, new data and summaries for every result kind,
checked against closed forms (a conjugate Bayesian linear regression; exact GMM responsibilities)."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae import Dataset, Model, PPVAEError
from ppvae.cli.app import main
from ppvae.models.gmm import GMM
from ppvae.models.lda import LDA
from ppvae.models.normal_gamma import NormalGamma

SIGMA, ALPHA = 0.5, 1.0  # known noise sd; prior precision of the weights


class _BLR(Model, ppvae.ExactPosterior):
    """y_i = x_i^T w + eps, eps ~ N(0, sigma^2), w ~ N(0, alpha^-1 I), on ``Dataset(x, y)`` (Bishop 2006,
    sec. 3.3): posterior N(mu_N, S_N), S_N^-1 = alpha I + X^T X / sigma^2, mu_N = S_N X^T y / sigma^2;
    posterior predictive at x*: N(x*^T mu_N, sigma^2 + x*^T S_N x*) (eqs. 3.53-3.54, 3.58-3.59)."""

    def forward(self, batch):
        X = batch.x
        D = X.shape[1]
        w = pyro.sample("w", dist.Normal(X.new_zeros(D), ALPHA ** -0.5).to_event(1))
        with self.data_plate(batch):
            mean = pyro.deterministic("mean", (X * w).sum(-1))  # w: (..., 1, D) under vectorized draws
            pyro.sample("y", dist.Normal(mean, SIGMA), obs=batch.y)  # batch.y None (new covariates): drawn

    def closed_form(self, data):
        X, y = data.x.double(), data.y.double()
        S = torch.linalg.inv(ALPHA * torch.eye(X.shape[1], dtype=X.dtype) + X.T @ X / SIGMA**2)
        return S @ X.T @ y / SIGMA**2, S

    def posterior_guide(self, x, y):
        mu, S = self.closed_form(Dataset(x, y))

        def guide(batch):
            pyro.sample("w", dist.MultivariateNormal(mu.to(batch.x.dtype), covariance_matrix=S.to(batch.x.dtype)))

        return guide


def _regression(n=40, seed=0):
    """Covariates (an intercept column and two normals) and a real-valued response: ``Dataset(x, y)``."""
    g = torch.Generator().manual_seed(seed)
    X = torch.cat([torch.ones(n, 1), torch.randn(n, 2, generator=g)], 1)
    y = X @ torch.tensor([0.5, -1.0, 2.0]) + SIGMA * torch.randn(n, generator=g)
    return Dataset(X, y)


def _check_predictive(draws, model, train, new, S, posterior=None):
    mu, cov = model.closed_form(train) if posterior is None else posterior
    Xs = new.x.double()
    mean, var = Xs @ mu, SIGMA**2 + ((Xs @ cov) * Xs).sum(1)
    y = draws["y"].double()
    assert y.shape == (S, len(new))
    # Monte Carlo error of a mean of S independent draws: sd / sqrt(S); of a variance: var sqrt(2 / S)
    assert ((y.mean(0) - mean).abs() < 5 * (var / S).sqrt()).all()
    assert ((y.var(0) / var - 1).abs() < 5 * math.sqrt(2 / S)).all()
    # the deterministic site is recorded, per draw, as its definition x_i^T w_s
    torch.testing.assert_close(draws["mean"], draws["w"] @ new.x.T, rtol=1e-5, atol=1e-5)


def test_exact_posterior_predictive_of_bayesian_regression_matches_closed_form():
    train, new = _regression(), Dataset(_regression(n=6, seed=1).x)  # new covariates, no response
    model = _BLR()
    post = ppvae.exact_posterior(model, train)
    assert isinstance(post, ppvae.Result) and post.method == "exact"
    S = 4000
    draws = post.predict(new, num_draws=S, seed=3)
    assert set(draws) == {"w", "mean", "y"} and draws["w"].shape == (S, 3)
    _check_predictive(draws, model, train, new, S)
    state = torch.random.get_rng_state()
    again = post.predict(new, num_draws=S, seed=3)
    assert torch.equal(again["y"], draws["y"]) and torch.equal(torch.random.get_rng_state(), state)  # seeded


@pytest.mark.slow
def test_full_rank_svi_posterior_predictive_matches_closed_form():
    """The guide's family holds the exact posterior: predictive draws match the closed-form predictive of
    the fitted Gaussian q(w) = N(m, C) within Monte Carlo error, and q is near the exact N(mu_N, S_N) (the
    last Adam iterates jitter: measured at these settings, means within 0.18 sd, sds within 10%)."""
    train, new = _regression(), Dataset(_regression(n=6, seed=1).x)  # new covariates, no response
    model = _BLR()
    fit = ppvae.fit(model, train, guide="auto_mvn", steps=2000, lr=0.02, num_particles=4, seed=0,
                    progress=False)
    q = fit.guide.get_posterior(train.batch())
    m, C = q.loc.detach().double(), q.covariance_matrix.detach().double()
    S = 4000
    draws = fit.predict(new, num_draws=S, seed=0)
    _check_predictive(draws, model, train, new, S, (m, C))
    mu, cov = model.closed_form(train)
    sd = cov.diagonal().sqrt()
    assert ((m - mu).abs() < 0.3 * sd).all() and ((C.diagonal().sqrt() / sd - 1).abs() < 0.15).all()
    table = fit.summary(num_draws=S, correlations=True)
    for j in range(3):  # the summary of q's draws: its moments within Monte Carlo error
        row = table.row(f"w[{j}]")
        assert abs(row["mean"] - float(m[j])) < 5 * math.sqrt(C[j, j] / S)
        assert abs(row["sd"] / math.sqrt(C[j, j]) - 1) < 5 * math.sqrt(1 / (2 * S))
    names, matrix = table.correlations
    exact_corr = float(C[1, 2] / (C[1, 1] * C[2, 2]).sqrt())
    assert abs(matrix[names.index("w[1]")][names.index("w[2]")] - exact_corr) < 5 * (1 - exact_corr**2) / math.sqrt(S)


def _responsibilities(x, values):
    w, locs, scales = values["weights"], values["locs"], values["scales"]  # (S, K), (S, K, 1), (S, K, 1)
    logp = w.log()[:, None, :] + dist.Normal(locs[:, None, :, 0], scales[:, None, :, 0]).log_prob(x[None, :, :])
    return logp.softmax(-1)  # (S, N, K)


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(12, 1, generator=g) - 1.5, torch.randn(12, 1, generator=g) + 1.5])
    return Dataset(x)


@pytest.mark.slow
def test_mcmc_predict_draws_assignments_at_the_exact_responsibilities(mixture):
    model = GMM(K=2, covariance="diag")
    run = ppvae.run_mcmc(model, mixture, num_draws=300, warmup=150, num_chains=2, cores=1, seed=0, progress=False)
    draws = run.predict(mixture, seed=1)  # every draw
    S = 600
    assert draws["z"].shape == (S, 24) and draws["obs"].shape == (S, 24, 1) and draws["locs"].shape == (S, 2, 1)
    torch.testing.assert_close(draws["locs"], run.flat_samples()["locs"])
    r = _responsibilities(mixture.x, draws)[..., 1]  # p(z_i = 1 | x_i, theta_s) per draw
    freq = (draws["z"] == 1).double().mean(0)
    # sum of S independent Bernoulli(r_s): its mean has variance sum r_s (1 - r_s) / S^2
    sd = (r * (1 - r)).sum(0).sqrt() / S
    assert ((freq - r.mean(0)).abs() < 5 * sd + 1e-9).all()
    table = run.summary(mixture)
    assert [c for c in table.columns] == ["mean", "sd", "q5", "q95", "ess_bulk", "r_hat"]
    assert all(row["ess_bulk"] > 0 and row["r_hat"] is not None for row in table.rows)
    assert run.history == {} and run.objective_trace == []
    thinned = run.predict(mixture, num_draws=7)
    assert thinned["z"].shape == (7, 24)
    with pytest.raises(PPVAEError, match="num_draws"):
        run.predict(mixture, num_draws=601)


def test_em_predict_and_log_likelihood_have_one_meaning(mixture):
    model = GMM(K=2, covariance="diag")
    em = ppvae.fit_em(model, mixture, restarts=2, seed=0)
    ll = em.log_likelihood(mixture)
    assert ll.shape == (24,) and float(ll.sum()) == pytest.approx(em.log_likelihood_total, abs=1e-8)
    fit_ll = ppvae.Result.log_likelihood(em, mixture)  # the generic enumeration at the point estimate
    torch.testing.assert_close(fit_ll.double(), ll, rtol=0, atol=1e-4)
    assert em.history["log_likelihood"] == em.traces[em.best_restart] == em.objective_trace
    S = 800
    draws = em.predict(mixture, num_draws=S, seed=0)
    r = _responsibilities(mixture.x, {k: v[:1] for k, v in draws.items()})[0, :, 1]
    freq = (draws["z"] == 1).double().mean(0)
    assert ((freq - r).abs() < 5 * (r * (1 - r) / S).sqrt() + 1e-9).all()
    table = em.summary()
    assert table.point and all(row["sd"] is None for row in table.rows)
    new = em.sample_data(50, num_draws=3, seed=0)
    assert new["obs"].shape == (3, 50, 1) and new["z"].shape == (3, 50)


@pytest.mark.filterwarnings("ignore:cavi. not converged")
def test_shapes_for_svi_and_cavi_and_normal_gamma(mixture):
    fit = ppvae.fit(GMM(K=2, covariance="diag"), mixture, guide="auto_normal", steps=30, progress=False)
    d = fit.predict(mixture, num_draws=4)
    assert {k: tuple(v.shape) for k, v in d.items()} == {"weights": (4, 2), "locs": (4, 2, 1), "scales": (4, 2, 1),
                                                         "z": (4, 24), "obs": (4, 24, 1)}
    assert fit.history["loss"] == fit.objective_trace and len(fit.objective_trace) == 30
    assert fit.sample_data(5, num_draws=2)["obs"].shape == (2, 5, 1)
    g = torch.Generator().manual_seed(0)
    counts = torch.poisson(torch.full((8, 12), 2.0), generator=g)
    cavi = LDA(topics=2).fit_cavi(Dataset(counts, kind="counts"), max_iter=5, seed=0)
    assert isinstance(cavi, ppvae.Result) and cavi.history["elbo"] == cavi.trace
    d = cavi.predict(Dataset(counts, kind="counts"), num_draws=3)
    assert d["topic_words"].shape == (3, 2, 12) and d["doc_topics"].shape == (3, 8, 2)
    assert torch.equal(d["obs"].sum(-1), counts.sum(-1).expand(3, 8))  # new documents keep their lengths
    # the posterior mean of q(theta_d) over draws approaches gamma_d / sum gamma_d
    many = cavi.latent_draws(Dataset(counts, kind="counts"), 4000)["doc_topics"].mean(0)
    torch.testing.assert_close(many, cavi.gamma / cavi.gamma.sum(-1, keepdim=True), atol=0.03, rtol=0)
    x = torch.randn(20, 1, generator=g)
    post = ppvae.exact_posterior(NormalGamma(), Dataset(x))
    table = post.summary(num_draws=4000)
    exact = NormalGamma().exact_posterior(x)
    assert abs(table.row("mu")["mean"] - exact.mean_mu) < 5 * math.sqrt(exact.var_mu / 4000)


def test_old_spellings_raise_one_line_naming_the_new_one(mixture, capsys):
    """One vocabulary (num_draws, num_particles, num_steps, num_leapfrog, ll_tol/rel_tol); pre-1.0 the old
    spellings are refused, naming the new one, from Python and from the command line."""
    model = GMM(K=2, covariance="diag")
    cases = [
        (lambda: ppvae.fit_em(model, mixture, restarts=1, tol=1e-3), "fit_em: tol is now ll_tol"),
        (lambda: ppvae.run_mcmc(model, mixture, num_samples=10), "run_mcmc: num_samples is now num_draws"),
        (lambda: ppvae.run_mcmc(model, mixture, num_steps=5), "run_mcmc: num_steps is now num_leapfrog"),
        (lambda: ppvae.log_marginal((model, None), mixture, num_samples=5),
         "log_marginal: num_samples is now num_particles"),
        (lambda: ppvae.log_evidence((model, None), mixture, num_samples=5),
         "log_evidence: num_samples is now num_particles"),
        (lambda: ppvae.compare(model, mixture, "em", num_samples=5), "compare: num_samples is now num_mcmc_draws"),
        (lambda: ppvae.local_posterior(model, mixture.x[0], num_samples=5),
         "local_posterior: num_samples is now num_draws"),
    ]
    for call, message in cases:
        with pytest.raises(PPVAEError, match=message):
            call()
    for argv, message in [(["em", "gmm", "--data", "faithful", "--tol", "1e-3"], "--tol is now --ll-tol"),
                          (["mcmc", "gmm", "--data", "faithful", "--samples", "5"], "--samples is now --num-draws"),
                          (["evaluate", "runs/none", "--num-samples", "5"], "--num-samples is now --num-particles"),
                          (["evaluate", "runs/none", "--leapfrog", "5"], "--leapfrog is now --num-leapfrog")]:
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == f"ppvae: error: {message}"


def test_cli_predict_and_summary(tmp_path, mixture, capsys):
    csv = tmp_path / "x.csv"
    np.savetxt(csv, mixture.x.numpy(), delimiter=",")
    run = tmp_path / "run"
    assert main(["fit", "gmm", "K=2", "covariance=diag", "--data", str(csv), "--guide", "auto_normal", "--steps", "30",
                 "--quiet", "--out", str(run)]) == 0
    out = tmp_path / "pred.npz"
    assert main(["predict", str(run), "--data", str(csv), "--num-draws", "6", "--out", str(out)]) == 0
    with np.load(out) as z:
        assert z["z"].shape == (6, 24) and z["obs"].shape == (6, 24, 1) and z["locs"].shape == (6, 2, 1)
    assert main(["predict", str(run), "--data", str(csv), "--num-draws", "6", "--out", str(tmp_path / "p.nc")]) == 0
    import arviz as az

    idata = az.from_netcdf(tmp_path / "p.nc")
    assert idata.posterior_predictive["obs"].shape == (1, 6, 24, 1) and idata.posterior["z"].shape == (1, 6, 24)
    assert main(["summary", str(run), "--data", str(csv), "--num-draws", "200", "--correlations"]) == 0
    text = capsys.readouterr().out
    assert "locs[0,0]" in text and "correlations:" in text
    assert main(["predict", str(run), "--data", str(csv), "--out", str(tmp_path / "p.txt")]) == 2
    assert main(["predict", str(tmp_path / "nope"), "--out", str(out)]) == 2
