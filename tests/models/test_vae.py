"""The VAE: its loss against a hand computation, estimators A and B, beta / KL warm-up, dynamic
binarization, training gains on real MNIST digits, the inference-gap decomposition, the CLI, bad input."""

import json
import math
import os

import pyro
import pytest
import torch
from torch import nn

import ppvae
from ppvae.evaluate.gaps import inference_gaps
from ppvae.evaluate.marginal import log_marginal
from ppvae.models import PPCA, VAE


def _binary(n=40, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ppvae.Dataset((torch.rand(n, d, generator=g) < 0.3).float(), name="toy", kind="binary")


def _built(data, **hp):
    torch.manual_seed(0)
    model = VAE(**{"latent_dim": 3, "hidden": 8, "depth": 1, **hp})
    model.setup(data)
    return model


def _elbo_by_hand(model, x, eps):
    """Per-point ELBO (estimator A, Kingma & Welling 2013, eq. 6) from the raw networks at z = mu + sigma eps."""
    h = model.encoder(x)
    loc, scale = h[:, :3], nn.functional.softplus(h[:, 3:]) + model.min_scale
    z = loc + scale * eps
    log_px = -nn.functional.binary_cross_entropy_with_logits(model.decoder(z), x, reduction="none").sum(-1)
    log_pz = (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
    log_qz = (-0.5 * eps**2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    return log_px + log_pz - log_qz


@pytest.mark.parametrize("subsample", [False, True])
def test_loss_is_minus_elbo_by_hand(subsample):
    data = _binary()
    model = _built(data)
    index = torch.arange(5, 15) if subsample else None
    batch = data.batch(index)
    pyro.set_rng_seed(3)
    loss = pyro.infer.Trace_ELBO().loss(model, model.guide, batch)
    pyro.set_rng_seed(3)
    eps = torch.randn(len(batch), 3)
    scale = len(data) / len(batch)  # the data plate's N / M (Hoffman et al. 2013, eq. 8)
    expected = -scale * _elbo_by_hand(model, batch.x, eps).sum().item()
    assert loss == pytest.approx(expected, rel=1e-5)


def test_estimators_a_and_b_have_the_same_expectation():
    """Mean of 20,000 draws of estimator A (MC KL) vs B (analytic KL) at fixed parameters: equal within
    4 standard errors of A's mean; B's KL equals 0.5 sum(mu^2 + s^2 - 1 - log s^2) exactly."""
    data = _binary(n=10)
    model = _built(data)
    batch = data.batch()
    kw = dict(num_particles=20000, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad():
        pyro.set_rng_seed(0)
        a = pyro.infer.Trace_ELBO(**kw).loss(model, model.guide, batch)
        b = pyro.infer.TraceMeanField_ELBO(**kw).loss(model, model.guide, batch)
        # the spread of A across single draws, for the standard error of its mean
        draws = torch.tensor([pyro.infer.Trace_ELBO().loss(model, model.guide, batch) for _ in range(300)])
    se = draws.std().item() / math.sqrt(20000)
    assert abs(a - b) < 4 * se
    loc, scale = model.encode(batch.x)
    kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum()
    tr = pyro.poutine.trace(model.guide).get_trace(batch)
    prior = pyro.poutine.trace(model).get_trace(batch).nodes["z"]["fn"]
    kl_torch = torch.distributions.kl_divergence(tr.nodes["z"]["fn"], prior).sum()
    assert kl_torch.item() == pytest.approx(kl.item(), rel=1e-5)


def test_beta_scales_the_kl_term_linearly():
    """With the same random draws, loss(beta) = reconstruction + beta * KL, so
    loss(0.5) is the midpoint of loss(0) and loss(1); warm-up ramps beta as (step+1)/warmup."""
    data = _binary()
    losses = {}
    for beta in (0.0, 0.5, 1.0):
        fit = ppvae.fit(_built(data), data, elbo="meanfield", steps=1, lr=1e-9, seed=4, beta=beta, progress=False)
        losses[beta] = fit.history["loss"][0]
    assert losses[0.5] == pytest.approx(0.5 * (losses[0.0] + losses[1.0]), rel=1e-5)
    assert losses[0.0] < losses[1.0]
    warm = ppvae.fit(_built(data), data, elbo="meanfield", steps=1, lr=1e-9, seed=4, kl_warmup_steps=2,
                     progress=False)
    assert warm.history["loss"][0] == pytest.approx(losses[0.5], rel=1e-5)


def test_dynamic_binarization_redraws_pixels_reproducibly():
    g = torch.Generator().manual_seed(0)
    grey = torch.rand(60, 12, generator=g)
    data = ppvae.Dataset(grey, name="grey", kind="binary", meta={"dynamic_binarization": True})
    runs = [ppvae.fit(_built(data), data, steps=6, batch_size=20, seed=1, progress=False) for _ in range(2)]
    assert runs[0].history["loss"] == runs[1].history["loss"]
    from ppvae.infer.svi.train import binarize_batch

    b1 = binarize_batch(data.batch(torch.arange(60)), seed=1, step=0).x
    b2 = binarize_batch(data.batch(torch.arange(60)), seed=1, step=1).x
    assert set(b1.unique().tolist()) == {0.0, 1.0} and not torch.equal(b1, b2)
    assert abs(b1.mean().item() - grey.mean().item()) < 0.05  # E[Bernoulli(x)] = x
    with pytest.raises(ppvae.PPVAEError, match="binary pixels"):  # the same grey data without the flag
        ppvae.fit(VAE(latent_dim=2, hidden=4, depth=1), ppvae.Dataset(grey, kind="binary"), steps=1, progress=False)


@pytest.fixture(scope="module")
def digits():
    train = ppvae.load_dataset("mnist5k", split="train").subset(torch.arange(400))
    test = ppvae.load_dataset("mnist5k", split="test").subset(torch.arange(100))
    return train, test


def test_training_improves_test_log_likelihood(digits):
    """400 real digits, 784-64-8 network, 15 epochs: test log p(x) (K=200) gains > 150 nats per image
    over the untrained network (measured: -548 -> -199) and the fit's ELBO is below log p(x)."""
    train, test = digits
    untrained = ppvae.fit(VAE(latent_dim=8, hidden=64, depth=1), train, steps=1, lr=1e-9, progress=False)
    trained = ppvae.fit(VAE(latent_dim=8, hidden=64, depth=1), train, epochs=15, batch_size=50, lr=3e-3,
                        progress=False)
    before = log_marginal(untrained, test, num_particles=200, warn=False)
    after = log_marginal(trained, test, num_particles=200, warn=False)
    assert after.mean - before.mean > 150
    assert after.mean > -260
    assert after.elbo_mean <= after.mean


def test_inference_gaps_decompose_and_are_non_negative(digits):
    train, test = digits
    fit = ppvae.fit(VAE(latent_dim=8, hidden=64, depth=1), train, epochs=8, batch_size=50, lr=3e-3, progress=False)
    gaps = inference_gaps(fit, test.subset(torch.arange(30)), num_particles=200, steps=100, lr=0.02)
    d = gaps.to_dict()
    assert d["amortization_gap"] > 0  # per-point optimization (started at the encoder) beats the encoder


@pytest.mark.slow
def test_per_datapoint_elbo_is_exact_when_the_family_contains_the_posterior():
    """PPCA with one latent dimension: p(z_i | x_i) = N(M^-1 W^T (x_i - mu), sigma^2 / M) (Tipping & Bishop
    1999, eqs. 6-7) is a one-dimensional Gaussian, inside the per-datapoint guide's family, so its optimized
    ELBO equals the exact log p(x_i) = log N(x_i | mu, W W^T + sigma^2 I) up to optimization noise, and the
    approximation gap vanishes. W, mu, sigma are fixed; only the guides are fitted. Tolerance: 0.05 nats on
    means over the 20 points (measured with these seeds: mean |ELBO* - log p(x)| = 0.02, the Adam noise floor)."""
    g = torch.Generator().manual_seed(0)
    W, mu, sigma = torch.tensor([[2.0], [1.0], [-0.5]]), torch.tensor([1.0, -1.0, 0.5]), torch.tensor(0.5)
    x = torch.randn(20, 1, generator=g) @ W.T + mu + sigma * torch.randn(20, 3, generator=g)
    model = PPCA(latent_dim=1).set_parameters(W, mu, sigma, fixed=True)
    fit = ppvae.fit(model, ppvae.Dataset(x), guide="amortized", elbo="meanfield", steps=200, lr=0.03, seed=0,
                    guide_options={"depth": 0}, progress=False)
    exact = model.log_marginal_exact(x)
    gaps = inference_gaps(fit, ppvae.Dataset(x), num_particles=500, steps=1500, lr=0.01)
    err = (gaps.elbo_optimal.double() - exact).abs()
    px = (gaps.log_px.double() - exact).abs()
    info = f"ELBO* error mean {err.mean():.4f} max {err.max():.4f}; log p(x) error mean {px.mean():.4f}"
    assert err.mean() < 0.05, info
    assert float(gaps.approximation_gap.mean()) < 0.05, info
    assert px.mean() < 0.05, info


def test_bad_input_is_a_clear_error():
    good = _binary()
    with pytest.raises(ppvae.PPVAEError, match=r"pixel values in \[0, 1\]"):
        ppvae.fit(VAE(), ppvae.Dataset(good.x * 2 - 0.5, kind="real"), steps=1, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="28x28"):
        ppvae.fit(VAE(arch="conv"), good, steps=1, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="likelihood"):
        VAE(likelihood="poisson")
    with pytest.raises(ppvae.PPVAEError, match="arch"):
        VAE(arch="resnet")


@pytest.mark.parametrize("hp", [dict(arch="conv", hidden=16), dict(likelihood="gaussian"),
                                dict(likelihood="cbernoulli")])
def test_other_architectures_and_likelihoods_fit(hp):
    train = ppvae.load_dataset("mnist5k", split="train", binarize="none").subset(torch.arange(100))
    if hp.get("arch") == "conv":
        train = ppvae.load_dataset("mnist5k", split="train").subset(torch.arange(100))
    model = VAE(**{"latent_dim": 4, "hidden": 32, "depth": 1, **hp})
    fit = ppvae.fit(model, train, steps=12, batch_size=50, lr=3e-3, progress=False)
    losses = fit.history["loss"]
    assert math.isfinite(losses[-1]) and sum(losses[-3:]) < sum(losses[:3])


def test_cli_fit_writes_figures_and_reloads(tmp_path):
    from ppvae.cli.app import main

    out = tmp_path / "run"
    rc = main(["fit", "vae", "latent_dim=4", "hidden=32", "depth=1", "--data", "mnist5k", "--steps", "5",
               "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("reconstructions.png", "samples.png", "latent.png", "loss.png", "metrics.json"):
        assert os.path.getsize(out / name) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["train"]["batch_size"] == 100 and metrics["config"]["train"]["lr"] == 1e-3
    assert metrics["config"]["train"]["jit"] is True  # the VAE's CLI default: the traced objective
    fit = ppvae.Fit.load(str(out))
    x = ppvae.load_dataset("mnist5k", split="test").x[:5]
    assert fit.model.reconstruct(x).shape == (5, 784)


def test_test_curve_callback_records_every_epoch_and_the_end():
    """models/vae.py's TestCurve: -ELBO per held-out point after each epoch (4 steps of 50 here) and at the
    end of a fit that stops mid-epoch; the last value is the final model's held-out -ELBO (one sample per
    point, so it matches a fresh estimate to Monte Carlo noise, ~0.1% on 1000 points)."""
    from pyro.infer import Trace_ELBO

    from ppvae.models.vae import TestCurve, held_out

    train = ppvae.load_dataset("mnist5k", split="train").subset(torch.arange(200))
    model = VAE(latent_dim=4, hidden=32, depth=1)
    fit = ppvae.fit(model, train, steps=10, batch_size=50, lr=3e-3, callbacks=[TestCurve(model, train)],
                    progress=False)
    assert [step for step, _ in model.test_curve] == [4, 8, 10]
    test = held_out(train)
    with torch.no_grad():
        fresh = Trace_ELBO().loss(fit.model, fit.guide, test.batch()) / len(test)
    assert model.test_curve[-1][1] == pytest.approx(fresh, rel=0.01)
    other, plain = VAE(latent_dim=4, hidden=32, depth=1), ppvae.Dataset(train.x, kind="binary")
    ppvae.fit(other, plain, steps=2, callbacks=[TestCurve(other, plain)], progress=False)
    assert held_out(plain) is None and other.test_curve == []  # no held-out split: nothing recorded
