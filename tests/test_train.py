"""The SVI trainer: reproducibility, minibatch scaling, schedules, early stopping, NaN guard, bad input."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.models import GMM, ThreeCoin


def _params(fit):
    return {k: v.detach().clone() for k, v in fit.guide.state_dict().items()}


def test_seeded_cpu_run_repeats_bit_for_bit(faithful):
    runs = [ppvae.fit(GMM(K=2), faithful, guide="auto_normal", steps=25, batch_size=64, seed=7, progress=False)
            for _ in range(2)]
    assert runs[0].history["loss"] == runs[1].history["loss"]
    a, b = _params(runs[0]), _params(runs[1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    other = ppvae.fit(GMM(K=2), faithful, guide="auto_normal", steps=25, batch_size=64, seed=8, progress=False)
    assert other.history["loss"] != runs[0].history["loss"]


def test_minibatch_likelihood_is_scaled_by_n_over_m(faithful):
    """With a deterministic guide, the mean of the minibatch losses over one epoch's partition equals
    the full-batch loss: each batch's likelihood is scaled by N / M (Hoffman et al. 2013, eq. 8)."""
    from ppvae.train import TrainConfig, batch_at

    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=20, progress=False)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    model = fit.model.enumerated()
    full = elbo.differentiable_loss(model, fit.guide, faithful.batch()).item()
    cfg = TrainConfig(batch_size=68).validate(len(faithful))  # 272 = 4 x 68
    parts = [elbo.differentiable_loss(model, fit.guide, batch_at(faithful, cfg, s)[0]).item() for s in range(4)]
    assert sum(parts) / 4 == pytest.approx(full, rel=1e-5)
    assert max(parts) - min(parts) > 1.0  # the batches really differ


def test_epochs_count_steps_and_batches_cover_the_data(faithful):
    from ppvae.train import TrainConfig, batch_at

    cfg = TrainConfig(epochs=2, batch_size=100).validate(len(faithful))
    assert cfg.total_steps(len(faithful)) == 6
    seen = torch.cat([batch_at(faithful, cfg, s)[0].index for s in range(3)])
    assert torch.equal(seen.sort().values, torch.arange(272))
    fit = ppvae.fit(ThreeCoin(), torch.tensor([[1.0], [0.0], [1.0]]), guide="auto_delta", epochs=4, batch_size=2,
                    progress=False)
    assert fit.history["steps"] == 8


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_lr_schedules_reach_the_final_factor(faithful, schedule):
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=30, lr=0.1, lr_schedule=schedule,
                    lr_final_factor=0.1, optimizer="clipped_adam", progress=False)
    assert fit.history["steps"] == 30


def test_early_stopping_on_a_plateau(coin_tosses):
    fit = ppvae.fit(ThreeCoin(), coin_tosses, guide="auto_delta", steps=3000, lr=0.1, patience=20, tol=1e-3,
                    progress=False)
    assert fit.history["stopped_early"] and fit.history["steps"] < 3000


class _Exploding(ppvae.Model):
    """A model with a factor that is 0/0 = NaN at every data point."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(batch.x.new_tensor(0.0), 1.0))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=batch.x[:, 0])
            pyro.factor("penalty", (batch.x[:, 0] - mu) * 0.0 / 0.0)


def test_nan_guard_names_step_and_site():
    x = torch.randn(20, 1)
    with pytest.raises(ppvae.NonFiniteError) as info:
        ppvae.fit(_Exploding(), x, guide="auto_normal", steps=10, progress=False)
    msg = str(info.value)
    assert "step 0" in msg and "model:penalty" in msg and "model:obs" not in msg


def test_first_step_errors_are_clear():
    class ZeroScale(ppvae.Model):
        def forward(self, batch):
            mu = pyro.sample("mu", dist.Normal(batch.x.new_tensor(0.0), 1.0))
            with self.data_plate(batch):
                pyro.sample("obs", dist.Normal(mu, batch.x.new_tensor(0.0)), obs=batch.x[:, 0])

    class WrongShape(ppvae.Model):
        def forward(self, batch):
            mu = pyro.sample("mu", dist.Normal(batch.x.new_tensor(0.0), 1.0))
            with self.data_plate(batch):
                pyro.sample("obs", dist.Normal(mu, 1.0).expand([3]), obs=batch.x[:, 0])

    with pytest.raises(ppvae.NonFiniteError, match="step 0.*model:obs"):
        ppvae.fit(ZeroScale(), torch.randn(5, 1), guide="auto_normal", steps=2, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="generative story on the data failed: Shape mismatch"):
        ppvae.fit(WrongShape(), torch.randn(5, 1), guide="auto_normal", steps=2, progress=False)


def test_nan_guard_keeps_last_finite_parameters(faithful):
    """A callback corrupts the data after step 3: training stops, parameters stay finite."""
    fit_steps = []

    def corrupt(trainer):
        fit_steps.append(trainer.step)
        if trainer.step == 3:
            trainer.data.x[5, 0] = float("nan")

    data = ppvae.Dataset(faithful.x.clone())
    with pytest.raises(ppvae.NonFiniteError, match="step 3"):
        ppvae.fit(GMM(K=2), data, guide="auto_delta", steps=10, callbacks=[corrupt], progress=False)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"steps": 0}, "steps: expected an integer >= 1"),
        ({"steps": 10, "epochs": 1}, "steps/epochs"),
        ({"batch_size": 1000}, "batch_size: expected an integer <= 272"),
        ({"lr": -1.0}, "lr: expected a number > 0"),
        ({"optimizer": "sgd"}, "optimizer: expected one of adam, clipped_adam"),
        ({"device": "tpu"}, "device"),
        ({"elbo": "trace"}, "discrete latent sites"),
        ({"elbo": "nope"}, "elbo: expected one of"),
        ({"bogus": 1}, "unknown option"),
        ({"num_particles": 0}, "num_particles"),
    ],
)
def test_bad_training_options_raise_clear_errors(faithful, options, match):
    with pytest.raises(ppvae.PPVAEError, match=match):
        ppvae.fit(GMM(K=2), faithful, progress=False, **options)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.tensor([[1.0, float("nan")], [2.0, 3.0]]), "finite"),
        (torch.empty(0, 2), "non-empty"),
        (torch.ones(2, 2, 2), "gmm expects an \\(N, D\\) array"),
        ("not data", "tensor or array"),
    ],
)
def test_bad_data_raises_clear_errors(x, match):
    with pytest.raises(ppvae.PPVAEError, match=match):
        ppvae.fit(GMM(K=1), x, steps=1, progress=False)


def test_vectorized_particles_match_in_expectation(faithful):
    """num_particles averages independent ELBO draws: same mean loss, smaller spread."""
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_normal", steps=30, progress=False)
    from ppvae.objectives import make_elbo

    model = fit.model.enumerated()
    batch = faithful.batch()
    pyro.set_rng_seed(0)
    _, one = make_elbo("enum", has_discrete=True, max_plate_nesting=1)
    _, many = make_elbo("enum", has_discrete=True, max_plate_nesting=1, num_particles=16)
    a = torch.tensor([one.differentiable_loss(model, fit.guide, batch).item() for _ in range(24)])
    b = torch.tensor([many.differentiable_loss(model, fit.guide, batch).item() for _ in range(6)])
    assert abs(a.mean() - b.mean()) < 4 * math.sqrt(a.var() / 24 + b.var() / 6)
    assert b.std() < a.std()
