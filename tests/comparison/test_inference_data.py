"""InferenceData for SVI fits and MCMC runs: the log-likelihood group against exact per-point values,
label alignment against known permutations, and ArviZ's loo/compare/summary on both."""

import math

import arviz as az
import numpy as np
import pytest
import torch

from ppvae import Dataset, PPVAEError, fit, load_dataset
from ppvae.comparison.inference_data import align_labels, pointwise_log_likelihood, summary, to_inference_data
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.models import GMM, PPCA, NormalGamma
from ppvae.models.gmm import gmm_log_likelihood


@pytest.fixture(scope="module")
def faithful():
    data = load_dataset("faithful", standardize=True)
    return data.subset(torch.arange(0, len(data), 2))  # 136 points


def _gmm_fit(data, guide):
    return fit(GMM(K=2, covariance="diag"), data, guide=guide, steps=150, lr=0.05, seed=0, progress=False)


def test_svi_log_likelihood_equals_fit_log_likelihood_at_the_median(faithful):
    # AutoDelta: every draw is the median, so every row of the log_likelihood group must equal
    # Fit.log_likelihood (per point, exact enumeration) to float32 precision
    result = _gmm_fit(faithful, "auto_delta")
    idata = to_inference_data(result, faithful, num_draws=5)
    ll = idata.log_likelihood["obs"].values
    assert ll.shape == (1, 5, len(faithful))
    expected = result.log_likelihood(faithful).numpy()
    assert np.allclose(ll, expected[None, None], atol=1e-4)
    median = {k: v[None] for k, v in result.global_values(faithful).items()}
    assert np.allclose(pointwise_log_likelihood(result.model, faithful, median)[0].numpy(), expected, atol=1e-4)


def test_svi_inference_data_draws_and_closed_form_log_likelihood(faithful):
    # AutoNormal draws: the vectorized log-likelihood equals log sum_k w_k N(x | mu_k, diag sigma_k^2)
    # draw by draw; ArviZ's loo and summary run on it
    result = _gmm_fit(faithful, "auto_normal")
    idata = to_inference_data(result, faithful, num_draws=200, seed=3)
    post = idata.posterior
    assert post["locs"].dims == ("chain", "draw", "component", "feature")
    assert list(post["feature"].values) == ["eruptions", "waiting"]
    assert post["weights"].shape == (1, 200, 2)
    assert np.allclose(idata.observed_data["obs"].values, faithful.x.numpy())
    ll = idata.log_likelihood["obs"].values[0]
    for s in (0, 57, 199):
        w, locs, scales = (torch.as_tensor(post[k].values[0, s]) for k in ("weights", "locs", "scales"))
        exact = gmm_log_likelihood(faithful.x.double(), w.double(), locs.double(), torch.diag_embed(scales.double()))
        assert np.allclose(ll[s], exact.numpy(), atol=1e-3)
    loo = az.loo(idata)
    assert math.isfinite(loo.elpd_loo) and loo.elpd_loo < ll.mean(0).sum() + 1e-6  # elpd_loo <= lppd-ish
    table = az.summary(idata, kind="stats")
    assert "locs[0, eruptions]" in table.index


def test_mcmc_inference_data_loo_and_compare_with_svi():
    # Normal-Gamma NUTS: log_likelihood = log N(x_i | mu_s, 1/tau_s) per draw; loo on MCMC and SVI; compare
    model, x = NormalGamma(), torch.randn(30, 1, generator=torch.Generator().manual_seed(0))
    data = Dataset(x)
    run = run_mcmc(model, data, num_draws=150, warmup=100, num_chains=2, jit=True, seed=0, progress=False)
    idata = to_inference_data(run, data)
    assert set(idata.groups()) >= {"posterior", "log_likelihood", "sample_stats", "observed_data"}
    assert idata.sample_stats["diverging"].shape == (2, 150)
    mu, tau = (torch.as_tensor(idata.posterior[k].values, dtype=torch.float64) for k in ("mu", "tau"))
    exact = torch.distributions.Normal(mu[..., None], tau[..., None].rsqrt()).log_prob(x[:, 0].double())
    assert np.allclose(idata.log_likelihood["obs"].values, exact.numpy(), atol=1e-4)
    svi = fit(NormalGamma(), data, guide="auto_normal", steps=300, lr=0.05, seed=0, progress=False)
    svi_idata = to_inference_data(svi, data, num_draws=300)
    for d in (idata, svi_idata):
        loo = az.loo(d)
        assert math.isfinite(loo.elpd_loo) and loo.p_loo < 4  # two parameters
    table = az.compare({"nuts": idata, "svi": svi_idata})
    assert set(table.index) == {"nuts", "svi"}
    assert abs(table.loc["nuts", "elpd_loo"] - table.loc["svi", "elpd_loo"]) < 1.0


def test_align_labels_undoes_known_permutations(faithful, capsys):
    # draws of a 2-component mixture with labels swapped in every other draw: alignment by ordering the
    # best-separated location coordinate restores the unswapped draws exactly
    model = GMM(K=2, covariance="diag")
    model.setup(faithful)
    g = torch.Generator().manual_seed(0)
    locs = torch.tensor([[-1.3, -1.2], [0.7, 0.66]]) + 0.01 * torch.randn(2, 50, 2, 2, generator=g)
    weights = torch.tensor([0.35, 0.65]).expand(2, 50, 2).clone()
    scales = torch.tensor([[0.2, 0.4], [0.35, 0.45]]).expand(2, 50, 2, 2).clone()
    swap = torch.arange(50) % 2 == 1
    mixed = {k: v.clone() for k, v in (("locs", locs), ("weights", weights), ("scales", scales))}
    for v in mixed.values():
        v[:, swap] = v[:, swap].flip(2)
    aligned, info = align_labels(mixed, model, faithful)
    assert info["site"] == "locs" and info["fraction_permuted"] == pytest.approx(0.5)
    for k, v in (("locs", locs), ("weights", weights), ("scales", scales)):
        assert torch.equal(aligned[k], v)
    run_like = to_inference_data(_gmm_fit(faithful, "auto_normal"), faithful, num_draws=20)
    assert "ordering locs" in run_like.posterior.attrs["label_alignment"]
    summary(run_like, kind="stats")
    assert "note: mixture labels aligned" in capsys.readouterr().out


def test_continuous_local_latents_need_log_marginal():
    model = PPCA(latent_dim=1)
    data = Dataset(torch.randn(6, 3))
    model.setup(data)
    with pytest.raises(PPVAEError, match="continuous local latents \\(z\\)"):
        pointwise_log_likelihood(model, data, {})


def test_summary_leaves_out_constant_entries():
    """A Cholesky factor's fixed entries (here corr[0, 0] = 1, corr[0, 1] = 0) are constant over the
    draws: before, they entered the table with R-hat NaN and ESS = the draw count (4 x 100 = 400)."""
    import arviz as az
    import numpy as np

    from ppvae.comparison.inference_data import summary

    rng = np.random.default_rng(0)
    corr = np.zeros((4, 100, 2, 2))
    corr[..., 0, 0] = 1.0
    corr[..., 1, 0] = rng.uniform(-0.5, 0.5, (4, 100))
    corr[..., 1, 1] = np.sqrt(1 - corr[..., 1, 0] ** 2)
    idata = az.from_dict(posterior={"mu": rng.normal(size=(4, 100)), "corr": corr})
    table = summary(idata)
    assert list(table.index) == ["mu", "corr[1, 0]", "corr[1, 1]"]
    assert not table["r_hat"].isna().any()  # the constants had R-hat NaN
