"""ppvae.ais (the annealing engine) and per-point AIS in log_marginal, against exact answers."""

import math

import pytest
import torch

from ppvae import PPVAEError
from ppvae.ais import anneal, check_betas, linear_schedule, make_schedule, sigmoid_schedule


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
