"""NUTS/HMC against exact posteriors (Normal-Gamma, PPCA's p(z | x)) and exact potentials.

Tolerances are stated per test; they are several Monte Carlo standard errors wide for the ESS these
fixed seeds give (~500-1000 effective draws: the MCSE of a mean is ~0.03-0.05 posterior sd, of an sd
~3%, of a correlation ~0.03), and every seed is fixed, so the tests are deterministic.
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppvae import Dataset, Model, PPVAEError, fit, load_dataset, log_marginal
from ppvae.infer.em import fit_em
from ppvae.infer.mcmc.local import fitted_proposal, local_posterior
from ppvae.infer.mcmc.potential import _OrderedColumn
from ppvae.infer.mcmc.sampler import MCMCDivergenceError, Potential, _initial_params, run_mcmc
from ppvae.models import GMM, PPCA, NormalGamma
from ppvae.models.gmm import gmm_log_likelihood


def _normal_data(n, seed=0):
    return torch.randn(n, 1, generator=torch.Generator().manual_seed(seed)) * 1.5 + 0.5


def _log_scale_corr(a_n: float) -> float:
    """Exact corr(log|mu - mu_n|, log tau) under NG(mu_n, lambda_n, a_n, b_n): log|mu - mu_n| =
    -1/2 log(lambda_n tau) + log|eps|, eps ~ N(0, 1), Var log tau = trigamma(a_n), Var log|eps| = pi^2 / 8."""
    v = float(torch.special.polygamma(1, torch.tensor(a_n, dtype=torch.float64)))
    return -0.5 * v / math.sqrt(v * (0.25 * v + math.pi ** 2 / 8))


def _corr(a, b):
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


@pytest.mark.slow
def test_nuts_recovers_normal_gamma_moments_and_scale_dependence():
    # n = 10 points, a_n = 6. Tolerances: |mean - exact| < 0.15 sd, |sd / exact sd - 1| < 0.12 (ESS ~ 500:
    # MCSE 0.045 sd and ~4%). corr(mu, tau) = 0 exactly, but corr(log|mu - mu_n|, log tau) = -0.188
    # (closed form): NUTS within 0.1 of it (MCSE ~0.04)
    model, x = NormalGamma(), _normal_data(10, seed=1)
    post = model.exact_posterior(x)
    result = run_mcmc(model, Dataset(x), num_draws=400, warmup=150, num_chains=2, jit=True, seed=1, progress=False)
    d = result.flat_samples()
    for site, mean, var in (("mu", post.mean_mu, post.var_mu), ("tau", post.mean_tau, post.var_tau)):
        sd = math.sqrt(var)
        assert abs(float(d[site].mean()) - mean) < 0.15 * sd, site
        assert abs(float(d[site].std()) / sd - 1) < 0.12, site
    assert all(float(r) < 1.05 for r in result.rhat().values())
    assert result.num_divergences == 0 and result.samples["mu"].shape == (2, 400)
    exact = _log_scale_corr(post.a_n)
    assert exact == pytest.approx(-0.188, abs=1e-3)
    assert abs(_corr((d["mu"] - post.mu_n).abs().log(), d["tau"].log()) - exact) < 0.1
    assert abs(_corr(d["mu"], d["tau"])) < 0.15  # the linear correlation is 0 (MCSE ~0.05)


@pytest.mark.slow
def test_hmc_recovers_normal_gamma_means():
    # plain HMC (5 leapfrog steps, adapted step size): means within 0.2 posterior sd
    model, x = NormalGamma(), _normal_data(40, seed=2)
    result = run_mcmc(model, Dataset(x), kernel="hmc", num_draws=200, warmup=100, num_leapfrog=5, jit=True, seed=0,
                      progress=False)
    post, d = model.exact_posterior(x), result.flat_samples()
    assert abs(float(d["mu"].mean()) - post.mean_mu) < 0.2 * math.sqrt(post.var_mu)
    assert abs(float(d["tau"].mean()) - post.mean_tau) < 0.2 * math.sqrt(post.var_tau)


def _gmm_setup(n_stride=1):
    data = load_dataset("faithful", standardize=True)
    data = data.subset(torch.arange(0, len(data), n_stride))
    model = GMM(K=2, covariance="diag")
    model.setup(data)
    return model, data


def test_closed_form_potential_equals_enumeration_and_hand_computation():
    model, data = _gmm_setup()
    values = {"weights": torch.tensor([0.35, 0.65]), "locs": torch.tensor([[-1.3, -1.2], [0.7, 0.66]]),
              "scales": torch.tensor([[0.23, 0.41], [0.37, 0.44]])}
    fast = Potential(model, data.batch(), max_plate_nesting=1, model=model)
    slow = Potential(model, data.batch(), max_plate_nesting=1, model=model, closed_form=False)
    assert fast.closed_form and not slow.closed_form
    prior = (dist.Dirichlet(torch.ones(2)).log_prob(values["weights"])
             + dist.Normal(model.loc_mean, model.loc_scale).log_prob(values["locs"]).sum()
             + dist.LogNormal(model.scale_median.log(), 1.0).log_prob(values["scales"]).sum())
    lik = gmm_log_likelihood(data.x, values["weights"], values["locs"], torch.diag_embed(values["scales"])).sum()
    assert float(fast.log_joint(values)) == pytest.approx(float(prior + lik), rel=1e-5)
    assert float(slow.log_joint(values)) == pytest.approx(float(prior + lik), rel=1e-5)


@pytest.mark.parametrize("K,order,concentration", [(2, ("locs", 0), 1.0), (3, ("locs", 1), 1.7), (4, None, 0.6),
                                                   (1, None, 1.0)])
def test_gmm_closed_form_gradient_equals_autograd(K, order, concentration):
    # the diagonal GMM's hand-written U and dU/du (Fisher identity + chain rule through the stick-breaking and
    # ordered maps) against autograd on the generic potential, in float64 at random unconstrained points
    data = load_dataset("faithful", standardize=True)
    data = Dataset(data.x.double())
    model = GMM(K=K, covariance="diag", concentration=concentration)
    model.setup(data)
    potential = Potential(model, data.batch(), max_plate_nesting=1, model=model, order=order)
    assert potential.gradient == "closed form" and potential.shapes["weights"] == (K - 1,)
    gen = torch.Generator().manual_seed(K)
    for _ in range(3):
        u = {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in potential.shapes.items()}
        theta = potential.flatten(u)
        value, grad = potential.closed_form_value_and_grad(theta)
        leaf = theta.clone().requires_grad_(True)
        expected = potential.eager_energy(potential.unflatten(leaf))
        (expected_grad,) = torch.autograd.grad(expected, leaf)
        assert float(value) == pytest.approx(float(expected.detach()), rel=1e-12)
        assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-9)
        # what the sampler calls: the autograd node hands the same gradient to Pyro
        leaf = theta.clone().requires_grad_(True)
        (given,) = torch.autograd.grad(potential.energy(leaf), leaf)
        assert torch.equal(given, grad)
    for name, value in potential.unflatten(theta).items():
        assert torch.equal(value, u[name])


@pytest.mark.parametrize("K,D,order,concentration", [(2, 2, None, 1.0), (2, 2, ("locs", 0), 1.0),
                                                     (3, 3, ("locs", 2), 1.7), (1, 4, None, 0.6)])
def test_full_covariance_gmm_closed_form_gradient_equals_autograd(K, D, order, concentration):
    # the full-covariance GMM's hand-written U and dU/du (models/gmm_potential.py: Fisher identity, the chain rule
    # through the CorrCholesky transform, LKJ prior and Jacobian) against autograd on the generic potential
    # (enumeration, MultivariateNormal, LKJCholesky), in float64 at random unconstrained points, D = 2, 3, 4
    x = load_dataset("faithful", standardize=True).x.double()
    extra = torch.randn(len(x), D - 2, generator=torch.Generator().manual_seed(D), dtype=torch.float64)
    data = Dataset(torch.cat([x, extra], 1))
    model = GMM(K=K, covariance="full", concentration=concentration)
    model.setup(data)
    potential = Potential(model, data.batch(), max_plate_nesting=1, model=model, order=order)
    assert potential.gradient == "closed form" and potential.shapes["corr"] == (K, D * (D - 1) // 2)
    gen = torch.Generator().manual_seed(K + D)
    for _ in range(3):
        u = {n: torch.randn(s, generator=gen, dtype=torch.float64) for n, s in potential.shapes.items()}
        theta = potential.flatten(u)
        value, grad = potential.closed_form_value_and_grad(theta)
        leaf = theta.clone().requires_grad_(True)
        expected = potential.eager_energy(potential.unflatten(leaf))
        (expected_grad,) = torch.autograd.grad(expected, leaf)
        assert float(value) == pytest.approx(float(expected.detach()), rel=1e-12)
        assert torch.allclose(grad, expected_grad, rtol=1e-10, atol=1e-9 * (1 + float(expected_grad.abs().max())))


def test_spherical_gmm_uses_autograd_and_a_wrong_hook_is_refused():
    model, data = _gmm_setup(n_stride=8)
    spherical = GMM(K=2, covariance="spherical")
    spherical.setup(data)
    assert Potential(spherical, data.batch(), max_plate_nesting=1, model=spherical).gradient == "autograd"
    full = GMM(K=2, covariance="full")
    full.setup(data)
    assert Potential(full, data.batch(), max_plate_nesting=1, model=full, closed_form=False).gradient == "autograd"
    assert Potential(model, data.batch(), max_plate_nesting=1, model=model, closed_form=False).gradient == "autograd"

    class WrongGMM(GMM):
        def closed_form_potential(self, x, order=None):
            right = super().closed_form_potential(x, order)

            def wrong(u):
                value, grads = right(u)
                return value, {**grads, "scales": 1.01 * grads["scales"]}

            return wrong

    with pytest.raises(PPVAEError, match="closed_form_potential disagrees with autograd.*'scales'"):
        run_mcmc(WrongGMM(K=2, covariance="diag"), data, num_draws=5, warmup=5, progress=False)


def test_ordered_column_transform_is_a_bijection_with_exact_jacobian():
    t = _OrderedColumn(1)
    u = torch.tensor([[0.3, -0.5], [1.2, 0.4], [-0.7, -1.1]], dtype=torch.float64)
    y = t(u)
    assert (y[1:, 1] > y[:-1, 1]).all() and torch.equal(y[:, 0], u[:, 0])
    assert torch.allclose(t.inv(y), u)
    jac = torch.autograd.functional.jacobian(lambda v: t(v.reshape(3, 2)).reshape(-1), u.reshape(-1))
    assert float(t.log_abs_det_jacobian(u, y)) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-10)


def test_chains_start_at_an_svi_or_em_fit_with_components_ordered():
    # without jitter the starting point (mapped back to constrained space) is the fit's values, components
    # permuted so that locs[:, 0] increases
    model, data = _gmm_setup(n_stride=4)
    em = fit_em(model, data, restarts=2, seed=0)
    svi = fit(GMM(K=2, covariance="diag"), data, guide="auto_delta", steps=20, lr=0.05, progress=False)
    potential = Potential(model, data.batch(), max_plate_nesting=1, model=model, order=("locs", 1))
    for init, values in ((em, model.em_to_sites(em.params)), (svi, svi.global_values(data))):
        start = _initial_params(potential, model, model, data.batch(), init, 2, 0, 0.0)
        constrained, _ = potential.constrain({k: v[1] for k, v in start.items()})
        perm = values["locs"][:, 1].argsort()
        for name in ("weights", "locs", "scales"):
            assert torch.allclose(constrained[name], values[name][perm].float(), atol=1e-5), name


def test_gmm_nuts_from_em_with_ordering_has_no_label_switching():
    # 2 chains from the EM fit, locs[:, 0] ordered: R-hat < 1.1 and posterior means within 3 sd of EM
    model, data = _gmm_setup(n_stride=4)
    em = fit_em(model, data, restarts=2, seed=0)
    result = run_mcmc(model, data, num_draws=60, warmup=40, num_chains=2, init=em, order=("locs", 0),
                      jit=True, seed=0, progress=False)
    locs = result.samples["locs"]
    assert (locs[..., 0, 0] < locs[..., 1, 0]).all()
    assert max(float(r.max()) for r in result.rhat().values()) < 1.1
    em_locs = model.em_to_sites(em.params)["locs"].float()
    em_locs = em_locs[em_locs[:, 0].argsort()]
    flat = result.flat_samples()["locs"]
    assert ((flat.mean(0) - em_locs).abs() < 3 * flat.std(0)).all()
    assert result.config["gradient"] == "closed form"


def test_local_posterior_matches_ppca_exact_posterior():
    # p(z | x) = N(m, C) in closed form; NUTS (1 chain, 400 draws, ESS ~400): mean within 0.25 sd (MCSE 0.05 sd),
    # cov within 0.25 max C_ii (MCSE of a variance ~7%)
    gen = torch.Generator().manual_seed(0)
    model = PPCA(latent_dim=2).set_parameters(torch.randn(5, 2, generator=gen), torch.zeros(5), 0.7)
    x = torch.randn(5, generator=gen)
    result = local_posterior(model, x, num_draws=400, warmup=200, jit=True, seed=0, progress=False)
    z = result.flat_samples()["z"].reshape(-1, 2).double()
    mean, cov = model.exact_posterior(x[None])
    sd = cov.diagonal().sqrt()
    assert ((z.mean(0) - mean[0]).abs() < 0.25 * sd).all()
    assert (torch.cov(z.T) - cov).abs().max() < 0.25 * cov.diagonal().max()
    assert all(p.requires_grad for p in model.parameters())  # the network weights are unfrozen again
    # log p(x) by importance sampling from a Student-t fitted to the draws: within 0.025 nats of the
    # closed form log N(x | mu, W W^T + sigma^2 I) (10,000 weights, ESS ~8,000: stderr ~0.005)
    estimate = log_marginal((model, fitted_proposal(result, model)), x[None], num_particles=10000, proposal="guide")
    assert float(estimate.ess[0]) > 5000
    assert float(estimate.values[0]) == pytest.approx(float(model.log_marginal_exact(x[None])[0]), abs=0.025)


class _PoissonLatent(Model):
    def forward(self, batch):
        with self.data_plate(batch):
            k = pyro.sample("k", dist.Poisson(3.0))
            pyro.sample("obs", dist.Normal(k.float(), 1.0), obs=batch.x[:, 0])


def test_bad_input_is_refused_with_clear_messages():
    x = Dataset(torch.randn(5, 1))
    with pytest.raises(PPVAEError, match="'k'.*no finite support"):
        run_mcmc(_PoissonLatent(), x, num_draws=5, warmup=5, progress=False)
    with pytest.raises(PPVAEError, match="kernel: expected one of nuts, hmc; got 'mala'"):
        run_mcmc(NormalGamma(), x, kernel="mala", progress=False)
    one = run_mcmc(NormalGamma(), x, num_draws=20, warmup=20, progress=False)
    with pytest.raises(PPVAEError, match="rhat: expected at least 2 chains"):
        one.rhat()
    with pytest.raises(PPVAEError, match="order: expected a continuous latent site"):
        run_mcmc(GMM(K=2), load_dataset("faithful"), order=("means", 0), progress=False)


def test_divergences_over_the_limit_raise():
    # a fixed leapfrog step 30x the posterior scale makes every trajectory's energy error explode
    x = Dataset(_normal_data(50))
    with pytest.raises(MCMCDivergenceError, match="divergent transitions in 1 x 20 draws; expected at most 0"):
        run_mcmc(NormalGamma(), x, num_draws=20, warmup=0, step_size=5.0, seed=0, max_divergences=0, progress=False)


def test_many_local_continuous_dimensions_are_refused_with_the_count():
    """Before: `ppvae mcmc vae --data mnist5k` ran NUTS over 200,000 dimensions with no end and no word.
    PPCA(latent_dim=2) on 501 points has 1,002 > 1,000 local dimensions: refused before any sampling."""
    x = torch.randn(501, 3, generator=torch.Generator().manual_seed(0))
    with pytest.raises(PPVAEError, match=r"PPCA has 1,002 dimensions of per-data-point continuous latents "
                                         r"\(z: \(501, 2\)\).*more than 1,000.*local_posterior.*allow_local=True"):
        run_mcmc(PPCA(latent_dim=2), x, num_draws=5, warmup=5, progress=False)


def test_cli_mcmc_refuses_a_vae_in_one_line(capsys):
    from ppvae.cli.app import main

    assert main(["mcmc", "vae", "--data", "mnist5k", "--num-draws", "5", "--warmup", "5", "--out", "o"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "200,000 dimensions" in err[0] and "--allow-local" in err[0]
