"""The evaluation layer against exact answers: PPCA's closed-form log p(x) and posterior, the GMM's and
three-coin model's enumerated likelihood; the iwae objective; bad input, out-of-memory retry, the CLI."""

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
import ppvae.evaluate.marginal as evaluate
from ppvae.cli.app import main
from ppvae.infer.svi.objectives import make_elbo
from ppvae.models import GMM, PPCA, ThreeCoin
from ppvae.models.gmm import gmm_log_likelihood

N, D, Q, SIGMA = 30, 5, 2, 0.5


@pytest.fixture(scope="module")
def ppca():
    """PPCA with known parameters (W with orthogonal columns, so the exact posterior covariance is
    diagonal and a mean-field guide can match it), fixed during fitting; AutoNormal fitted on z."""
    g = torch.Generator().manual_seed(0)
    W = torch.linalg.qr(torch.randn(D, Q, generator=g))[0] * torch.tensor([2.0, 1.0])
    mu = torch.randn(D, generator=g)
    x = torch.randn(N, Q, generator=g) @ W.T + mu + SIGMA * torch.randn(N, D, generator=g)
    model = PPCA(Q)
    ds = ppvae.Dataset(x)
    model.setup(ds)
    model.set_parameters(W, mu, SIGMA, fixed=True)
    fit = ppvae.fit(model, ds, guide="auto_normal", steps=150, lr=0.1, lr_schedule="cosine", progress=False, seed=0)
    return fit, ds, model.log_marginal_exact(x)


@pytest.fixture(scope="module")
def discrete_fits():
    """Short fits of the GMM (Old Faithful) and the three-coin model: exactness holds at any parameters."""
    faithful = ppvae.load_dataset("faithful", standardize=True)
    gmm = ppvae.fit(GMM(K=2, covariance="diag"), faithful, steps=5, progress=False, seed=0)
    coins = ppvae.Dataset(torch.tensor([1.0, 1, 0, 1, 0, 0, 1, 0, 1, 1]).unsqueeze(-1), kind="binary")
    three = ppvae.fit(ThreeCoin(), coins, steps=5, progress=False, seed=0)
    return (gmm, faithful), (three, coins)


def _analytic_elbo(fit, x):
    """Per-point ELBO of AutoNormal q(z_i) = N(m_i, diag s_i^2) for PPCA, in closed form:
    log N(x | W m + mu, sigma^2 I) - tr(W S W^T) / (2 sigma^2) - KL(q || N(0, I))."""
    model, guide = fit.model, fit.guide
    m, s = guide.locs.z.detach().double(), guide.scales.z.detach().double()
    W, mu, s2 = model.W.double(), model.mu.double(), model.sigma.double() ** 2
    lik = dist.Normal(m @ W.T + mu, s2.sqrt()).log_prob(x.double()).sum(-1) - (s**2 @ (W**2).T).sum(-1) / (2 * s2)
    kl = torch.distributions.kl_divergence(dist.Normal(m, s), dist.Normal(0.0, 1.0)).sum(-1)
    return (lik - kl).detach()


def test_fitted_guide_estimate_within_three_stderr(ppca):
    """K = 1,000: the mean over points of log p-hat(x_i) - log p(x_i) is within 3 Monte Carlo standard
    errors of 0, and the sum never exceeds the exact total by more than 3 standard errors."""
    fit, ds, exact = ppca
    lm = ppvae.log_marginal(fit, ds, num_particles=1000, seed=0)
    diff = lm.values - exact
    assert abs(float(diff.mean())) < 3 * lm.mc_stderr_mean
    assert float(diff.sum()) < 3 * float(lm.mc_stderr.pow(2).sum().sqrt())
    assert lm.num_khat_over_0_7 == 0 and lm.ess.min() > 200
    assert 0 < lm.gap_mean < 0.5  # the KL(q || p(z | x)) the guide leaves
    assert lm.total == pytest.approx(float(lm.values.sum())) and lm.stderr > 0


