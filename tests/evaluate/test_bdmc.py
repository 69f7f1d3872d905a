"""BDMC (Grosse et al. 2015) on factor analysis, whose log p(x) is known in closed form."""

import pytest
import torch
from test_ais import _fa

import ppvae
from ppvae import PPVAEError
from ppvae.evaluate.bdmc_bounds import bdmc, simulate


def test_sandwich_brackets_the_exact_marginal_and_closes_with_T():
    """Prior proposal, 20 simulated points, C = 8: mean lower <= mean exact <= mean upper (each
    within 3 Monte Carlo standard errors of its side), and the mean gap shrinks from T = 5 to T = 50
    (measured 8.0 -> 0.8 nats; seeds 1, 2: 7.4 -> 0.6, 6.3 -> 0.4)."""
    model, x = _fa()
    res = bdmc((model, None), x, num_points=20, num_steps=[5, 50], num_chains=8, proposal="prior", step_size=0.3,
               chunk_size=20, seed=0)
    exact = model.exact(res.x).mean()
    for i in range(2):
        assert res.mean_lower[i] <= exact + 3 * res.lower_mc_stderr[i]
        assert res.mean_upper[i] >= exact - 3 * res.upper_mc_stderr[i]
    assert res.mean_gap[0] > 3.0 and res.mean_gap[1] < 1.5
    assert res.x.shape == (20, 6) and res.to_dict()["rows"][1]["num_steps"] == 50
    assert "gap" in res.table()


def test_simulate_keeps_the_latent_that_made_each_point():
    """x_i - W z_i - mu is the observation noise: its variance per column matches psi (1,000 points;
    the sample variance of 1,000 normals is within 15% of the truth at ~3.4 standard deviations)."""
    model, _ = _fa()
    torch.manual_seed(0)
    x, latents = simulate(model, {}, torch.zeros(1, 6), 1000)
    z, ddim = latents["z"]
    assert ddim == 0 and z.shape == (1000, 2)
    noise = x - z @ model.W.T - model.mu
    torch.testing.assert_close(noise.var(0), model.psi, rtol=0.15, atol=0)


def test_bdmc_bad_input():
    model, x = _fa()
    with pytest.raises(PPVAEError, match="num_steps: expected an integer >= 1"):
        bdmc((model, None), x, num_steps=[10, 0], proposal="prior")
    with pytest.raises(PPVAEError, match="num_chains: expected an integer >= 1"):
        bdmc((model, None), x, num_chains=0, proposal="prior")
    with pytest.raises(PPVAEError, match="data: pass a data set"):
        bdmc((model, None), proposal="prior")
    with pytest.raises(PPVAEError, match="model: BDMC anneals local continuous latents"):
        from ppvae.models import GMM

        data = ppvae.load_dataset("faithful", standardize=True)
        fit = ppvae.fit(GMM(K=2, covariance="diag"), data, steps=2, progress=False, seed=0)
        bdmc(fit, num_points=5, num_steps=2, num_chains=2)

