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
    from ppvae.infer.svi.train import TrainConfig, batch_at

    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=20, progress=False)
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
    model = fit.model.enumerated()
    full = elbo.differentiable_loss(model, fit.guide, faithful.batch()).item()
    cfg = TrainConfig(batch_size=68).validate(len(faithful))  # 272 = 4 x 68
    parts = [elbo.differentiable_loss(model, fit.guide, batch_at(faithful, cfg, s)[0]).item() for s in range(4)]
    assert sum(parts) / 4 == pytest.approx(full, rel=1e-5)
    assert max(parts) - min(parts) > 1.0  # the batches really differ


def test_epochs_count_steps_and_batches_cover_the_data(faithful):
    from ppvae.infer.svi.train import TrainConfig, batch_at

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
    with pytest.raises(ppvae.PPVAEError, match="its forward raised ValueError: Shape mismatch"):
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


def test_adam_betas_reach_the_optimizer_and_the_saved_config(faithful, tmp_path):
    seen = {}
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=3, betas=(0.5, 0.9), progress=False,
                    callbacks=[lambda tr: seen.setdefault("trainer", tr)])
    assert seen["trainer"].optim.param_groups[0]["betas"] == (0.5, 0.9)
    fit.save(str(tmp_path / "run"))
    assert tuple(ppvae.Fit.load(str(tmp_path / "run")).config.betas) == (0.5, 0.9)


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
        ({"betas": (0.9,)}, "betas: expected two decay rates"),
        ({"betas": (0.9, 1.0)}, "betas: expected decay rates below 1"),
        ({"betas": (-0.1, 0.9)}, "betas\\[0\\]: expected a number >= 0"),
    ],
)
def test_bad_training_options_raise_clear_errors(faithful, options, match):
    with pytest.raises(ppvae.PPVAEError, match=match):
        ppvae.fit(GMM(K=2), faithful, progress=False, **options)


@pytest.mark.parametrize(
    "x, match",
    [
        (torch.tensor([[1.0, float("nan")], [2.0, 3.0]]), "missing values: model .gmm. has no"),  # NaN: missing
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
    from ppvae.infer.svi.objectives import make_elbo

    model = fit.model.enumerated()
    batch = faithful.batch()
    pyro.set_rng_seed(0)
    _, one = make_elbo("enum", has_discrete=True, max_plate_nesting=1)
    _, many = make_elbo("enum", has_discrete=True, max_plate_nesting=1, num_particles=16)
    a = torch.tensor([one.differentiable_loss(model, fit.guide, batch).item() for _ in range(24)])
    b = torch.tensor([many.differentiable_loss(model, fit.guide, batch).item() for _ in range(6)])
    assert abs(a.mean() - b.mean()) < 4 * math.sqrt(a.var() / 24 + b.var() / 6)
    assert b.std() < a.std()


def _tiny_vae_data():
    x = (torch.rand(40, 12, generator=torch.Generator().manual_seed(3)) < 0.4).float()
    return ppvae.Dataset(x, kind="binary")


def _coin_model(x):
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)


def _coin_guide(x):
    logit = pyro.param("coin_logit", torch.zeros(len(x)))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Bernoulli(logits=logit))


@pytest.mark.parametrize("num_particles", [1, 3])
def test_lean_trace_elbo_equals_pyro_trace_elbo(num_particles):
    """The 'trace' objective's short path gives Pyro's Trace_ELBO loss and gradients exactly at the same
    random draws: on a VAE minibatch (reparameterized, N/M-scaled data plate) and, through its fallback,
    on a guide with a Bernoulli site (score-function term)."""
    from ppvae.infer.svi.objectives import LeanTrace_ELBO, make_elbo
    from ppvae.infer.svi.train import TrainConfig, batch_at
    from ppvae.models import VAE

    data = _tiny_vae_data()
    model = VAE(latent_dim=2, hidden=8)
    model.setup(data)
    batch = batch_at(data, TrainConfig(batch_size=10).validate(len(data)), 1)[0]
    name, lean = make_elbo("trace", has_discrete=False, max_plate_nesting=1, num_particles=num_particles,
                           vectorize_particles=False)
    assert name == "trace" and isinstance(lean, LeanTrace_ELBO)
    ref = pyro.infer.Trace_ELBO(num_particles=num_particles)
    params = list(model.parameters())
    x = torch.tensor([0.1, 2.3, -0.4, 1.9])
    pyro.clear_param_store()
    _coin_guide(x)
    coin = [pyro.param("coin_logit").unconstrained()]
    for m, g, args, ps in ((model, model.guide, (batch,), params), (_coin_model, _coin_guide, (x,), coin)):
        losses, grads = [], []
        for elbo in (lean, ref):
            torch.manual_seed(11)
            with pyro.validation_enabled(False):
                loss = elbo.differentiable_loss(m, g, *args)
            losses.append(loss.item())
            grads.append(torch.autograd.grad(loss, ps))
        assert losses[0] == pytest.approx(losses[1], rel=1e-6, abs=1e-6)
        assert all(torch.allclose(a, b, rtol=1e-6, atol=1e-6) for a, b in zip(*grads, strict=True))
        assert any(bool(gr.abs().sum() > 0) for gr in grads[0])


