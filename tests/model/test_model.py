"""The model base class: hyperparameters, registry, construction from CLI strings, a custom model."""

import importlib.util

import pytest
import torch
from _helpers import REPO_ROOT

import ppvae
from ppvae.models import GMM, ThreeCoin

ROOT = REPO_ROOT


def test_hparams_are_recorded_from_the_constructor():
    assert GMM(K=3, covariance="diag").hparams == {"K": 3, "covariance": "diag", "concentration": 1.0,
                                                   "reg_covar": 1e-6}
    assert ThreeCoin().hparams == {}


def test_registry_lists_bundled_models():
    names = ppvae.list_models()
    assert {"gmm", "three_coin"} <= set(names)
    assert all(desc for desc in names.values())


def test_build_model_converts_cli_strings():
    m = ppvae.build_model("gmm", K="3", covariance="diag", concentration="0.5")
    assert (m.K, m.covariance, m.concentration) == (3, "diag", 0.5)


@pytest.mark.parametrize(
    "name, hparams, match",
    [
        ("nope", {}, "model: expected one of"),
        ("gmm", {"k": "2"}, "takes K, covariance, concentration, reg_covar; got unknown k"),
        ("gmm", {"K": "two"}, "K: model 'gmm' expects int; got 'two'"),
        ("gmm", {"K": "0"}, "K: expected an integer >= 1; got 0"),
        ("gmm", {"covariance": "spherical"}, "covariance: expected one of full, diag"),
        ("gmm", {"K": 2.5}, "K: expected an integer"),
    ],
)
def test_build_model_rejects_bad_hyperparameters(name, hparams, match):
    with pytest.raises(ppvae.PPVAEError, match=match):
        ppvae.build_model(name, **hparams)


def test_structure_helpers(faithful):
    m = GMM(K=2)
    m.setup(faithful)
    batch = faithful.batch()
    assert m.discrete_latent_sites(batch) == ["z"]
    assert set(m.latent_sites(batch)) == {"weights", "locs", "scales", "corr", "z"}
    assert m.max_plate_nesting(batch) == 1


def test_data_plate_scales_a_minibatch(faithful):
    import pyro.poutine as poutine

    m = GMM(K=2)
    m.setup(faithful)
    batch = faithful.batch(torch.arange(17))
    tr = poutine.trace(m).get_trace(batch)
    assert tr.nodes["obs"]["scale"] == pytest.approx(272 / 17)
    assert tr.nodes["weights"]["scale"] == 1.0


def test_custom_model_example_fits_with_no_other_code():
    spec = importlib.util.spec_from_file_location("custom_model", ROOT / "examples" / "custom_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    fit, counts = mod.main(steps=300)
    values = fit.global_values(counts)
    order = values["rates"].argsort()
    # simulated with weights (0.3, 0.7) and rates (3, 20) from 400 counts
    assert values["rates"][order].tolist() == pytest.approx([3.0, 20.0], abs=1.0)
    assert values["weights"][order].tolist() == pytest.approx([0.3, 0.7], abs=0.06)
    # the exact per-point log-likelihood by hand from the fitted values
    w, r = values["weights"], values["rates"]
    x = counts.x[:, 0]
    by_hand = torch.logsumexp(w.log() + torch.distributions.Poisson(r).log_prob(x.unsqueeze(-1)), -1)
    assert torch.allclose(fit.log_likelihood(counts), by_hand, atol=1e-4)
