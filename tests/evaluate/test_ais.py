"""ppvae.evaluate.ais (the annealing engine) and per-point AIS in log_marginal, against exact answers."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae import PPVAEError
from ppvae.evaluate.ais import anneal, check_betas, linear_schedule, make_schedule, sigmoid_schedule


def _gauss(z, mean, scale):
    """log N(z; mean, scale^2 I) summed over the last dim."""
    return torch.distributions.Normal(mean, scale).log_prob(z).sum(-1)


# an unnormalized target 3.7 * N(z; (2, -1), 0.3^2 I): log Z_1 = log 3.7, and p_0 = N(0, I)
LOG_C, MEAN, SCALE = math.log(3.7), torch.tensor([2.0, -1.0]), 0.3


def _log_target(z):
    return LOG_C + _gauss(z, MEAN, SCALE)


def _log_init(z):
    return _gauss(z, torch.zeros(2), 1.0)


def test_schedules():
    lin, sig = linear_schedule(4), sigmoid_schedule(50)
    assert lin.dtype == torch.float64 and torch.equal(lin, torch.tensor([0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    assert sig[0] == 0 and sig[-1] == 1 and len(sig) == 51 and (sig[1:] > sig[:-1]).all()
    # sigmoidal: smaller steps at the ends than in the middle
    assert sig[1] - sig[0] < sig[26] - sig[25]
    assert torch.equal(make_schedule("linear", 4), lin)
    assert torch.equal(make_schedule(lambda t: torch.linspace(0, 1, t + 1), 4), lin)
    assert torch.equal(check_betas([1.0, 0.5, 0.0]), torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64))


def test_one_step_is_importance_sampling_exactly():
    torch.manual_seed(0)
    z0 = torch.randn(7, 3, 2)
    res = anneal(z0, _log_init, _log_target, linear_schedule(1))
    assert res.num_transitions == 0 and res.num_gradients == 1
    assert torch.equal(res.log_weights, (_log_target(z0).double() - _log_init(z0).double()))
    assert torch.equal(res.z, z0)


def _sandwich(num_steps, chains=400):
    fwd = anneal(torch.randn(chains, 2), _log_init, _log_target, sigmoid_schedule(num_steps), step_size=0.2)
    zt = MEAN + SCALE * torch.randn(chains, 2)  # exact draws from the normalized target
    rev = anneal(zt, _log_init, _log_target, sigmoid_schedule(num_steps).flip(0), step_size=0.2)
    return fwd, float(fwd.log_weights.mean()), float(-rev.log_weights.mean())


def test_forward_ais_recovers_the_normalizer_and_reverse_bounds_it():
    torch.manual_seed(1)
    fwd, lower, upper = _sandwich(200)
    lw = fwd.log_weights
    ess = float(1 / torch.exp(2 * (lw - torch.logsumexp(lw, 0))).sum())
    se = math.sqrt((400 / ess - 1) / 400)  # delta-method MC error of the log-mean-exp (~0.03 here)
    # 3 SE: seeds 0-2 measured errors of -1.3, 1.0 and 0.6 SE
    assert abs(float(fwd.log_mean_exp()) - LOG_C) < 3 * se
    assert 0.4 < float(fwd.accept_rate) < 0.95  # adapted toward 0.65 (Wu et al.'s +-2% rule)
    # E[log w] <= log Z_1 <= -E[log w_reverse] (Grosse et al. 2015); the means over 400 chains have
    # MC error ~0.03, far below the measured margins (0.15 and 0.2 nats at T = 200)
    assert lower <= LOG_C <= upper
    _, lower20, upper20 = _sandwich(20)
    # the gap closes with T: measured 2.3 nats at T = 20 and 0.4 at T = 200 (seeds 0-2)
    assert upper20 - lower20 > 1.0 > upper - lower


def test_step_size_adapts_per_group():
    # two groups of 50 chains with targets of scale 0.05 and 2.0: the group step sizes must separate
    torch.manual_seed(2)
    scale = torch.tensor([0.05, 2.0]).reshape(1, 2, 1)

    def target(z):
        return torch.distributions.Normal(0.0, scale).log_prob(z).sum(-1)

    def init(z):
        return torch.distributions.Normal(0.0, scale).log_prob(z).sum(-1)

    z0 = scale * torch.randn(50, 2, 3)
    res = anneal(z0, init, target, linear_schedule(150), step_size=torch.full((1, 2), 0.1), num_leapfrog=3)
    assert res.step_size.shape == (1, 2) and res.accept_rate.shape == (1, 2)
    # a 40x wider target needs a far larger step for the same acceptance: at least 5x after 149 updates
    assert res.step_size[0, 1] > 5 * res.step_size[0, 0]
    # identical init and target: exact weights, every one 0
    assert torch.allclose(res.log_weights, torch.zeros(50, 2, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(betas=[0.0]), "betas: expected a 1-d sequence of at least 2"),
    (dict(betas=[0.0, 0.5]), "betas: expected betas from 0 to 1"),
    (dict(betas=[0.0, 0.7, 0.3, 1.0]), "betas: expected monotone"),
    (dict(betas=[0.0, 1.5, 1.0]), r"betas: expected betas in \[0, 1\]"),
    (dict(step_size=-1.0), "step_size: expected positive"),
    (dict(step_size=torch.ones(3)), "step_size: expected a float or a tensor broadcastable"),
    (dict(num_leapfrog=0), "num_leapfrog: expected an integer >= 1"),
    (dict(target_accept=1.0), "target_accept"),
])
def test_bad_arguments(kwargs, match):
    args = dict(betas=linear_schedule(3))
    args.update(kwargs)
    betas = args.pop("betas")
    with pytest.raises(PPVAEError, match=match):
        anneal(torch.zeros(4, 2), _log_init, _log_target, betas, **args)


def test_bad_schedules():
    with pytest.raises(PPVAEError, match="num_steps: expected an integer >= 1"):
        linear_schedule(0)
    with pytest.raises(PPVAEError, match="schedule: expected one of sigmoid, linear"):
        make_schedule("cosine", 3)
    with pytest.raises(PPVAEError, match="schedule: expected 4 betas"):
        make_schedule([0.0, 1.0], 3)


# -- per-point AIS in log_marginal --------------------------------------------------------------------
class FactorAnalysis(ppvae.Model):
    """z_i ~ N(0, I_q), x_i ~ N(W z_i + mu, diag(psi)): log p(x_i) = log N(x_i; mu, W W^T + diag(psi))."""

    def __init__(self, W, mu, psi):
        super().__init__()
        self.register_buffer("W", W)
        self.register_buffer("mu", mu)
        self.register_buffer("psi", psi)

    def forward(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(batch.x.new_zeros(self.W.shape[1]), 1.0).to_event(1))
            pyro.sample("obs", dist.Normal(z @ self.W.T + self.mu, self.psi.sqrt()).to_event(1), obs=batch.x)

    def exact(self, x):
        W = self.W.double()
        cov = W @ W.T + torch.diag(self.psi.double())
        return dist.MultivariateNormal(self.mu.double(), covariance_matrix=cov).log_prob(x.double())

    def posterior(self, x):
        """p(z_i | x_i) = N(S W^T Psi^-1 (x_i - mu), S), S = (I + W^T Psi^-1 W)^-1: means (N, q), S."""
        Wp = self.W / self.psi[:, None]
        S = torch.linalg.inv(torch.eye(self.W.shape[1]) + self.W.T @ Wp)
        return (x - self.mu) @ Wp @ S, S


class StudentT(ppvae.Model):
    """s_i ~ Gamma(nu/2, nu/2), x_i ~ N(0, 1/s_i): x_i ~ Student-t(nu) (a positive local latent, so the
    annealing runs on log s_i with its Jacobian)."""

    def __init__(self, nu: float = 3.0):
        super().__init__()
        self.nu = nu

    def forward(self, batch):
        half = batch.x.new_tensor(self.nu / 2)
        with self.data_plate(batch):
            s = pyro.sample("s", dist.Gamma(half, half))
            pyro.sample("obs", dist.Normal(0.0, s.rsqrt()), obs=batch.x[:, 0])


def _fa(psi_range=(0.1, 0.4), n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    D, q = 6, 2
    W, mu = 1.5 * torch.randn(D, q, generator=g), torch.randn(D, generator=g)
    psi = torch.linspace(*psi_range, D)
    x = torch.randn(n, q, generator=g) @ W.T + mu + psi.sqrt() * torch.randn(n, D, generator=g)
    return FactorAnalysis(W, mu, psi), x


def _within(result, exact, k=3.0):
    """The mean over points of log p-hat - log p is within k Monte Carlo standard errors of 0."""
    err = float((result.values - exact).mean())
    assert abs(err) < k * result.mc_stderr_mean, (err, result.mc_stderr_mean)


def _ais(fit, x, **kw):
    return ppvae.log_marginal(fit, x, method="ais", warn=False, **kw)


@pytest.fixture(scope="module")
def ppca_fit():
    """PPCA with known parameters (fixed) and an AutoNormal guide fitted on z (as in test_evaluate)."""
    from ppvae.models import PPCA

    g = torch.Generator().manual_seed(0)
    W = torch.linalg.qr(torch.randn(5, 2, generator=g))[0] * torch.tensor([2.0, 1.0])
    mu = torch.randn(5, generator=g)
    x = torch.randn(30, 2, generator=g) @ W.T + mu + 0.5 * torch.randn(30, 5, generator=g)
    model = PPCA(2)
    ds = ppvae.Dataset(x)
    model.setup(ds)
    model.set_parameters(W, mu, 0.5, fixed=True)
    fit = ppvae.fit(model, ds, guide="auto_normal", steps=150, lr=0.1, lr_schedule="cosine", progress=False, seed=0)
    return fit, ds, model.log_marginal_exact(x)


@pytest.mark.parametrize("proposal", ["guide", "prior"])
def test_one_step_and_C_chains_is_importance_sampling_with_K_C(ppca_fit, proposal):
    """T = 1: no transition, so each chain's weight is the importance weight of the same draw (same
    seed, same chunks); only float32 rounding of log p - log q differs (|log w| ~ 10, ulp ~ 1e-6)."""
    fit, ds, _ = ppca_fit
    is_ = ppvae.log_marginal(fit, ds, num_particles=40, proposal=proposal, seed=5, chunk_size=30, warn=False)
    ais = _ais(fit, ds, num_steps=1, num_chains=40, proposal=proposal, seed=5, chunk_size=30)
    for key in ("values", "elbo", "ess", "mc_stderr"):
        torch.testing.assert_close(getattr(ais, key), getattr(is_, key), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ais.khat, is_.khat, rtol=1e-3, atol=1e-3, equal_nan=True)
    assert ais.method == "ais" and torch.isnan(ais.accept_rate).all() and ais.num_particles == 40


def test_fitted_autoguide_proposal_matches_the_closed_form(ppca_fit):
    """AutoNormal proposal (annealed on its own unconstrained site), T = 30, C = 32: the mean error
    over 30 points is within 3 Monte Carlo standard errors (measured -0.3 SE; seed 1: -1.8 SE)."""
    fit, ds, exact = ppca_fit
    params = list(fit.guide.parameters())
    flags = [p.requires_grad for p in params]
    grads = [None if p.grad is None else p.grad.clone() for p in params]  # left by training
    res = _ais(fit, ds, num_steps=30, num_chains=32, seed=0)
    _within(res, exact)
    # the networks were frozen during the run: no gradient reached them, and their flags are restored
    assert [p.requires_grad for p in params] == flags
    assert all((p.grad is None) if g is None else torch.equal(p.grad, g) for p, g in zip(params, grads, strict=True))
    assert 0.4 < float(res.accept_rate.mean()) < 0.9 and res.settings["num_steps"] == 30
    assert res.to_dict()["method"] == "ais" and res.to_dict()["settings"]["num_chains"] == 32


def test_user_guide_proposal_matches_the_closed_form():
    """A user's guide callable (the exact posterior shifted by 0.5 sd and twice as wide), T = 30,
    C = 32, factor analysis: within 3 SE of the closed form (measured 0.4 SE; seed 1: -1.3 SE)."""
    model, x = _fa()
    means, S = model.posterior(x)
    sd = S.diagonal().sqrt()

    def guide(batch):
        with pyro.plate("data", len(batch)):
            pyro.sample("z", dist.Normal(means[batch.index] + 0.5 * sd, 2 * sd).to_event(1))

    res = _ais((model, None), x, num_steps=30, num_chains=32, proposal=guide, seed=0)
    _within(res, model.exact(x))


@pytest.mark.slow
def test_prior_proposal_where_importance_sampling_fails():
    """Factor analysis with the prior as proposal: IS at the same number of model evaluations,
    K = C (1 + (T - 1) L) = 15,872, has k-hat > 0.7 at some points (measured 4 of 20); AIS (T = 100,
    C = 32, L = 5) is within 3 SE of the closed form (measured 0.8 SE; seed 1: 0.7 SE)."""
    model, x = _fa()
    exact = model.exact(x)
    res = _ais((model, None), x, num_steps=100, num_chains=32, proposal="prior", step_size=0.3, seed=0)
    _within(res, exact)
    is_ = ppvae.log_marginal((model, None), x, num_particles=32 * (1 + 99 * 5), proposal="prior", seed=0, warn=False)
    assert is_.num_khat_over_0_7 > 0


def test_positive_local_latent_anneals_on_the_log_scale():
    """Student-t(3) as a Gamma scale mixture of normals, prior proposal, T = 50, C = 32: within 3 SE
    of the t log-density (the Jacobian of s = exp(u) enters both ends; measured -0.7 SE; seed 1: -0.6 SE)."""
    x = torch.linspace(-6, 6, 25).unsqueeze(-1)
    res = _ais((StudentT(3.0), None), x, num_steps=50, num_chains=32, proposal="prior", seed=0)
    exact = torch.distributions.StudentT(3.0).log_prob(x[:, 0].double())
    _within(res, exact)


def test_all_discrete_locals_equal_enumeration(faithful):
    """GMM: no continuous local to anneal; every chain's weight is the enumerated log p(x_i | G)."""
    from ppvae.models import GMM

    data = ppvae.load_dataset("faithful", standardize=True)
    fit = ppvae.fit(GMM(K=2, covariance="diag"), data, steps=5, progress=False, seed=0)
    res = _ais(fit, data, num_steps=10, num_chains=8)
    torch.testing.assert_close(res.values, fit.log_likelihood(data).double(), rtol=0, atol=1e-12)
    assert torch.all(res.ess == 8) and torch.all(res.khat == -math.inf)


