"""The vectorized sampler's potential compiled by TorchInductor (ppvae/infer/mcmc/compiled.py, issue 29 item 5).

* On the four models of ``benchmarks/bench_nuts_general.py`` (small data: the compile time grows with the HMM's
  length), the compiled (C, n) -> (U, grad U) equals the traced one at points it was not compiled at, to float32
  tolerance: U within 1e-5 relative, the gradient within 1e-4 of its largest entry.
* The compiled sampler recovers the Normal-Gamma posterior (closed form) within Monte Carlo error, and a seed gives
  the same draws bit for bit.
* When to compile is decided from the configuration; a failure to compile, or a compiled result that disagrees
  with the eager one, falls back to the traced potential with a warning.
"""

import math
import warnings

import pytest
import torch

import ppvae.infer.mcmc.compiled as compiled
from ppvae import Dataset, PPVAEError, import_model
from ppvae.infer.mcmc.compiled import AUTO_MIN_ITERATIONS, chain_value_and_grad, wants_compile
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.models import NormalGamma


def _small_models():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(12, 2, generator=gen)
    hier = Dataset(torch.stack([torch.arange(12.0) % 3, rows[:, 0]], 1), (rows[:, 1] > 0).float())
    ordinal = Dataset(rows, torch.randint(0, 3, (12,), generator=gen).float())
    hmm = Dataset(torch.randn(8, 1, generator=gen))
    annotation = Dataset(torch.randint(0, 3, (6, 4), generator=gen).float())
    return [("examples/hier_logistic.py:HierLogistic", {"groups": 3}, hier),
            ("examples/ordinal.py:Ordinal", {}, ordinal), ("examples/hmm.py:HMM", {}, hmm),
            ("examples/annotation.py:DawidSkene", {}, annotation)]


def _potential(spec, kwargs, data):
    model = import_model(spec)(**kwargs)
    model.setup(data)
    batch = data.batch()
    return Potential(model, batch, max_plate_nesting=model.structure(batch).max_plate_nesting, model=model, jit=True)


@pytest.mark.slow
@pytest.mark.parametrize("case", range(4), ids=["hier_logistic", "ordinal", "hmm", "annotation"])
def test_compiled_potential_and_gradient_equal_the_traced_ones(case):
    spec, kwargs, data = _small_models()[case]
    potential = _potential(spec, kwargs, data)
    n = sum(s.numel() for s in potential.shapes.values())
    gen = torch.Generator().manual_seed(1)
    at = torch.randn(4, n, generator=gen) * 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn
        step = chain_value_and_grad(potential, at, compile=True)
    assert step is not potential.chain_value_and_grad
    for scale in (0.3, 1.0):  # points the graph was not compiled at
        theta = torch.randn(4, n, generator=gen) * scale
        value, grad = step(theta)
        expected, expected_grad = potential.chain_value_and_grad(theta)
        assert torch.allclose(value, expected, rtol=1e-5, atol=1e-5), (spec, value, expected)
        assert float((grad - expected_grad).abs().max()) <= 1e-4 * (1 + float(expected_grad.abs().max())), spec


@pytest.mark.slow
def test_compiled_sampler_recovers_normal_gamma_posterior():
    # as test_vectorized's Normal-Gamma test: |mean - exact| < 0.15 sd, |sd / exact sd - 1| < 0.12 (ESS ~ 500 at this
    # seed: MCSE of a mean ~0.045 sd, of an sd ~3%)
    model = NormalGamma()
    x = torch.randn(10, 1, generator=torch.Generator().manual_seed(1)) * 1.5 + 0.5
    post = model.exact_posterior(x)

    def run(draws, warmup):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = run_mcmc(model, Dataset(x), num_draws=draws, warmup=warmup, num_chains=3, jit=True, vectorized=True,
                           compile=True, seed=1, progress=False)
        assert not [w for w in caught if "not compiled" in str(w.message)]  # no fallback
        return out

    result = run(400, 150)
    assert result.config["compile"] is True and result.config["compiled"] == "compile=True"
    d = result.flat_samples()
    for site, mean, var in (("mu", post.mean_mu, post.var_mu), ("tau", post.mean_tau, post.var_tau)):
        sd = math.sqrt(var)
        assert abs(float(d[site].mean()) - mean) < 0.15 * sd, site
        assert abs(float(d[site].std()) / sd - 1) < 0.12, site
    assert result.num_divergences == 0 and all(float(r) < 1.05 for r in result.rhat().values())
    again, twice = run(20, 20), run(20, 20)
    assert torch.equal(again.samples["mu"], twice.samples["mu"])


def test_when_to_compile_is_decided_by_the_configuration():
    many = AUTO_MIN_ITERATIONS
    auto = {"jit": True, "vectorized": True, "closed_form": False}
    assert wants_compile("auto", iterations=many, **auto)[0]
    assert not wants_compile("auto", iterations=many - 1, **auto)[0]
    assert not wants_compile("auto", iterations=many, **{**auto, "jit": False})[0]
    assert not wants_compile("auto", iterations=many, **{**auto, "vectorized": False})[0]
    assert not wants_compile(True, iterations=many, **{**auto, "closed_form": True})[0]
    assert wants_compile(True, iterations=10, **{**auto, "jit": False})[0]
    assert not wants_compile(False, iterations=many, **auto)[0]
    with pytest.raises(PPVAEError, match="compile: expected True, False or 'auto'; got 'yes'"):
        wants_compile("yes", iterations=many, **auto)
    with pytest.raises(PPVAEError, match="expected vectorized=True"):
        run_mcmc(NormalGamma(), Dataset(torch.randn(5, 1)), num_draws=5, warmup=5, compile=True, progress=False)


def test_a_failed_or_wrong_compile_falls_back_to_the_traced_potential(monkeypatch):
    spec, kwargs, data = _small_models()[3]
    potential = _potential(spec, kwargs, data)
    theta = torch.zeros(2, sum(s.numel() for s in potential.shapes.values()))

    def fails(fn, example):
        raise RuntimeError("inductor could not compile the step: no C++ compiler")

    monkeypatch.setattr(compiled, "compile_step", fails)
    with pytest.warns(RuntimeWarning, match="not compiled .inductor could not compile the step: no C"):
        assert chain_value_and_grad(potential, theta, compile=True) == potential.chain_value_and_grad

    def wrong(fn, example):
        return lambda theta: (lambda u, g: (u + 1.0, g))(*fn(theta))

    monkeypatch.setattr(compiled, "compile_step", wrong)
    with pytest.warns(RuntimeWarning, match="differs from the eager one"):
        assert chain_value_and_grad(potential, theta, compile=True) == potential.chain_value_and_grad
