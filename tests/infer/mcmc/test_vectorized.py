"""The vectorized-chains NUTS (ppvae.infer.mcmc.vectorized): the right distribution, the batched potential equal to
the per-chain one, bit-for-bit reproducibility from a seed, and its options checked.

Tolerances: the Gaussian target's draws have an ESS of several hundred per coordinate at these seeds, so the MCSE
of a mean is <= 0.05 sd and of an sd <= 4%; the bounds below are 3-4 of those.
"""

import functools
import math

import pytest
import torch

from ppvae import Dataset, PPVAEError, import_model
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.infer.mcmc.vectorized import VectorizedNUTS, _checkpoints
from ppvae.models import NormalGamma

SCALES = torch.tensor([1.0, 10.0, 0.1], dtype=torch.float64)
MEANS = torch.tensor([0.5, -3.0, 0.02], dtype=torch.float64)


def _gaussian(z):
    """U and dU/dz of N(MEANS, diag(SCALES^2)) at each row of z."""
    d = (z - MEANS) / SCALES
    return 0.5 * (d * d).sum(-1), d / SCALES


def _run(seed, warmup=150, draws=400, chains=3):
    start = torch.zeros(chains, 3, dtype=torch.float64)
    return VectorizedNUTS(_gaussian, seed=seed).run(start, warmup, draws)


def test_checkpoint_indices_match_numpyro():
    # numpyro.infer.hmc_util._leaf_idx_to_ckpt_idxs: 6 -> (3, 2) (no check), 7 -> (0, 2), 13 -> (2, 2), 0 -> (1, 0)
    assert [_checkpoints(n) for n in (0, 1, 6, 7, 13)] == [(1, 0), (0, 0), (3, 2), (0, 2), (2, 2)]


@pytest.mark.slow
def test_gaussian_moments_within_monte_carlo_error():
    out = _run(seed=3)
    draws = out["draws"].reshape(-1, 3)
    assert out["draws"].shape == (3, 400, 3) and int(out["diverging"].sum()) == 0
    mean_err = (draws.mean(0) - MEANS) / SCALES
    sd_ratio = draws.std(0) / SCALES
    assert float(mean_err.abs().max()) < 0.15, mean_err
    assert float((sd_ratio - 1).abs().max()) < 0.12, sd_ratio
    # the adapted inverse mass matrix follows the target's variances, which span a factor 10^4 (unadapted, the ratio
    # would be 0.01 and 100); from ~100 correlated warm-up draws each is within a factor 10
    ratio = out["inverse_mass"] / SCALES ** 2
    assert float(ratio.min()) > 0.1 and float(ratio.max()) < 10.0, ratio
    assert 0.6 < float(out["accept_prob"].mean()) < 0.99


def test_same_seed_same_draws_bit_for_bit():
    a, b, c = _run(seed=5, warmup=8, draws=8), _run(seed=5, warmup=8, draws=8), _run(seed=6, warmup=8, draws=8)
    assert torch.equal(a["draws"], b["draws"]) and torch.equal(a["step_size"], b["step_size"])
    assert not torch.equal(a["draws"], c["draws"])


def test_chain_energies_equal_the_per_chain_potential():
    # the one-run-over-a-plate-of-draws potential and its gradient equal the per-chain eager ones, row by row,
    # on a model with a discrete latent summed out (Dawid-Skene) and one without (hierarchical logistic)
    for spec, data in (("examples/annotation.py:DawidSkene",
                        Dataset(torch.tensor([[0., 1., 0., 2.], [2., 2., 1., 2.], [1., 1., 1., 0.]]))),
                       ("examples/hier_logistic.py:HierLogistic",
                        Dataset(torch.tensor([[0., 0.3], [1., -1.2], [1., 0.5]]), torch.tensor([1., 0., 1.])))):
        model = import_model(spec)(**({"groups": 2} if "hier" in spec else {}))
        model.setup(data)
        batch = data.batch()
        potential = Potential(model, batch, max_plate_nesting=model.structure(batch).max_plate_nesting, model=model)
        theta = torch.randn(4, sum(potential.shapes[n].numel() for n in potential.names),
                            generator=torch.Generator().manual_seed(0)) * 0.5
        values, grads = potential.chain_value_and_grad(theta)
        for c in range(4):
            leaf = theta[c].clone().requires_grad_(True)
            energy = potential.energy(leaf)
            (grad,) = torch.autograd.grad(energy, leaf)
            assert float(values[c]) == pytest.approx(float(energy), rel=1e-5), spec
            assert torch.allclose(grads[c], grad, rtol=1e-4, atol=1e-4), spec


@pytest.mark.slow
def test_run_mcmc_vectorized_recovers_normal_gamma_posterior():
    # as test_mcmc's Normal-Gamma test: |mean - exact| < 0.15 sd, |sd / exact sd - 1| < 0.12 (ESS ~ 500)
    model = NormalGamma()
    x = torch.randn(10, 1, generator=torch.Generator().manual_seed(1)) * 1.5 + 0.5
    post = model.exact_posterior(x)
    result = run_mcmc(model, Dataset(x), num_draws=400, warmup=150, num_chains=3, jit=True, vectorized=True, seed=1,
                      progress=False)
    d = result.flat_samples()
    for site, mean, var in (("mu", post.mean_mu, post.var_mu), ("tau", post.mean_tau, post.var_tau)):
        sd = math.sqrt(var)
        assert abs(float(d[site].mean()) - mean) < 0.15 * sd, site
        assert abs(float(d[site].std()) / sd - 1) < 0.12, site
    assert result.samples["mu"].shape == (3, 400) and result.num_divergences == 0
    assert all(float(r) < 1.05 for r in result.rhat().values())
    again = run_mcmc(model, Dataset(x), num_draws=20, warmup=20, num_chains=3, vectorized=True, seed=1,
                     progress=False)
    twice = run_mcmc(model, Dataset(x), num_draws=20, warmup=20, num_chains=3, vectorized=True, seed=1,
                     progress=False)
    assert torch.equal(again.samples["mu"], twice.samples["mu"])


def test_vectorized_refuses_options_it_does_not_have():
    x = Dataset(torch.randn(5, 1))
    for kwargs in ({"kernel": "hmc"}, {"full_mass": True}, {"step_size": 0.1}):
        with pytest.raises(PPVAEError, match="vectorized"):
            run_mcmc(NormalGamma(), x, num_draws=5, warmup=5, vectorized=True, progress=False, **kwargs)


def test_vectorized_run_reports_progress_per_chain(monkeypatch, capsys):
    # a line per update here (interval 0); by default one every 30 s off a terminal, a bar per chain on one
    import ppvae.infer.mcmc.sampler as sampler
    from ppvae._util.progress import Progress

    monkeypatch.setattr(sampler, "Progress", functools.partial(Progress, interval=0.0))
    run_mcmc(NormalGamma(), Dataset(torch.randn(5, 1)), num_draws=20, warmup=20, num_chains=2, vectorized=True,
             progress=True)
    err = capsys.readouterr().err
    assert "nuts: 50% (40/80 it)" in err and "nuts: 100% (80/80 it)" in err and "chains 100% 100%" in err