def test_estimate_increases_with_K_and_K1_is_the_elbo(ppca):
    """Means for K = 1, 10, 100, 1000 increase towards the exact value (Burda et al. 2015, thm 1; shown
    with the prior as proposal, whose gap is large: the fitted guide's is within noise already at K=1);
    K = 1 is the ELBO draw for draw, and with the fitted guide its mean over points matches the
    closed-form ELBO within 3 standard errors."""
    fit, ds, exact = ppca
    with pytest.warns(evaluate.ImportanceWarning):
        runs = [ppvae.log_marginal(fit, ds, num_particles=k, proposal="prior", seed=1) for k in (1, 10, 100, 1000)]
    means = [r.mean for r in runs]
    assert all(a < b for a, b in zip(means[:-1], means[1:], strict=True))
    assert means[-1] < float(exact.mean()) + 3 * runs[-1].mc_stderr_mean
    one = ppvae.log_marginal(fit, ds, num_particles=1, seed=2)
    torch.testing.assert_close(one.values, one.elbo)
    analytic = _analytic_elbo(fit, ds.x)
    diff = one.values - analytic
    assert abs(float(diff.mean())) < 3 * float(diff.std()) / math.sqrt(N)


def test_exact_posterior_proposal_has_zero_variance(ppca):
    """With p(z | x) as proposal every weight equals p(x): the estimate is exact for any K and every
    weight is equal to float precision (float32 here, float64 below)."""
    fit, ds, exact = ppca
    lm = ppvae.log_marginal((fit.model, None), ds, num_particles=50, proposal=fit.model.posterior_guide())
    torch.testing.assert_close(lm.values, exact, rtol=0, atol=2e-5)
    assert torch.all(lm.ess > 50 - 1e-3) and torch.all(lm.khat == -math.inf)
    model64 = PPCA(Q).set_parameters(fit.model.W.detach().double(), fit.model.mu.detach().double(), SIGMA)
    lm64 = ppvae.log_marginal((model64, None), ds, num_particles=50, proposal=model64.posterior_guide())
    torch.testing.assert_close(lm64.values, model64.log_marginal_exact(ds.x), rtol=0, atol=1e-12)
    assert torch.all(lm64.ess > 50 - 1e-9)


def test_prior_proposal_spreads_more_than_the_fitted_guide(ppca):
    """The prior as proposal: Monte Carlo standard errors 10x larger, ESS 5x smaller, k-hat over 0.7
    at some points (with the warning), a much lower ELBO; its sum still does not exceed the exact one."""
    fit, ds, exact = ppca
    guide = ppvae.log_marginal(fit, ds, num_particles=1000, seed=3)
    with pytest.warns(evaluate.ImportanceWarning, match=r"k-hat > 0.7 for \d+ of 30 points"):
        prior = ppvae.log_marginal(fit, ds, num_particles=1000, proposal="prior", seed=3)
    assert prior.mc_stderr.mean() > 10 * guide.mc_stderr.mean()
    # the prior's weights p(x | z) are bounded (light right tail, k-hat < 0 for many points), but where
    # the likelihood is peaked relative to the prior the tail is heavy: k-hat > 0.7
    assert prior.khat.max() > 0.7 > guide.khat.max() and prior.num_khat_over_0_7 > 0 == guide.num_khat_over_0_7
    assert prior.ess.mean() < guide.ess.mean() / 5
    assert prior.elbo_mean < guide.elbo_mean - 5
    assert float((prior.values - exact).sum()) < 3 * float(prior.mc_stderr.pow(2).sum().sqrt())


@pytest.mark.parametrize("K", [1, 7, 1000])
def test_discrete_locals_equal_the_enumerated_likelihood(K, discrete_fits):
    """GMM and three-coin: the only local latents are discrete, summed exactly in each weight, so the
    estimate equals Fit.log_likelihood (and gmm_log_likelihood) to float precision for any K."""
    (fit, faithful), (fit3, coins) = discrete_fits
    lm = ppvae.log_marginal(fit, faithful, num_particles=K)
    torch.testing.assert_close(lm.values, fit.log_likelihood(faithful).double(), rtol=0, atol=1e-12)
    g = fit.global_values(faithful)
    exact = gmm_log_likelihood(faithful.x, g["weights"], g["locs"], torch.diag_embed(g["scales"]))
    torch.testing.assert_close(lm.values, exact.double(), rtol=0, atol=1e-5)
    assert torch.all(lm.ess == K)
    lm3 = ppvae.log_marginal(fit3, coins, num_particles=K)
    torch.testing.assert_close(lm3.values, fit3.log_likelihood(coins).double(), rtol=0, atol=1e-12)


