"""SVI on the compiled potential (ppvae/infer/svi/potential_svi.py, issue 24) against Pyro's path and closed forms.

* ELBO value and gradient: the potential path and Pyro's ELBO (``Trace_ELBO`` / ``TraceEnum_ELBO``) at the same
  parameters and the same noise, on four models: GMM K=2 full (simplex, positive and Cholesky-factor globals; with
  the model's closed-form gradient, and without it: enumerated assignments and autograd), GMM K=3 diagonal (the
  model's closed-form gradient), Bayesian linear regression
  and non-centered eight schools (a positive global), over the four guides.
* Bayesian linear regression: the moments of an ``auto_mvn`` fit on the potential path within 3 Monte Carlo
  standard errors of the exact Gaussian posterior.
* Resume: a run resumed from a checkpoint equals the uninterrupted run bit for bit (full batch and minibatch).
* Dispatch, minibatches, the NaN guard, save/load.
"""

import math

import pytest
import torch
from _helpers import REPO_ROOT

import ppvae
from ppvae.infer.svi.potential_svi import FAST_GUIDES
from ppvae.models import GMM as gmm_cls

ROOT = REPO_ROOT
blr = ppvae.import_model(str(ROOT / "examples" / "blr.py:BayesianLinearRegression"))
blr_module = __import__(blr.__module__, fromlist=["exact"])
schools = ppvae.import_model(str(ROOT / "examples" / "eight_schools.py:EightSchools"))
schools_module = __import__(schools.__module__, fromlist=["schools"])
mixreg = ppvae.import_model(str(ROOT / "examples" / "mixreg.py:MixtureOfRegressions"))


@pytest.fixture(scope="module")
def regression():
    return ppvae.load_dataset(f"{ROOT / 'examples' / 'data' / 'regression.csv'}:target=y")


class _EnumeratedGMM(gmm_cls):
    """The full-covariance GMM without its closed-form gradient: the generic potential (enumeration, autograd)."""

    def closed_form_potential(self, x, order=None):
        return None


def _cases(faithful, regression):
    return {
        "gmm_full": (gmm_cls(K=2), faithful),
        "gmm_full_enum": (_EnumeratedGMM(K=2), faithful),
        "gmm_diag": (gmm_cls(K=3, covariance="diag"), faithful),
        "blr": (blr(noise_sd=0.5), regression),
        "schools": (schools(), schools_module.schools()),
    }


def _pyro_loss_and_grad(trainer, seed: int):
    """Pyro's differentiable ELBO loss and its gradient in the flat order (the guide's named parameters)."""
    params = [p for _, p in trainer.guide.named_parameters()]
    torch.manual_seed(seed)
    import pyro

    with pyro.validation_enabled(False):
        loss = trainer.elbo.differentiable_loss(trainer.model_fn, trainer.guide, trainer.data.batch())
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    parts = [(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads, strict=True)]
    flat = torch.cat(parts)
    return float(loss.detach()), flat


@pytest.mark.parametrize("case,guide", [
    ("gmm_full", "auto_normal"), ("gmm_full", "auto_mvn"), ("gmm_full", "auto_lowrank_mvn"), ("gmm_full", "auto_delta"),
    ("gmm_full_enum", "auto_normal"), ("gmm_full_enum", "auto_mvn"),
    ("gmm_diag", "auto_normal"), ("gmm_diag", "auto_mvn"), ("blr", "auto_lowrank_mvn"), ("blr", "auto_mvn"),
    ("schools", "auto_normal"), ("schools", "auto_delta"),
])
def test_elbo_and_gradient_equal_pyro(case, guide, faithful, regression):
    model, data = _cases(faithful, regression)[case]
    trainer = ppvae.Trainer(model, data, guide=guide, steps=10, lr=0.05, seed=1)
    engine = trainer.fast
    assert trainer.svi_path == "potential" and engine is not None, trainer.svi_path_reason
    for _ in range(3):  # move the parameters off their initial values (scales, off-diagonals)
        trainer.run_step()
    for seed in (0, 1):
        want_loss, want_grad = _pyro_loss_and_grad(trainer, seed)
        # the same noise: Pyro's guides draw it from the torch RNG in the same order (D + rank < 16 here, so
        # per-site and one-shot draws coincide)
        torch.manual_seed(seed)
        eps = torch.randn(1, engine.noise_dim)
        for manual in (True, False):
            loss, grad, _ = engine.loss_and_grad(eps, data.batch(), manual=manual)
            scale = 1 + abs(want_loss)
            assert abs(float(loss) - want_loss) < 1e-5 * scale, (manual, float(loss), want_loss)
            tol = 2e-4 * (1 + want_grad.abs().max())
            assert (grad - want_grad).abs().max() < tol, (manual, grad, want_grad)


@pytest.mark.slow  # about 8 s on an idle core: 3,000 steps of 8 particles
def test_blr_auto_mvn_moments_match_closed_form(regression):
    model = blr(noise_sd=0.5)
    fit = ppvae.fit(model, regression, guide="auto_mvn", steps=3000, lr=0.05, lr_schedule="exponential",
                    lr_final_factor=0.002, num_particles=8, seed=0, progress=False, check_convergence=False)
    assert fit.info["svi_path"] == "potential"
    mean, cov, _ = blr_module.exact(model, regression.x, regression.y)
    num = 4000
    torch.manual_seed(0)
    draws = fit.latent_draws(regression, num_draws=num)
    theta = torch.cat([draws["w"].reshape(num, -1), draws["b"].reshape(num, 1)], 1).double()
    sd = cov.diagonal().sqrt()
    se_mean = sd / math.sqrt(num)
    assert ((theta.mean(0) - mean).abs() < 3 * se_mean).all(), ((theta.mean(0) - mean) / se_mean)
    var = theta.var(0)
    se_var = cov.diagonal() * math.sqrt(2 / (num - 1))  # the sampling sd of a normal sample variance
    assert ((var - cov.diagonal()).abs() < 3 * se_var).all(), ((var - cov.diagonal()) / se_var)


