"""The three user models of examples/ against their closed forms (issue 15, "Done means").

* Bayesian linear regression: SVI with a full-rank Gaussian guide recovers the exact Gaussian posterior
  (mean and covariance), and ``ppvae.log_evidence`` the exact log p(y | X).
* Factor analysis: importance-sampled per-point log p(x_i | globals) equals N(x_i; mu, W^T W + diag psi)
  within its Monte Carlo error.
* Mixture of two regressions: SVI and NUTS agree on the component parameters once labels are aligned.
"""

import pathlib

import pytest
import torch

import ppvae

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"

blr = ppvae.import_model(str(ROOT / "examples" / "blr.py:BayesianLinearRegression"))
blr_module = __import__(blr.__module__, fromlist=["exact"])
fa = ppvae.import_model(str(ROOT / "examples" / "factor_analysis.py:FactorAnalysis"))
fa_module = __import__(fa.__module__, fromlist=["exact_log_marginal"])
mixreg = ppvae.import_model(str(ROOT / "examples" / "mixreg.py:MixtureOfRegressions"))


@pytest.fixture(scope="module")
def regression():
    return ppvae.load_dataset(f"{DATA / 'regression.csv'}:target=y")


@pytest.fixture(scope="module")
def blr_fit(regression):
    model = blr(noise_sd=0.5)
    # a decaying learning rate (0.05 to 0.0005) lets the last iterate settle at the optimum
    return model, ppvae.fit(model, regression, guide="auto_mvn", steps=1500, lr=0.05, lr_schedule="exponential",
                            lr_final_factor=0.01, seed=0, progress=False)


def test_blr_posterior_matches_closed_form(blr_fit, regression):
    model, fit = blr_fit
    mean, cov, _ = blr_module.exact(model, regression.x, regression.y)
    sd = cov.diagonal().sqrt()
    loc = fit.guide.loc.detach().double()  # (w, b) in the guide's order: sites w then b, both unconstrained
    scale_tril = (fit.guide.scale[:, None] * fit.guide.scale_tril).detach().double()  # AutoMultivariateNormal's
    q_cov = scale_tril @ scale_tril.T
    # the guide family holds the exact posterior: its optimum is exact; SVI noise leaves < 0.2 sd in the mean
    assert ((loc - mean).abs() / sd).max() < 0.2, (loc, mean)
    assert ((q_cov.diagonal().sqrt() / sd) - 1).abs().max() < 0.15
    # every covariance entry in units of sd_i sd_j (a correlation scale); single-particle gradient noise at
    # the final learning rate leaves about 0.1 there
    assert ((q_cov - cov) / torch.outer(sd, sd)).abs().max() < 0.2


def test_blr_log_evidence_matches_closed_form(blr_fit, regression):
    model, fit = blr_fit
    _, _, exact = blr_module.exact(model, regression.x, regression.y)
    est = ppvae.log_evidence(fit, regression, num_particles=4000, seed=0)
    # importance sampling from a guide close to the exact posterior: nearly exact; 4 MC standard errors + 0.01
    assert abs(est.value - exact) < 4 * est.stderr + 0.01, (est.value, est.stderr, exact)


@pytest.mark.slow
def test_factor_analysis_log_marginal_matches_closed_form():
    data = ppvae.load_dataset(str(DATA / "fa.csv"))
    fit = ppvae.fit(fa(K=2), data, guide="auto_normal", steps=600, lr=0.03, seed=0, progress=False,
                    check_convergence=False)
    values = fit.global_values(data)
    exact = fa_module.exact_log_marginal(values, data.x)
    est = ppvae.log_marginal(fit, data, num_particles=2000, proposal="prior", seed=1, warn=False)
    # per point and on average: the estimate is log of an unbiased mean, so within a few MC errors
    err = est.values.double() - exact
    mc = est.mc_stderr.double()
    assert (err.abs() < 5 * mc + 0.02).float().mean() > 0.99, float((err.abs() / mc).max())
    assert abs(float(err.mean())) < 4 * float(mc.pow(2).mean().sqrt() / len(err) ** 0.5) + 0.01


@pytest.mark.slow
def test_mixture_of_regressions_svi_agrees_with_nuts():
    data = ppvae.load_dataset(f"{DATA / 'mixreg.csv'}:target=y")
    model = mixreg(K=2)
    fit = ppvae.fit(model, data, guide="auto_normal", steps=1500, lr=0.02, seed=0, progress=False)
    svi = fit.global_values(data)
    mcmc = ppvae.run_mcmc(mixreg(K=2), data, num_draws=150, warmup=150, num_chains=1, order=("w", 0), seed=0,
                          progress=False)
    draws = {k: v.reshape(-1, *v.shape[2:]).double() for k, v in mcmc.samples.items()}
    perm = torch.argsort(svi["w"][:, 0])  # align SVI's labels as NUTS's are ordered: w[0, 0] < w[1, 0]
    for site, value in (("w", svi["w"][perm]), ("b", svi["b"][perm]), ("weights", svi["weights"][perm]),
                        ("sigma", svi["sigma"])):
        mean, sd = draws[site].mean(0), draws[site].std(0)
        z = (value.double() - mean).abs() / sd  # the SVI point within 3 posterior sds of the NUTS mean
        assert z.max() < 3, (site, value, mean, sd)


def test_marginal_factor_analysis_is_the_closed_form():
    """``marginal=True`` (the formulation for NUTS) observes x_i ~ N(mu, W^T W + diag psi) itself: its per-point
    log-likelihood at any globals equals exact_log_marginal to float32 rounding, also under vectorized draws."""
    import pyro
    from pyro import poutine

    data = ppvae.load_dataset(str(DATA / "fa.csv"))
    g = torch.Generator().manual_seed(0)
    values = {"mu": torch.randn(5, generator=g), "W": torch.randn(2, 5, generator=g),
              "psi": torch.rand(5, generator=g) + 0.1}
    model = fa(K=2, marginal=True)
    model.setup(data)
    tr = poutine.trace(poutine.condition(model, data=values)).get_trace(data.batch())
    tr.compute_log_prob()
    assert "z" not in tr.nodes and all(tr.nodes[k]["is_observed"] for k in values)  # no latent left
    torch.testing.assert_close(tr.nodes["x"]["log_prob"].double(), fa_module.exact_log_marginal(values, data.x),
                               rtol=1e-5, atol=1e-4)
    draws = {k: torch.stack([v, v + 0.1]).unsqueeze(1) for k, v in values.items()}  # (2, 1, ...): two draws
    draws["psi"] = draws["psi"].abs()
    with pyro.plate("draws", 2, dim=-2):
        tr = poutine.trace(poutine.condition(model, data=draws)).get_trace(data.batch())
    tr.compute_log_prob()
    second = {k: v[1, 0] for k, v in draws.items()}
    torch.testing.assert_close(tr.nodes["x"]["log_prob"][1].double(), fa_module.exact_log_marginal(second, data.x),
                               rtol=1e-5, atol=1e-4)
    with pytest.raises(ppvae.PPVAEError, match="marginal: expected True or False"):
        fa(K=2, marginal="yes")