# -- the iwae objective -------------------------------------------------------------------------------
def _losses(elbo, fit, ds, reps, seed=0):
    pyro.set_rng_seed(seed)
    with torch.no_grad(), pyro.validation_enabled(False):
        return torch.tensor([float(elbo.differentiable_loss(fit.model, fit.guide, ds.batch())) for _ in range(reps)])


def test_iwae_bound_is_above_the_elbo_and_K1_is_trace_elbo(ppca):
    """At the same parameters: mean IWAE(K=1) loss = mean Trace_ELBO loss = -closed-form ELBO (each
    within 4 standard errors over 300 draws) and IWAE(K=50) is above the ELBO by more than noise."""
    fit, ds, _ = ppca
    elbo = float(_analytic_elbo(fit, ds.x).sum())
    _, iwae1 = make_elbo("iwae", has_discrete=False, max_plate_nesting=1, num_particles=1)
    _, trace = make_elbo("trace", has_discrete=False, max_plate_nesting=1)
    for objective in (iwae1, trace):
        losses = _losses(objective, fit, ds, 300)
        assert abs(float(losses.mean()) + elbo) < 4 * float(losses.std()) / math.sqrt(300)
    _, iwae50 = make_elbo("iwae", has_discrete=False, max_plate_nesting=1, num_particles=50)
    losses = _losses(iwae50, fit, ds, 20)
    assert -float(losses.mean()) > elbo + 4 * float(losses.std()) / math.sqrt(20)


def test_iwae_trains_and_sums_enumerated_latents_exactly(discrete_fits):
    """GMM (discrete locals only): IWAE loss = TraceEnum_ELBO loss for the same draw of the globals,
    for any K. PPCA: training with iwae lowers the loss."""
    (fit, faithful), _ = discrete_fits
    _, iwae = make_elbo("iwae", has_discrete=True, max_plate_nesting=1, num_particles=5)
    _, enum = make_elbo("enum", has_discrete=True, max_plate_nesting=1)
    model = fit.model.enumerated()
    for seed in range(2):
        with pyro.validation_enabled(False):
            pyro.set_rng_seed(seed)
            a = iwae.differentiable_loss(model, fit.guide, faithful.batch()).item()
            pyro.set_rng_seed(seed)
            b = enum.differentiable_loss(model, fit.guide, faithful.batch()).item()
        assert a == pytest.approx(b, rel=1e-5)
    mix = torch.tensor([[2.0, 0, 1], [0, 1, 1], [0, 0, 0.3]])
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) @ mix
    trained = ppvae.fit(PPCA(2), ppvae.Dataset(x), guide="auto_normal", elbo="iwae", num_particles=5, steps=60, lr=0.05,
                        progress=False, seed=0)
    assert trained.elbo_name == "iwae"
    loss = trained.history["loss"]
    assert sum(loss[-20:]) / 20 < sum(loss[:20]) / 20 - 10


