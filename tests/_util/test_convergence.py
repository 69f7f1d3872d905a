"""The SVI convergence check (ppvae/_convergence.py): its stated rule on synthetic loss curves, and its hook in fit."""

import warnings

import numpy as np
import pytest
import torch

import ppvae
from ppvae._util.convergence import MIN_STEPS, check_convergence


@pytest.mark.parametrize("length", [MIN_STEPS, 200, 2000])
def test_flat_noisy_curve_never_warns(length):
    # independent noise and AR(1) noise (phi = 0.5: Adam's iterates are correlated) of any scale, 500 seeds each
    for seed in range(500):
        rng = np.random.default_rng(seed)
        noise = rng.standard_normal(length) * rng.uniform(0.01, 10.0)
        assert not check_convergence(100.0 + noise).still_falling, seed
        ar = np.zeros(length)
        for t in range(1, length):
            ar[t] = 0.5 * ar[t - 1] + noise[t]
        assert not check_convergence(100.0 + ar).still_falling, seed


def test_still_falling_curve_warns_and_converged_one_does_not():
    t = np.arange(1000)
    noise = 0.5 * np.random.default_rng(0).standard_normal(1000)
    slow = check_convergence(100 + 50 * np.exp(-t / 400) + noise)  # still falls ~6 nats over the last 200 steps
    assert slow.still_falling and slow.window == 200
    assert slow.decrease > 3 * slow.noise_sd and slow.decrease > 3 * slow.decrease_se
    assert not check_convergence(100 + 50 * np.exp(-t / 50) + noise).still_falling  # settled long before the end
    # a drift below 0.1% of the loss is not reported, however clean
    assert not check_convergence(1e6 - 0.001 * t).still_falling


def test_short_or_nonfinite_histories_are_not_judged():
    assert check_convergence(np.linspace(10, 0, MIN_STEPS - 1)).window == 0
    falling = np.linspace(100, 0, 500)
    falling[-1] = np.nan
    assert not check_convergence(falling).still_falling


def _normal_model():
    import pyro
    import pyro.distributions as dist

    class Mean(ppvae.Model):
        def forward(self, batch):
            mu = pyro.sample("mu", dist.Normal(batch.x.new_zeros(()), 100.0))
            with self.data_plate(batch):
                pyro.sample("obs", dist.Normal(mu, 1.0), obs=batch.x[:, 0])

    return Mean()


def test_fit_warns_with_remedy_and_flag_silences():
    data = ppvae.Dataset(torch.randn(50, 1, generator=torch.Generator().manual_seed(0)) + 30.0)
    with pytest.warns(UserWarning, match="still fell.*more steps.*learning rate.*standardize"):
        ppvae.fit(_normal_model(), data, guide="auto_delta", steps=100, lr=0.01, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ppvae.fit(_normal_model(), data, guide="auto_delta", steps=100, lr=0.01, progress=False,
                  check_convergence=False)
