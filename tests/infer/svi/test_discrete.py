"""The objectives for discrete guide sites (ppvae.infer.discrete_elbos) against exact answers on a discrete-code VAE
small enough to enumerate: 2 codes of 3 categories (9 joint codes), a 6-pixel decoder, fixed parameters. The exact
ELBO, its gradient and log p(x) are computed here by summing the 9 codes by hand."""

import itertools
import math

import pyro
import pytest
import torch
from torch import nn
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

import ppvae
from ppvae.infer.svi import make_elbo
from ppvae.models import DiscreteVAE

C, K, D = 2, 3, 6


@pytest.fixture(scope="module")
def small():
    g = torch.Generator().manual_seed(0)
    data = ppvae.Dataset((torch.rand(5, D, generator=g) < 0.4).float(), name="toy", kind="binary")
    torch.manual_seed(1)
    model = DiscreteVAE(num_codes=C, code_size=K, hidden=8, depth=1)
    model.setup(data)
    with torch.no_grad():  # larger weights than the default init, so that q and p(x | z) vary with the code
        for p in model.parameters():
            p.mul_(3.0)
    return model, data.batch()


def _exact(model, x):
    """Per-point (ELBO, log p(x)) by summing the K^C codes: ELBO = sum_z q(z|x) [log p(x|z) + log p(z) - log q(z|x)],
    log p(x) = logsumexp_z [log p(x|z) + log p(z)], with p(z) uniform."""
    log_q_codes = model.encode(x).log_softmax(-1)  # (M, C, K)
    terms_elbo, terms_px = [], []
    for combo in itertools.product(range(K), repeat=C):
        onehot = nn.functional.one_hot(torch.tensor(combo), K).float().flatten()
        log_lik = model.likelihood_dist(onehot.expand(len(x), -1)).log_prob(x)
        log_q = sum(log_q_codes[:, j, k] for j, k in enumerate(combo))
        log_joint = log_lik - C * math.log(K)
        terms_elbo.append(log_q.exp() * (log_joint - log_q))
        terms_px.append(log_joint)
    return torch.stack(terms_elbo).sum(0), torch.stack(terms_px).logsumexp(0)


def _objective(name, num_particles=1, **options):
    return make_elbo(name, has_discrete=True, max_plate_nesting=1, num_particles=num_particles, **options)[1]


def test_enum_is_the_exact_elbo(small):
    """TraceEnum_ELBO over the guide's enumerated codes equals the hand-summed ELBO to float rounding."""
    model, batch = small
    loss = _objective("enum").differentiable_loss(model.enumerated(), model.guide, batch)
    elbo, _ = _exact(model, batch.x)
    torch.testing.assert_close(-loss, elbo.sum(), rtol=1e-5, atol=1e-5)


def _relaxed_value(model, batch, name, temperature, repeats=20, particles=500):
    """Mean and standard error over ``repeats`` independent estimates, each averaging ``particles`` draws."""
    objective = _objective(name, particles, temperature=temperature, temperature_min=temperature, anneal_rate=0.0)
    with torch.no_grad():
        values = torch.stack([-objective.differentiable_loss(model, model.guide, batch) for _ in range(repeats)])
    return values.mean().item(), values.std().item() / math.sqrt(repeats)


def test_relaxed_approaches_the_enumerated_elbo_as_the_temperature_falls(small):
    """|L_tau - ELBO| (Jang et al.'s objective, see the module) on the grid tau = 2, 1, 0.5, 0.2, 0.05: decreasing
    (each gap below the previous one plus 3 standard errors of the two), clearly nonzero at tau = 2 (more than 10
    standard errors), and within 3 standard errors of zero at tau = 0.05 (10,000 draws per temperature, seeded)."""
    model, batch = small
    elbo = _exact(model, batch.x)[0].sum().item()
    pyro.set_rng_seed(0)
    values = [_relaxed_value(model, batch, "relaxed", t) for t in (2, 1, 0.5, 0.2, 0.05)]
    gaps = [(abs(m - elbo), se) for m, se in values]
    for (g0, s0), (g1, s1) in zip(gaps[:-1], gaps[1:], strict=True):
        assert g1 < g0 + 3 * math.hypot(s0, s1), gaps
    assert gaps[0][0] > 10 * gaps[0][1], gaps
    assert gaps[-1][0] < 3 * gaps[-1][1], gaps


def test_straight_through_value_is_unbiased_for_the_elbo_at_any_temperature(small):
    """The straight-through forward pass uses argmax((log pi + g) / tau), a Cat(pi) draw (Gumbel-max) at every tau,
    so the mean of its value is the exact ELBO: within 3 standard errors at tau = 2 and tau = 0.5."""
    model, batch = small
    elbo = _exact(model, batch.x)[0].sum().item()
    pyro.set_rng_seed(1)
    for tau in (2.0, 0.5):
        mean, se = _relaxed_value(model, batch, "relaxed_st", tau)
        assert abs(mean - elbo) < 3 * se, (tau, mean, elbo, se)


def _grads(model, loss):
    params = [p for p in model.parameters()]
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()