def test_bad_input_for_ais(ppca_fit):
    fit, ds, _ = ppca_fit
    with pytest.raises(PPVAEError, match="num_steps: expected an integer >= 1; got 0"):
        _ais(fit, ds, num_steps=0)
    with pytest.raises(PPVAEError, match="num_chains: expected an integer >= 1; got 0"):
        _ais(fit, ds, num_chains=0)
    with pytest.raises(PPVAEError, match="method: expected one of is, ais"):
        ppvae.log_marginal(fit, ds, method="annealed")
    with pytest.raises(PPVAEError, match="schedule: expected one of sigmoid, linear"):
        _ais(fit, ds, num_steps=3, schedule="cosine")

    def wrong_site(batch):
        with pyro.plate("data", len(batch)):
            pyro.sample("w", dist.Normal(torch.zeros(len(batch), 2), 1.0).to_event(1))

    with pytest.raises(PPVAEError, match="proposal: the guide samples site"):
        _ais((fit.model, None), ds, num_steps=3, num_chains=2, proposal=wrong_site)

    def nothing(batch):
        pass

    with pytest.raises(PPVAEError, match="proposal: the guide does not sample the model's local latent site"):
        _ais((fit.model, None), ds, num_steps=3, num_chains=2, proposal=nothing)


def test_model_without_local_latents_is_refused():
    from ppvae.models import NormalGamma

    data = ppvae.Dataset(torch.randn(10, 1))
    with pytest.raises(PPVAEError, match="method: per-point AIS anneals the local latents"):
        _ais((NormalGamma(), None), data, num_steps=3, num_chains=2, proposal="prior",
             global_values={"mu": torch.tensor(0.0), "tau": torch.tensor(1.0)})


