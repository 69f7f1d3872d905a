"""The discrete-code VAE: shapes and the uniform prior against a hand computation, training by name with each
discrete estimator (API and CLI), log p(x) from a run, one-line errors for bad options."""

import json
import math

import pyro
import pytest
import torch
from torch import nn

import ppvae
from ppvae.cli.app import main
from ppvae.models import DiscreteVAE


def _binary(n=40, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ppvae.Dataset((torch.rand(n, d, generator=g) < 0.3).float(), name="toy", kind="binary")


def test_model_log_density_by_hand():
    """log p(x, z) of the model at the guide's codes = log p(x | concatenated one-hots) - C log K (all 6 points: no
    subsampling scale)."""
    data = _binary(n=6)
    torch.manual_seed(0)
    model = DiscreteVAE(num_codes=3, code_size=4, hidden=8, depth=1)
    model.setup(data)
    batch = data.batch()
    assert model.encode(batch.x).shape == (6, 3, 4)
    guide_trace = pyro.poutine.trace(model.guide).get_trace(batch)
    codes = [guide_trace.nodes[f"z{j}"]["value"] for j in range(3)]
    assert all(torch.equal(c.sum(-1), torch.ones(6)) for c in codes)  # one-hot, unrelaxed
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(batch)
    model_trace.compute_log_prob()
    total = sum(model_trace.nodes[n]["log_prob"] for n in ("z0", "z1", "z2", "x"))
    logits = model.decoder(torch.cat(codes, -1))
    by_hand = -nn.functional.binary_cross_entropy_with_logits(logits, batch.x, reduction="none").sum(-1)
    torch.testing.assert_close(total, by_hand - 3 * math.log(4))


@pytest.mark.parametrize("elbo", ["relaxed", "relaxed_st", "reinforce", "enum"])
def test_fit_by_name_lowers_the_loss(elbo):
    """Each estimator trains: the mean loss of the last 20 steps is below that of the first 20 (seeded)."""
    data = _binary(n=100, d=12)
    fit = ppvae.fit(DiscreteVAE(num_codes=2, code_size=3, hidden=16, depth=1), data, elbo=elbo, steps=150,
                    batch_size=20, lr=1e-2, seed=0, progress=False)
    losses = torch.tensor(fit.history["loss"])
    assert fit.elbo_name == elbo
    assert losses[-20:].mean() < losses[:20].mean() - 0.5, (losses[:20].mean(), losses[-20:].mean())


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["relaxed", "relaxed_st", "reinforce", "enum"])
def test_cli_fit_by_name(tmp_path, elbo):
    out = tmp_path / elbo
    options = ["--elbo-option", "temperature=0.8"] if elbo.startswith("relaxed") else []
    rc = main(["fit", "dvae", "num_codes=2", "code_size=3", "hidden=16", "depth=1", "--data", "mnist5k", "--steps",
               "3", "--elbo", elbo, *options, "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["elbo"] == elbo and math.isfinite(metrics["loss_final"])
    assert metrics["log_likelihood_exact"] is True  # 9 joint codes: log p(x) by enumeration


@pytest.mark.parametrize("argv, message", [
    (["dvae", "--elbo", "relaxed", "--elbo-option", "temperature=0"], "temperature: expected a number > 0"),
    (["dvae", "--elbo", "relaxed", "--elbo-option", "temperature_min=-1"], "temperature_min: expected a number > 0"),
    (["dvae", "--elbo", "relaxed_st", "--elbo-option", "nope=1"], "does not accept ['nope']"),
    (["dvae", "--elbo", "reinforce", "--elbo-option", "baseline=avg"], "baseline: expected one of"),
    (["dvae", "--elbo", "relaxed", "--elbo-option", "temperature"], "--elbo-option: expected KEY=VALUE"),
    (["dvae", "--elbo", "trace"], "cannot sum out"),
    (["dvae", "--elbo", "enum"], "10^20 = 1e+20 joint values"),
    (["vae", "--elbo", "relaxed"], "no OneHotCategorical site to relax"),
    (["vae", "--elbo", "reinforce"], "the guide samples no discrete site"),
    (["dvae", "num_codes=0"], "num_codes: expected an integer >= 1"),
])
def test_bad_options_are_one_line_errors(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    rc = main(["fit", *argv, "--data", "mnist5k", "--steps", "1", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not out.exists()
