"""fit(..., jit=True): the traced objective gives the eager run's losses and parameters, and gives up
(one warning, eager training) where a trace cannot be trusted."""

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.infer.svi import train as svi_train
from ppvae.models import GMM, VAE


@pytest.fixture(autouse=True)
def _pyro_path(monkeypatch):
    """These tests compare Pyro's objective traced and eager: keep the jit=False runs on Pyro's path too (they would
    otherwise take the potential path, ppvae/infer/svi/potential_svi.py, with its own noise draws)."""
    monkeypatch.setattr(svi_train, "potential_path", lambda trainer: (None, "test_jit: Pyro's path"))


@pytest.fixture(scope="module")
def digits():
    return ppvae.load_dataset("mnist5k", split="train").subset(torch.arange(120))


def _run(model_factory, data, jit, **options):
    seen = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = ppvae.fit(model_factory(), data, seed=3, progress=False, jit=jit,
                        callbacks=[lambda tr: seen.setdefault("trainer", tr)], **options)
    jit_warnings = [str(w.message) for w in caught if str(w.message).startswith("jit:")]
    return fit, seen["trainer"], jit_warnings


def _state(fit):
    return {k: v.detach().clone() for k, v in fit.model.state_dict().items()}


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_traced_vae_matches_the_eager_run(digits, elbo):
    """Same seed, same draws: the losses of 12 steps (3 batch shapes: 50, 50, 20) and the final
    weights equal the eager run's to float rounding."""
    make = lambda: VAE(latent_dim=4, hidden=32)  # noqa: E731
    eager, _, _ = _run(make, digits, False, steps=12, batch_size=50, lr=1e-2, elbo=elbo)
    traced, trainer, warned = _run(make, digits, True, steps=12, batch_size=50, lr=1e-2, elbo=elbo)
    assert warned == [] and trainer.compiled.failed is None
    assert len(trainer.compiled.graphs) == 2  # batches of 50 and the last one of 20
    np.testing.assert_allclose(traced.history["loss"], eager.history["loss"], rtol=1e-5)
    a, b = _state(eager), _state(traced)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6)


def test_traced_gmm_with_enumeration_matches_the_eager_run(faithful):
    """TraceEnum_ELBO (assignments summed out) traced; diagonal covariances (the full model's LKJ
    prior converts a tensor to a Python value while tracing, so it trains eagerly)."""
    make = lambda: GMM(K=2, covariance="diag")  # noqa: E731
    eager, _, _ = _run(make, faithful, False, steps=15, guide="auto_normal", lr=0.05)
    traced, trainer, warned = _run(make, faithful, True, steps=15, guide="auto_normal", lr=0.05)
    assert warned == [] and len(trainer.compiled.graphs) == 1
    np.testing.assert_allclose(traced.history["loss"], eager.history["loss"], rtol=1e-5)


def test_kl_warmup_is_traced_only_after_the_ramp(digits):
    make = lambda: VAE(latent_dim=4, hidden=32)  # noqa: E731
    opts = dict(steps=8, batch_size=60, lr=1e-2, kl_warmup_steps=4)
    eager, _, _ = _run(make, digits, False, **opts)
    traced, trainer, warned = _run(make, digits, True, **opts)
    assert warned == [] and len(trainer.compiled.graphs) == 1
    np.testing.assert_allclose(traced.history["loss"], eager.history["loss"], rtol=1e-5)


class _BranchOnDraw(ppvae.Model):
    """x ~ N(mu, 1) or N(mu, 2), chosen in Python by the sign of a draw: not traceable."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        scale = 1.0 if float(torch.randn(())) > 0 else 2.0
        with self.data_plate(batch):
            pyro.sample("x", dist.Normal(mu, scale), obs=batch.x[:, 0])


class _NumpyNoise(ppvae.Model):
    """A likelihood scale drawn by numpy, out of the tracer's sight (baked into a graph as a constant)."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        scale = 1.0 + np.random.rand()
        with self.data_plate(batch):
            pyro.sample("x", dist.Normal(mu, scale), obs=batch.x[:, 0])


@pytest.mark.parametrize("model, reason", [(_BranchOnDraw, "turns a tensor into a Python value"),
                                           (_NumpyNoise, "the traced objective gave")])
def test_untraceable_models_train_eagerly_with_one_warning(model, reason):
    """Both are caught when the graph is built. Torch's RNG is rewound for the eager step, so the
    run equals an eager one; numpy's draws made while checking are not (numpy is not torch's RNG)."""
    data = torch.randn(40, 1) + 3.0
    np.random.seed(0)
    fit, trainer, warned = _run(model, data, True, steps=20, guide="auto_normal", lr=0.1)
    assert len(warned) == 1 and reason in warned[0] and "continues without jit" in warned[0]
    assert trainer.compiled.graphs == {}
    if model is _BranchOnDraw:
        eager, _, _ = _run(model, data, False, steps=20, guide="auto_normal", lr=0.1)
        assert fit.history["loss"] == eager.history["loss"]


def test_jit_option_is_validated():
    with pytest.raises(ppvae.PPVAEError, match="jit: expected True or False; got 'yes'"):
        ppvae.fit(GMM(K=2), torch.randn(20, 2), steps=2, jit="yes", progress=False)
    with pytest.raises(ppvae.PPVAEError, match="jit: the compiled objective cannot hold the distributed"):
        ppvae.fit(GMM(K=2), torch.randn(20, 2), steps=2, jit=True, distributed=True, progress=False)
