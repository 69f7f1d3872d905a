"""Variational Bayes over decoder weights (Kingma & Welling 2013, app. F; ppvae.BayesianWeights, VAE(bayesian_decoder)):
the ELBO of a linear-Gaussian decoder against its closed form, the weight KL counted once per epoch, log p(x | D)
averaged over q(theta) against the Gaussian marginal, and the VAE's option end to end."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
from ppvae.models import VAE

D, L, N, SIGMA = 3, 2, 8, 0.7


class LinearDecoderModel(ppvae.Model):
    """x_i = W z_i + b + N(0, SIGMA^2 I), z_i ~ N(0, I_L), with (W, b) ~ N(0, prior_scale^2) (BayesianWeights);
    guide: q(W, b) mean-field Gaussian, q(z_i | x_i) = N(A x_i + c, diag s^2) with A, c, s fixed."""

    def __init__(self, prior_scale: float = 1.5):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.net = nn.Linear(L, D)
        self.weights = ppvae.BayesianWeights(self.net, "decoder", prior_scale, init_scale=0.3)
        with torch.no_grad():
            for loc, raw in zip(self.weights.loc, self.weights.raw_scale, strict=True):
                loc.copy_(torch.randn(loc.shape, generator=g))
                raw.copy_(torch.randn(raw.shape, generator=g) * 0.3 - 1.0)
        self.A = torch.randn(L, D, generator=g) * 0.4
        self.c = torch.randn(L, generator=g) * 0.2
        self.s = torch.rand(L, generator=g) * 0.5 + 0.3

    def decode(self, w, z):  # W z + b, broadcasting over leading (particle) dimensions of the weights
        W, b = w["weight"], w["bias"]
        if W.dim() > 2:  # (P, 1, D, L) under a particle plate: one matrix per particle
            return (W @ z.unsqueeze(-1)).squeeze(-1) + b
        return z @ W.T + b

    def forward(self, batch):
        w = self.weights.prior()
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decode(w, z), SIGMA).to_event(1), obs=batch.x)

    def guide(self, batch):
        self.weights.posterior()
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(batch.x @ self.A.T + self.c, self.s).to_event(1))


def closed_form_elbo(model, x, scale=1.0):
    """scale * sum_i (E_q log p(x_i | z_i, W, b) - KL(q(z_i) || N(0, I))) - KL(q(W, b) || p(W, b)), float64: with
    W, b, z independent Gaussians, E (x_d - sum_j W_dj z_j - b_d)^2 = (mean)^2 + sum_j [(M^2 + S^2)(mu^2 + s^2)
    - M^2 mu^2]_dj + S_b,d^2."""
    M, Mb = (t.detach().double() for t in model.weights.loc)
    S, Sb = (t.detach().double() for t in model.weights.scales())
    x = x.double()
    mu, s = x @ model.A.double().T + model.c.double(), model.s.double()
    mean_r = x - mu @ M.T - Mb  # (n, D)
    var_r = ((M**2 + S**2)[None] * (mu**2 + s**2)[:, None, :] - (M**2)[None] * (mu**2)[:, None, :]).sum(-1) + Sb**2
    exp_loglik = (-0.5 * math.log(2 * math.pi * SIGMA**2) - (mean_r**2 + var_r) / (2 * SIGMA**2)).sum(-1)
    kl_z = 0.5 * (mu**2 + s**2 - 1 - torch.log(s**2)).sum(-1)
    return float(scale * (exp_loglik - kl_z).sum() - model.weights.kl())


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return ppvae.Dataset(torch.randn(N, D, generator=g), name="lin")


def _mc_loss(model, batch, reps=20, particles=2000, seed=0):
    """Mean and standard error of Trace_ELBO's loss over ``reps`` independent estimates of ``particles`` draws."""
    pyro.set_rng_seed(seed)
    elbo = pyro.infer.Trace_ELBO(num_particles=particles, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        vals = torch.tensor([elbo.loss(model, model.guide, batch) for _ in range(reps)], dtype=torch.float64)
    return float(vals.mean()), float(vals.std() / math.sqrt(reps))


@pytest.mark.slow
def test_elbo_of_a_linear_gaussian_decoder_equals_its_closed_form():
    """Full batch and a minibatch of 2 of 8 (likelihood scaled by N/M, weight KL once): Trace_ELBO's mean over
    40,000 draws equals the closed form within 4 standard errors (seeded)."""
    model, data = LinearDecoderModel(), _data()
    mean, se = _mc_loss(model, data.batch())
    assert abs(-mean - closed_form_elbo(model, data.x)) < 4 * se
    idx = torch.tensor([2, 5])
    mean, se = _mc_loss(model, data.batch(idx), seed=1)
    assert abs(-mean - closed_form_elbo(model, data.x[idx], scale=N / 2)) < 4 * se
    assert se < 0.05 * abs(mean)  # the check has teeth: the standard error is small beside the value


def test_weight_kl_is_counted_once_per_epoch():
    """On a minibatch of M of N points the weight sites carry scale 1 and the data plate's sites N/M, so the step
    loss is (N/M) [sum_batch local terms - (M/N) KL(q(theta) || p(theta))]; over the N/M minibatches of an epoch the
    (M/N)-normalized closed-form step objectives sum to the full-data ELBO, KL counted exactly once."""
    model, data = LinearDecoderModel(), _data()
    M = 2
    batches = [torch.arange(i, i + M) for i in range(0, N, M)]
    for idx in batches:
        batch = data.batch(idx)
        tr = pyro.poutine.trace(model).get_trace(batch)
        gtr = pyro.poutine.trace(model.guide).get_trace(batch)
        for t in (tr, gtr):
            assert all(t.nodes[model.weights.site(n)]["scale"] == 1.0 for n in model.weights.names)
        assert tr.nodes["x"]["scale"] == pytest.approx(N / M) and gtr.nodes["z"]["scale"] == pytest.approx(N / M)
    kl = float(model.weights.kl())
    per_step = [closed_form_elbo(model, data.x[idx], scale=N / M) for idx in batches]
    epoch = sum(M / N * v for v in per_step)
    assert epoch == pytest.approx(closed_form_elbo(model, data.x), rel=1e-12)
    # the weight KL's share of the epoch: (M/N) * KL per step, N/M steps -> one KL
    assert sum(M / N * kl for _ in batches) == pytest.approx(kl, rel=1e-12)


class BiasOnly(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(D))

    def forward(self, h):
        return h + self.bias


class BayesianShiftModel(ppvae.Model):
    """x_i = W z_i + b + noise with W fixed and only b Bayesian: p(x | D) = E_q(b) p(x | b) = N(m_b, W W^T +
    SIGMA^2 I + diag s_b^2) in closed form."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(2)
        self.W = torch.randn(D, L, generator=g)
        self.shift = BiasOnly()
        self.weights = ppvae.BayesianWeights(self.shift, "shift", 2.0, init_scale=0.8)
        with torch.no_grad():
            self.weights.loc[0].copy_(torch.randn(D, generator=g))

    def forward(self, batch):
        w = self.weights.prior()
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(torch.zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.weights.apply(w, z @ self.W.T), SIGMA).to_event(1), obs=batch.x)

    def guide(self, batch):
        self.weights.posterior()


@pytest.mark.slow
def test_log_marginal_averages_over_q_theta():
    """log_marginal(num_draws=S) estimates log E_q(b) p(x_i | b), the Gaussian N(x_i; m_b, W W^T + SIGMA^2 I +
    diag s_b^2): within 3 Monte Carlo standard errors per point (the nested standard error over the S draws; prior
    proposal for z, S = 400 draws of b, K = 25)."""
    model = BayesianShiftModel()
    data = _data(seed=3)
    cov = model.W @ model.W.T + SIGMA**2 * torch.eye(D) + torch.diag(model.weights.scales()[0].detach() ** 2)
    exact = dist.MultivariateNormal(model.weights.loc[0].detach().double(), cov.double()).log_prob(data.x.double())
    lm = ppvae.log_marginal((model, model.guide), data, proposal="prior", num_particles=25, num_draws=400, seed=0,
                            warn=False)
    assert lm.num_particles == 10_000
    assert ((lm.values - exact).abs() < 3 * lm.mc_stderr + 1e-6).all(), (lm.values - exact, lm.mc_stderr)
    # and it differs from the plug-in log p(x | b = m_b), which ignores q's spread
    plug = dist.MultivariateNormal(model.weights.loc[0].detach().double(),
                                   (cov - torch.diag(model.weights.scales()[0].detach() ** 2)).double())
    assert (plug.log_prob(data.x.double()) - exact).abs().max() > 10 * lm.mc_stderr.max()


def test_bayesian_decoder_vae_fits_predicts_and_averages(tmp_path):
    """The VAE option end to end: weight sites global (outside the data plate), trained by ppvae.fit (the weight
    KL falls from its start), predictive draws carry one weight draw each, and log_marginal(num_draws) runs."""
    g = torch.Generator().manual_seed(0)
    data = ppvae.Dataset((torch.rand(60, 12, generator=g) < 0.3).float(), name="toy", kind="binary")
    torch.manual_seed(0)
    model = VAE(latent_dim=2, hidden=8, depth=1, bayesian_decoder=True, prior_scale=1.0)
    model.setup(data)
    kl0 = float(model.decoder_weights.kl())
    fit = ppvae.fit(model, data, steps=60, batch_size=20, lr=1e-2, progress=False, check_convergence=False)
    assert sorted(fit.global_sites(data)) == sorted(f"decoder.{n}" for n in ("0.weight", "0.bias", "2.weight",
                                                                            "2.bias"))
    assert float(model.decoder_weights.kl()) < kl0
    draws = fit.predict(data.subset(range(4)), num_draws=3, seed=0)
    assert draws["decoder.0.weight"].shape == (3, 8, 2) and draws["x"].shape == (3, 4, 12)
    assert not torch.equal(draws["decoder.0.weight"][0], draws["decoder.0.weight"][1])
    lm = ppvae.log_marginal(fit, data, num_particles=20, num_draws=5, warn=False)
    assert lm.num_particles == 100 and torch.isfinite(lm.values).all()
    with pytest.raises(ppvae.PPVAEError, match="num_draws"):
        ppvae.log_marginal(fit, data, num_particles=20, num_draws=5, method="ais")
    fit.save(str(tmp_path / "run"))
    back = ppvae.load(str(tmp_path / "run"))
    assert back.model.bayesian_decoder and torch.equal(back.model.decoder_weights.loc[2], model.decoder_weights.loc[2])
    again = ppvae.log_marginal(back, data, num_particles=20, num_draws=5, warn=False)
    assert torch.allclose(again.values, lm.values, atol=1e-4)  # same q(theta), same seed: the same estimate
    with pytest.raises(ppvae.PPVAEError, match="bayesian_decoder"):
        VAE(bayesian_decoder="yes")


@pytest.mark.slow
def test_cli_fits_a_bayesian_decoder_and_evaluates_over_q_theta(tmp_path):
    """``ppvae fit vae bayesian_decoder=true`` then ``ppvae evaluate --num-draws 3 --num-particles 10``: metrics.json
    holds the nested estimate with S K = 30 weights per point."""
    import json

    import numpy as np

    from ppvae.cli.app import main

    g = np.random.default_rng(0)
    np.save(tmp_path / "bin.npy", (g.uniform(size=(40, 12)) < 0.3).astype(np.float32))
    run = tmp_path / "run"
    assert main(["fit", "vae", "latent_dim=2", "hidden=8", "depth=1", "bayesian_decoder=true", "--data",
                 str(tmp_path / "bin.npy"), "--steps", "20", "--batch-size", "20", "--out", str(run), "--quiet",
                 "--no-convergence-check"]) == 0
    assert main(["evaluate", str(run), "--num-draws", "3", "--num-particles", "10", "--quiet"]) == 0
    entry = json.loads((run / "metrics.json").read_text())["log_marginal"]
    assert entry["num_particles"] == 30 and entry["method"] == "is"