@pytest.mark.slow
def test_reinforce_gradient_mean_is_the_exact_gradient(small):
    """200 independent reinforce gradients (each averaging 200 vectorized particles, neural baseline at its fixed
    random initialization) of every model parameter: each coordinate's mean is within 4.5 standard errors of the
    gradient of the hand-summed ELBO (a z-test per coordinate; 4.5 keeps the family-wise false alarm rate of the
    ~220 coordinates below 0.2%), and the mean gradient's relative L2 error is under 5%."""
    model, batch = small
    exact = _grads(model, -_exact(model, batch.x)[0].sum())
    objective = _objective("reinforce", 200)
    pyro.set_rng_seed(2)
    draws = torch.stack([_grads(model, objective.differentiable_loss(model, model.guide, batch)) for _ in range(200)])
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    z = (mean - exact) / se.clamp_min(1e-12)
    assert z.abs().max() < 4.5, (z.abs().max(), z.abs().argmax())
    assert (mean - exact).norm() < 0.05 * exact.norm()


def test_log_marginal_draws_codes_from_the_unrelaxed_guide(small):
    """ppvae.log_marginal with the model's categorical guide: the codes are drawn (ESS below K), and each point's
    estimate is within 3 standard errors (plus float rounding) of the enumerated log p(x)."""
    model, batch = small
    _, exact = _exact(model, batch.x)
    lm = ppvae.log_marginal((model, model.guide), batch.x, num_particles=2000, seed=0, warn=False)
    assert torch.all(lm.ess < 2000 - 1)
    assert torch.all((lm.values - exact.double()).abs() < 3 * lm.mc_stderr + 1e-4), (lm.values, exact, lm.mc_stderr)


def test_relaxed_temperature_schedule_and_options():
    objective = _objective("relaxed", temperature=2.0, temperature_min=0.5, anneal_rate=0.01)
    assert objective.temperature_at(0) == 2.0
    assert objective.temperature_at(100) == pytest.approx(2.0 * math.exp(-1.0))
    assert objective.temperature_at(10_000) == 0.5
    for options, message in [({"temperature": 0.0}, "temperature: expected a number > 0"),
                             ({"temperature": -1.0}, "temperature: expected a number > 0"),
                             ({"temperature_min": 2.0}, "temperature_min: expected at most temperature"),
                             ({"anneal_rate": -1.0}, "anneal_rate"),
                             ({"bogus": 1}, "does not accept")]:
        with pytest.raises(ppvae.PPVAEError, match=message):
            _objective("relaxed", **options)
    with pytest.raises(ppvae.PPVAEError, match="baseline"):
        _objective("reinforce", baseline="decaying")


def test_objectives_refuse_models_without_categorical_codes():
    data = ppvae.Dataset((torch.rand(20, D) < 0.4).float(), name="toy", kind="binary")
    for elbo, message in [("relaxed", "no OneHotCategorical site"), ("reinforce", "samples no discrete site")]:
        with pytest.raises(ppvae.PPVAEError, match=message):
            ppvae.fit(ppvae.models.VAE(latent_dim=2, hidden=4, depth=1), data, elbo=elbo, steps=1, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="10\\^20 = 1e\\+20 joint values"):
        ppvae.fit(DiscreteVAE(num_codes=20, code_size=10, hidden=4, depth=1), data, elbo="enum", steps=1,
                  progress=False)
    with pytest.raises(ppvae.PPVAEError, match="draws discrete site"):
        ppvae.fit(DiscreteVAE(num_codes=2, code_size=3, hidden=4, depth=1), data, elbo="iwae", num_particles=2,
                  steps=1, progress=False)


def test_concrete_log_ratio_does_not_depend_on_the_temperature():
    """Why ``relaxed`` uses the categorical KL (module docstring): for Concrete densities of one temperature, log q(y) -
    log p(y) at y = softmax((log pi + g) / tau) is a function of g alone. Checked in ExpConcrete space (float64) for
    the same Gumbel draws at tau = 0.1, 1 and 3 (equal to 1e-9), and its mean is not KL(Cat(pi) || Cat(uniform))."""
    torch.manual_seed(0)
    log_pi = torch.tensor([2.0, 0.0, -1.0], dtype=torch.float64).log_softmax(-1)
    uniform = torch.zeros(3, dtype=torch.float64)
    g = -torch.log(-torch.log(torch.rand(20000, 3, dtype=torch.float64)))
    ratios = []
    for tau in (0.1, 1.0, 3.0):
        x = ((log_pi + g) / tau).log_softmax(-1)  # log y, the ExpConcrete sample
        t = torch.tensor(tau, dtype=torch.float64)
        q, p = ExpRelaxedCategorical(t, logits=log_pi), ExpRelaxedCategorical(t, logits=uniform)
        ratios.append(q.log_prob(x) - p.log_prob(x))
    torch.testing.assert_close(ratios[0], ratios[1], rtol=0, atol=1e-9)
    torch.testing.assert_close(ratios[2], ratios[1], rtol=0, atol=1e-9)
    categorical_kl = (log_pi.exp() * (log_pi + math.log(3))).sum().item()
    assert abs(ratios[1].mean().item() - categorical_kl) > 0.1
