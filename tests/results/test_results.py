"""Fit results: save/load round trip, posterior over the discrete assignments."""

import json

import pytest
import torch

import ppvae
from ppvae.models import GMM


@pytest.fixture(scope="module")
def gmm_fit(faithful):
    return ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=300, lr=0.05, progress=False)


def test_responsibilities_equal_bayes_rule_at_the_fitted_values(gmm_fit, faithful):
    resp = gmm_fit.discrete_posterior(faithful)["z"]
    w, locs, covs = gmm_fit.model.mixture_components(gmm_fit.global_values(faithful))
    log_joint = w.log() + torch.distributions.MultivariateNormal(locs, covs).log_prob(faithful.x.unsqueeze(-2))
    assert resp.shape == (272, 2)
    assert torch.allclose(resp, torch.softmax(log_joint, -1), atol=1e-5)
    map_z = gmm_fit.discrete_posterior(faithful, how="map")["z"]
    assert torch.equal(map_z, resp.argmax(-1))
    draws = gmm_fit.discrete_posterior(faithful, how="sample")["z"]
    assert draws.shape == (272,) and set(draws.unique().tolist()) <= {0, 1}


def test_exact_log_likelihood_by_hand(gmm_fit, faithful):
    w, locs, covs = gmm_fit.model.mixture_components(gmm_fit.global_values(faithful))
    by_hand = torch.logsumexp(
        w.log() + torch.distributions.MultivariateNormal(locs, covs).log_prob(faithful.x.unsqueeze(-2)), -1)
    assert torch.allclose(gmm_fit.log_likelihood(faithful), by_hand, atol=1e-4)


def test_save_and_load_round_trip(gmm_fit, faithful, tmp_path):
    gmm_fit.save(str(tmp_path))
    assert {p.name for p in tmp_path.iterdir()} == {"config.json", "params.pt", "history.json"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "gmm" and config["hparams"]["K"] == 2 and config["train"]["guide"] == "auto_delta"
    loaded = ppvae.Fit.load(str(tmp_path))
    assert torch.equal(loaded.log_likelihood(faithful), gmm_fit.log_likelihood(faithful))
    assert loaded.history["loss"] == gmm_fit.history["loss"]


@pytest.mark.parametrize("guide", ["auto_normal", "auto_iaf"])
def test_round_trip_for_stochastic_guides(faithful, tmp_path, guide):
    fit = ppvae.fit(GMM(K=2, covariance="diag"), faithful, guide=guide, steps=20, lr=0.01, progress=False)
    fit.save(str(tmp_path))
    loaded = ppvae.Fit.load(str(tmp_path))
    assert torch.allclose(loaded.log_likelihood(faithful), fit.log_likelihood(faithful), atol=1e-6)


def test_loading_a_broken_run_names_the_file(gmm_fit, tmp_path):
    gmm_fit.save(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ppvae.PPVAEError, match="config.json is corrupted"):
        ppvae.Fit.load(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(ppvae.PPVAEError, match="config.json is missing"):
        ppvae.Fit.load(str(tmp_path))


def test_two_fits_in_one_process_do_not_share_parameters(faithful):
    a = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=30, lr=0.05, progress=False)
    before = a.log_likelihood(faithful)
    ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=5, lr=0.05, seed=3, progress=False)
    assert torch.equal(a.log_likelihood(faithful), before)


def test_log_likelihood_of_a_single_point(gmm_fit, faithful):
    """A data plate of size 1 (packed away by Pyro) still gives one value per point."""
    one = gmm_fit.log_likelihood(faithful.x[:1])
    assert one.shape == (1,)
    assert torch.allclose(one, gmm_fit.log_likelihood(faithful.x[:3])[:1])
