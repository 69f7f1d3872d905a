"""A regression (Dataset(x, y), real-valued y) with a per-point continuous latent, through every path that builds
its own batches: importance sampling, AIS, BDMC and the local-latent NUTS of ``local_posterior`` all observe the
response y beside the covariates x, so each gives the closed-form numbers (none may drop y and sample it).

Model: random intercepts with the coefficients fixed, y_i = x_i . w + u_i + eps_i, u_i ~ N(0, TAU^2),
eps_i ~ N(0, SIGMA^2). In closed form y_i | x_i ~ N(x_i . w, TAU^2 + SIGMA^2) and
u_i | x_i, y_i ~ N(k r_i, k SIGMA^2) with k = TAU^2 / (TAU^2 + SIGMA^2), r_i = y_i - x_i . w.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae import Dataset, PPVAEError
from ppvae.evaluate.bdmc_bounds import bdmc, simulate

TAU, SIGMA = 0.8, 0.5
W = (1.5, -0.7)
K = TAU**2 / (TAU**2 + SIGMA**2)


class _RandomIntercepts(ppvae.Model):
    def forward(self, batch):
        w = batch.x.new_tensor(W)
        with self.data_plate(batch):
            u = pyro.sample("u", dist.Normal(batch.x.new_zeros(()), TAU))
            pyro.sample("y", dist.Normal((batch.x * w).sum(-1) + u, SIGMA), obs=batch.y)


def _exact(x, y):
    mean = (x.double() * torch.tensor(W, dtype=torch.float64)).sum(-1)
    return dist.Normal(mean, math.sqrt(TAU**2 + SIGMA**2)).log_prob(y.double())


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, generator=g)
    y = (x * torch.tensor(W)).sum(-1) + TAU * torch.randn(30, generator=g) + SIGMA * torch.randn(30, generator=g)
    return Dataset(x, y, name="random-intercepts")


def test_importance_sampling_and_ais_observe_the_response(data):
    model, exact = _RandomIntercepts(), _exact(data.x, data.y)
    is_ = ppvae.log_marginal((model, None), data, num_particles=4000, proposal="prior", seed=0, warn=False)
    ais = ppvae.log_marginal((model, None), data, method="ais", num_steps=50, num_chains=16, proposal="prior",
                             seed=0, warn=False)
    for est in (is_, ais):  # per point within 5 Monte Carlo standard errors (+ 0.01 for tiny errors)
        err = (est.values.double() - exact).abs()
        assert (err < 5 * est.mc_stderr.double() + 0.01).all(), (est.values, exact)


def test_bdmc_simulates_the_response_at_the_data_covariates(data):
    """The points keep the data's covariates and y is drawn given them; the sandwich brackets the closed form
    of log p(y_i | x_i) (mean over 20 points, within 3 Monte Carlo errors) and, one latent dimension, nearly closes: the
    mean gap at T = 30 measured 0.008-0.14 over seeds 0-2, each bound carrying a Monte Carlo error of ~0.04, so
    0.3 is the gap plus 5 errors of the difference."""
    model = _RandomIntercepts()
    res = bdmc((model, None), data, num_points=20, num_steps=[30], num_chains=8, proposal="prior", seed=0)
    assert torch.equal(res.x, data.x[:20]) and res.y.shape == (20,) and not torch.equal(res.y, data.y[:20])
    exact = float(_exact(res.x, res.y).mean())
    assert res.mean_lower[0] <= exact + 3 * float(res.lower_mc_stderr[0])
    assert res.mean_upper[0] >= exact - 3 * float(res.upper_mc_stderr[0])
    assert res.mean_gap[0] < 0.3, res.mean_gap
    more = bdmc((model, None), data, num_points=45, num_steps=2, num_chains=2, proposal="prior", seed=0)
    assert torch.equal(more.x, torch.cat([data.x, data.x[:15]]))  # rows in order, cycled past N


def test_simulated_response_has_the_model_noise():
    """y_i - x_i . w = u_i + eps_i: the kept latent u_i is its part, and the rest has variance SIGMA^2
    (2,000 points: the sample variance is within 12% of the truth at ~3.8 standard errors)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2000, 2, generator=g)
    torch.manual_seed(0)
    y, latents = simulate(_RandomIntercepts(), {}, x, 2000, y=torch.zeros(2000))
    u, ddim = latents["u"]
    assert ddim == 0 and u.shape == (2000,)
    noise = y - (x * torch.tensor(W)).sum(-1) - u
    assert abs(float(noise.var()) / SIGMA**2 - 1) < 0.12 and abs(float(u.var()) / TAU**2 - 1) < 0.12
    with pytest.raises(PPVAEError, match="y: expected the covariates and response of 2000 points"):
        simulate(_RandomIntercepts(), {}, x, 2000, y=torch.zeros(5))


@pytest.mark.slow
def test_local_posterior_observes_the_response(data):
    """NUTS over one point's u_i: its draws match N(k r_i, k SIGMA^2) (mean within 0.25 posterior sd, about 5
    Monte Carlo errors at 800 draws; sd within 15%)."""
    i = 3
    r = float(data.y[i] - (data.x[i] * torch.tensor(W)).sum())
    run = ppvae.local_posterior(_RandomIntercepts(), data.x[i], y=data.y[i], num_draws=800, warmup=200, seed=0,
                                progress=False)
    u = run.flat_samples()["u"].reshape(-1).double()
    post_sd = math.sqrt(K) * SIGMA
    assert abs(float(u.mean()) - K * r) < 0.25 * post_sd, (float(u.mean()), K * r)
    assert abs(float(u.std()) / post_sd - 1) < 0.15
    with pytest.raises(PPVAEError, match="y: the model observes nothing at this point"):
        ppvae.local_posterior(_RandomIntercepts(), data.x[i], num_draws=5, warmup=5, progress=False)
    with pytest.raises(PPVAEError, match="y: expected the point's real-valued response"):
        ppvae.local_posterior(_RandomIntercepts(), data.x[i], y=torch.tensor(1), num_draws=5, warmup=5)