def test_vae_trace_fit_repeats_bit_for_bit_with_fused_adam():
    """The trainer's Adam is torch's fused kernel on CPU float parameters, and a seeded VAE run with
    the 'trace' objective repeats exactly."""
    from ppvae.models import VAE

    data = _tiny_vae_data()
    seen = []
    runs = [ppvae.fit(VAE(latent_dim=2, hidden=8), data, elbo="trace", steps=12, batch_size=10, seed=5,
                      progress=False, callbacks=[lambda t: seen.append(t.optim.defaults.get("fused"))])
            for _ in range(2)]
    assert seen and all(f is True for f in seen)
    assert runs[0].history["loss"] == runs[1].history["loss"]
    a, b = (r.model.state_dict() for r in runs)  # the model owns encoder (its guide) and decoder
    assert a.keys() == b.keys() and len(a) == 12 and all(torch.equal(a[k], b[k]) for k in a)


def test_fused_adam_matches_default_adam_to_rounding():
    """ppvae's optimizer (fused Adam) follows torch's default Adam on a quadratic to float rounding."""
    from ppvae.infer.svi.steps import adam as _adam

    target = torch.linspace(-2, 3, 7)
    out = []
    for make in (lambda p: _adam(p, 0.05), lambda p: torch.optim.Adam(p, lr=0.05)):
        w = torch.nn.Parameter(torch.zeros(7))
        opt = make([w])
        for _ in range(100):
            opt.zero_grad()
            ((w - target) ** 2).sum().backward()
            opt.step()
        out.append(w.detach())
    assert torch.allclose(out[0], out[1], rtol=1e-5, atol=1e-6)
    assert not torch.equal(out[0], torch.zeros(7))


# -- the public Trainer and its callbacks -----------------------------------------------------------------
GMM_RUN = dict(guide="auto_normal", steps=16, batch_size=68, seed=3, lr=0.05)  # 4 batches per epoch


class _Recorder(ppvae.Callback):
    def __init__(self):
        self.calls = []

    def on_fit_start(self, trainer):
        self.calls.append(("start", trainer.step))

    def on_step_end(self, trainer, loss):
        self.calls.append(("step", trainer.step, loss))

    def on_epoch_end(self, trainer):
        self.calls.append(("epoch", trainer.step))

    def on_fit_end(self, trainer):
        self.calls.append(("end", trainer.step))


def test_a_callback_sees_every_loss_in_order_and_each_hook_at_its_point(faithful):
    rec = _Recorder()
    fit = ppvae.fit(GMM(K=2), faithful, callbacks=[rec], progress=False, **{**GMM_RUN, "steps": 10})
    steps = [c for c in rec.calls if c[0] == "step"]
    assert [c[2] for c in steps] == fit.history["loss"] and [c[1] for c in steps] == list(range(1, 11))
    # start once, then each step; an epoch ends after steps 4 and 8 (272 points = 4 x 68); end once, at 10
    assert rec.calls[0] == ("start", 0) and rec.calls[-1] == ("end", 10)
    assert [c for c in rec.calls if c[0] != "step"] == [("start", 0), ("epoch", 4), ("epoch", 8), ("end", 10)]
    assert rec.calls.index(("epoch", 4)) == rec.calls.index(("step", 4, fit.history["loss"][3])) + 1


class _StopAt(ppvae.Callback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, loss):
        if trainer.step == self.step:
            trainer.should_stop = True


def test_state_dict_round_trip_resumes_bit_for_bit(faithful):
    """A run stopped at step 7 and continued from its state_dict (through torch.save and a
    weights_only load) in a new Trainer ends at the uninterrupted run's losses and parameters exactly."""
    import io

    reference = ppvae.fit(GMM(K=2), faithful, progress=False, **GMM_RUN)
    first = ppvae.Trainer(GMM(K=2), faithful, callbacks=[_StopAt(7)], **GMM_RUN)
    part = first.fit(progress=False)
    assert part.history["steps"] == 7 and part.history["stopped_early"]
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["step"] == 7 and state["losses"] == reference.history["loss"][:7]

    second = ppvae.Trainer(GMM(K=2), faithful, **GMM_RUN)
    second.load_state_dict(state)
    resumed = second.fit(progress=False)
    assert resumed.history["loss"] == reference.history["loss"] and not resumed.history["stopped_early"]
    a, b = _params(resumed), _params(reference)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_state_dict_errors_are_clear(faithful):
    trainer = ppvae.Trainer(GMM(K=2), faithful, **GMM_RUN)
    with pytest.raises(ppvae.PPVAEError, match="state_dict: nothing to save before the first step"):
        trainer.state_dict()
    trainer.fit(progress=False)
    state = trainer.state_dict()
    with pytest.raises(ppvae.PPVAEError, match="load_state_dict: expected a Trainer.state_dict.*missing optimizer"):
        ppvae.Trainer(GMM(K=2), faithful, **GMM_RUN).load_state_dict({k: v for k, v in state.items()
                                                                       if k != "optimizer"})
    with pytest.raises(ppvae.PPVAEError, match="at step 16, past the 8 steps asked for"):
        ppvae.Trainer(GMM(K=2), faithful, **{**GMM_RUN, "steps": 8}).load_state_dict(state)
    with pytest.raises(ppvae.PPVAEError, match="holds parameters of shapes"):
        ppvae.Trainer(GMM(K=3), faithful, **GMM_RUN).load_state_dict(state)
    with pytest.raises(ppvae.PPVAEError, match="callbacks: expected a list"):
        ppvae.Trainer(GMM(K=2), faithful, callbacks=ppvae.EarlyStopping(3), **GMM_RUN)
    with pytest.raises(ppvae.PPVAEError, match="strategy: .* object has no setup, batch, combine_loss, is_main"):
        ppvae.Trainer(GMM(K=2), faithful, strategy=object(), **GMM_RUN)