def test_discrete_locals_summed_in_both_ends_of_the_path():
    """y_i discrete and z_i | y_i continuous (test_evaluate's mixture): with the exact posterior as
    proposal (it samples y, so q(z | x) = sum_y q(y | x) q(z | x, y) is re-traced and summed at every
    state) every intermediate density is p(z | x), each weight is p(x) exactly (float32: 1e-5); the
    prior proposal, q(z) = sum_y pi_y N(z | m_y, 1), T = 50, C = 32, is within 3 SE."""
    from test_evaluate import _HierarchicalMixture

    model = _HierarchicalMixture()
    x = torch.tensor([[-2.5], [-0.3], [0.8], [2.2], [4.0]])
    exact = model.exact(x)
    post = _ais((model, None), x, num_steps=5, num_chains=8, proposal=model.exact_guide)
    torch.testing.assert_close(post.values, exact, rtol=0, atol=1e-5)
    prior = _ais((model, None), x, num_steps=50, num_chains=32, proposal="prior", seed=0)
    _within(prior, exact)


def test_autonormal_on_a_positive_latent_anneals_on_its_own_unconstrained_site():
    """AutoNormal proposes s through its auxiliary site s_unconstrained (log s); AIS uses that density on
    u = log s directly. T = 1 equals IS with K = C (to float32 rounding, measured 1e-7), and T = 50,
    C = 32 is within 3 SE of the Student-t log-density (measured -0.2 SE; seed 1: 0.7 SE)."""
    x = torch.linspace(-6, 6, 25).unsqueeze(-1)
    fit = ppvae.fit(StudentT(3.0), ppvae.Dataset(x), guide="auto_normal", steps=300, lr=0.05, progress=False, seed=0)
    is_ = ppvae.log_marginal(fit, x, num_particles=40, seed=1, chunk_size=25, warn=False)
    one = _ais(fit, x, num_steps=1, num_chains=40, seed=1, chunk_size=25)
    torch.testing.assert_close(one.values, is_.values, rtol=0, atol=1e-5)
    res = _ais(fit, x, num_steps=50, num_chains=32, seed=0)
    _within(res, torch.distributions.StudentT(3.0).log_prob(x[:, 0].double()))