@pytest.mark.parametrize("batch_size", [None, 100])
def test_resume_is_bit_for_bit(tmp_path, faithful, batch_size):
    opts = dict(guide="auto_mvn", lr=0.05, seed=3, batch_size=batch_size, num_particles=2, progress=False,
                check_convergence=False)
    full = ppvae.fit(gmm_cls(K=2), faithful, steps=30, **opts)
    ppvae.fit(gmm_cls(K=2), faithful, steps=14, checkpoint_dir=str(tmp_path), **opts)
    resumed = ppvae.fit(gmm_cls(K=2), faithful, steps=30, resume=str(tmp_path), **opts)
    assert full.info["svi_path"] == resumed.info["svi_path"] == "potential"
    assert full.history["loss"] == resumed.history["loss"]
    for (name, a), (_, b) in zip(full.guide.named_parameters(), resumed.guide.named_parameters(), strict=True):
        assert torch.equal(a, b), name


def test_minibatch_potential_scales_by_n_over_m(faithful):
    """On a minibatch the potential is the generic one with the data plate's N/M scale: its loss at fixed noise
    equals Pyro's ELBO on the same batch."""
    trainer = ppvae.Trainer(gmm_cls(K=2, covariance="diag"), faithful, guide="auto_normal", steps=5, batch_size=64)
    engine = trainer.fast
    assert engine is not None and engine.minibatch
    batch = faithful.batch(torch.arange(64, 128))
    torch.manual_seed(0)
    import pyro

    with pyro.validation_enabled(False):
        want = float(trainer.elbo.differentiable_loss(trainer.model_fn, trainer.guide, batch).detach())
    torch.manual_seed(0)
    loss, _, _ = engine.loss_and_grad(torch.randn(1, engine.noise_dim), batch)
    assert abs(float(loss) - want) < 1e-5 * (1 + abs(want))
    assert math.isfinite(trainer.fit(progress=False).history["loss"][-1])


def test_dispatch_records_the_path(faithful, regression):
    assert set(FAST_GUIDES) == {"auto_delta", "auto_normal", "auto_lowrank_mvn", "auto_mvn"}
    fit = ppvae.fit(gmm_cls(K=2), faithful, guide="auto_iaf", steps=2, progress=False, check_convergence=False)
    assert fit.info["svi_path"] == "pyro" and "auto_iaf" in fit.info["svi_path_reason"]
    fit = ppvae.fit(gmm_cls(K=2), faithful, guide="auto_normal", elbo="iwae", num_particles=2, steps=2,
                    progress=False, check_convergence=False)
    assert fit.info["svi_path"] == "pyro" and "iwae" in fit.info["svi_path_reason"]
    fit = ppvae.fit(mixreg(K=2), ppvae.load_dataset(f"{ROOT / 'examples' / 'data' / 'mixreg.csv'}:target=y"),
                    guide="auto_normal", steps=2, progress=False, check_convergence=False)
    assert fit.info["svi_path"] == "potential"


def test_nan_guard_names_the_step(faithful):
    trainer = ppvae.Trainer(gmm_cls(K=2, covariance="diag"), faithful, guide="auto_normal", steps=10)
    trainer.run_step()
    with torch.no_grad():
        trainer.fast.flat[0] = float("nan")
    with pytest.raises(ppvae.NonFiniteError, match="(?s)at step 1;.*potential path"):
        trainer.run_step()


def test_fit_saves_loads_and_predicts_unchanged(tmp_path, faithful):
    fit = ppvae.fit(gmm_cls(K=2), faithful, guide="auto_normal", steps=50, lr=0.05, progress=False,
                    check_convergence=False)
    assert fit.info["svi_path"] == "potential"
    fit.save(str(tmp_path / "run"))
    loaded = ppvae.Fit.load(str(tmp_path / "run"))
    assert loaded.info["svi_path"] == "potential"
    for k, v in fit.global_values(faithful).items():
        assert torch.allclose(v, loaded.global_values(faithful)[k]), k
    resp = loaded.discrete_posterior(faithful)["z"]
    assert resp.shape == (len(faithful), 2) and torch.allclose(resp.sum(-1), torch.ones(len(faithful)))


def test_fused_adam_step_equals_torch_adam(faithful):
    """The direct ``_fused_adam_`` call takes the same steps as ``torch.optim.Adam(fused=True).step()``, bit for bit."""
    runs = []
    for direct in (True, False):
        trainer = ppvae.Trainer(gmm_cls(K=3, covariance="diag"), faithful, guide="auto_mvn", steps=40, lr=0.05,
                                lr_schedule="cosine")
        if not direct:
            trainer.fast._adam_step = lambda optim: optim.step()
        for _ in range(25):
            trainer.run_step()
        runs.append((list(trainer.losses), trainer.fast.flat.detach().clone()))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


class _DrawInside(ppvae.Model):
    """A likelihood scale drawn inside the model: no fixed potential to trace."""

    def forward(self, batch):
        import pyro
        import pyro.distributions as dist

        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        scale = 1.0 + torch.rand(())
        with self.data_plate(batch):
            pyro.sample("x", dist.Normal(mu, scale), obs=batch.x[:, 0])


def test_a_model_that_draws_inside_takes_pyro_path():
    fit = ppvae.fit(_DrawInside(), torch.randn(30, 1), guide="auto_normal", steps=3, progress=False,
                    check_convergence=False)
    assert fit.info["svi_path"] == "pyro" and "random" in fit.info["svi_path_reason"], fit.info