# -- bad input, memory, CLI -----------------------------------------------------------------------------
def test_bad_input_names_the_problem(ppca):
    fit, ds, _ = ppca
    with pytest.raises(ppvae.PPVAEError, match="num_particles: expected an integer >= 1; got 0"):
        ppvae.log_marginal(fit, ds, num_particles=0)
    with pytest.raises(ppvae.PPVAEError, match=r"data: the model was fitted on points of shape \(5,\); got .*\(4,\)"):
        ppvae.log_marginal(fit, torch.zeros(N, 4))
    with pytest.raises(ppvae.PPVAEError, match="expected real numbers"):
        ppvae.log_marginal(fit, torch.zeros(N, D, dtype=torch.bool))
    with pytest.raises(ppvae.PPVAEError, match="proposal: expected guide, prior"):
        ppvae.log_marginal(fit, ds, proposal="posterior")
    with pytest.raises(ppvae.PPVAEError, match="fit_or_model_guide"):
        ppvae.log_marginal("run", ds)

    def wrong_site(batch):
        with fit.model.data_plate(batch):
            pyro.sample("u", dist.Normal(torch.zeros(len(batch), Q), 1.0).to_event(1))

    with pytest.raises(ppvae.PPVAEError, match="guide samples site.* u that the model does not have"):
        ppvae.log_marginal(fit, ds, num_particles=5, proposal=wrong_site)
    with pytest.raises(ppvae.PPVAEError, match="does not sample the model's local latent site.* z"):
        ppvae.log_marginal(fit, ds, num_particles=5, proposal=lambda batch: None)
    delta = ppvae.make_guide("auto_delta", fit.model)
    delta(ds.batch())
    with pytest.raises(ppvae.PPVAEError, match=r"point mass \(Delta\) at z"):
        ppvae.log_marginal((fit.model, delta), ds, num_particles=5)
    mvn = ppvae.make_guide("auto_mvn", fit.model)
    mvn(ds.batch())
    with pytest.raises(ppvae.PPVAEError, match="does not factor over data points"):
        ppvae.log_marginal((fit.model, mvn), ds, num_particles=5)


class _PoissonGamma(ppvae.Model):
    """rate_i ~ Gamma(2, 1), x_i ~ Poisson(rate_i): a local latent with positive support."""

    def forward(self, batch):
        with self.data_plate(batch):
            rate = pyro.sample("rate", dist.Gamma(batch.x.new_tensor(2.0), 1.0))
            pyro.sample("obs", dist.Poisson(rate), obs=batch.x[:, 0])


def test_proposal_outside_the_support_is_reported():
    """A Normal proposal for a Gamma-distributed rate draws negative rates: the model's log-density is
    NaN there; the error names the site."""
    model, ds = _PoissonGamma(), ppvae.Dataset(torch.tensor([[1.0], [3.0], [0.0]]))

    def normal_guide(batch):
        with model.data_plate(batch):
            pyro.sample("rate", dist.Normal(batch.x.new_zeros(len(batch)), 1.0))

    with pytest.raises(ppvae.PPVAEError, match=r"NaN or \+inf for 3 of 3 points .*rate \(model\)"):
        ppvae.log_marginal((model, None), ds, num_particles=100, proposal=normal_guide)
    # the prior proposal is fine, and matches the closed form (negative binomial) within 3 stderr
    lm = ppvae.log_marginal((model, None), ds, num_particles=4000, proposal="prior", seed=0)
    nb = dist.NegativeBinomial(total_count=2.0, probs=torch.tensor(0.5)).log_prob(ds.x[:, 0]).double()
    assert torch.all((lm.values - nb).abs() < 3 * lm.mc_stderr)


def test_out_of_memory_halves_the_chunk(ppca, monkeypatch):
    """A chunk larger than 4 points raises an OOM error: the evaluation retries with half the chunk,
    gives the same numbers as chunk_size=4, and reports clearly when even one point does not fit."""
    fit, ds, _ = ppca
    real = evaluate.local_log_weights

    def limited(model, proposal, batch, *args, **kwargs):
        if len(batch) > 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(model, proposal, batch, *args, **kwargs)

    monkeypatch.setattr(evaluate, "local_log_weights", limited)
    with pytest.warns(ResourceWarning, match="retrying with chunk_size=8"):
        lm = ppvae.log_marginal(fit, ds, num_particles=20, chunk_size=16, seed=5)
    assert lm.chunk_size == 4
    ref = ppvae.log_marginal(fit, ds, num_particles=20, chunk_size=4, seed=5)
    torch.testing.assert_close(lm.values, ref.values, rtol=0, atol=0)

    def never(*args, **kwargs):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes; out of memory")

    monkeypatch.setattr(evaluate, "local_log_weights", never)
    with pytest.raises(ppvae.PPVAEError, match="chunk_size: out of memory evaluating even 1 data point"):
        with pytest.warns(ResourceWarning):
            ppvae.log_marginal(fit, ds, num_particles=20, chunk_size=2)


def test_chunk_size_from_available_memory(ppca, monkeypatch):
    fit, ds, exact = ppca
    monkeypatch.setattr("ppvae.infer.importance.available_bytes", lambda device: 5000)  # bytes: one point's particles
    lm = ppvae.log_marginal(fit, ds, num_particles=200)
    assert lm.chunk_size == 1
    assert abs(float((lm.values - exact).mean())) < 3 * lm.mc_stderr_mean


def test_cli_evaluate_adds_log_marginal_to_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["fit", "gmm", "K=2", "covariance=diag", "--data", "faithful", "--standardize", "--steps", "5",
                 "--out", str(run), "--quiet"]) == 0
    before = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--num-particles", "30", "--seed", "1"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    entry = metrics["log_marginal"]
    for key in ("mean", "stderr", "total", "num_particles", "ess_mean", "khat_max", "num_khat_over_0_7", "elbo_mean"):
        assert key in entry
    assert entry["num_particles"] == 30 and entry["num_khat_over_0_7"] == 0
    assert entry["total"] == pytest.approx(before["log_likelihood"], rel=1e-6)  # exact: discrete locals only
    assert all(metrics[k] == v for k, v in before.items())
    assert (run / "log_marginal.png").stat().st_size > 1000
    assert "log p(x): mean" in capsys.readouterr().out
    assert main(["evaluate", str(run), "--num-particles", "0"]) == 2
    assert "--num-particles" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "missing")]) == 2


class _HierarchicalMixture(ppvae.Model):
    """y_i ~ Cat(pi), z_i | y_i ~ N(m_y, 1), x_i | z_i ~ N(z_i, s^2): a discrete and a continuous local
    latent, p(x_i) = sum_y pi_y N(x_i | m_y, 1 + s^2) in closed form."""

    pi, m, s = torch.tensor([0.3, 0.7]), torch.tensor([-2.0, 1.5]), 0.5

    def forward(self, batch):
        with self.data_plate(batch):
            y = pyro.sample("y", dist.Categorical(self.pi))
            z = pyro.sample("z", dist.Normal(self.m[y], 1.0))
            pyro.sample("obs", dist.Normal(z, self.s), obs=batch.x[:, 0])

    def exact(self, x):
        comp = dist.Normal(self.m, math.sqrt(1 + self.s**2)).log_prob(x.reshape(-1, 1))
        return torch.logsumexp(self.pi.log() + comp, -1).double()

    def exact_guide(self, batch):
        """q(y | x) q(z | x, y) = p(y | x) p(z | x, y): y sampled by the guide, z depending on it."""
        x = batch.x[:, 0].unsqueeze(-1)
        post_y = self.pi.log() + dist.Normal(self.m, math.sqrt(1 + self.s**2)).log_prob(x)
        prec = 1 + 1 / self.s**2
        with self.data_plate(batch):
            y = pyro.sample("y", dist.Categorical(logits=post_y))
            pyro.sample("z", dist.Normal((self.m[y] + x[:, 0] / self.s**2) / prec, prec**-0.5))


def test_discrete_and_continuous_locals_are_summed_in_model_and_proposal():
    """The model's y is enumerated; a proposal that samples y and then z | y has its y summed too, so
    q(z | x) = sum_y q(y | x) q(z | x, y). With the exact posterior every weight equals p(x) (zero
    variance); the prior proposal q(z) = sum_y pi_y N(z | m_y, 1) is within 3 stderr per point."""
    model = _HierarchicalMixture()
    x = torch.tensor([[-2.5], [-0.3], [0.8], [2.2], [4.0]])
    exact = model.exact(x)
    lm = ppvae.log_marginal((model, None), x, num_particles=100, proposal=model.exact_guide)
    torch.testing.assert_close(lm.values, exact, rtol=0, atol=1e-5)
    assert torch.all(lm.ess > 100 - 1e-2)
    prior = ppvae.log_marginal((model, None), x, num_particles=4000, proposal="prior", seed=0)
    assert torch.all((prior.values - exact).abs() < 3 * prior.mc_stderr)
