"""Run directories of every result kind (ppvae/runs.py): exact round trips, version and kind checks,
safe loading, and ``evaluate`` on EM, MCMC and CAVI runs checked against numbers computed by hand."""

import json
import math
import os

import numpy as np
import pytest
import torch
from _helpers import write_payload
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal, Normal

import ppvae
from ppvae.cli.ais import evaluate_run
from ppvae.cli.app import main
from ppvae.models import GMM, LDA, NormalGamma
from ppvae.models.lda_cavi import CAVIFit
from ppvae.runs import directory as runs


# -- fixtures: one saved run of each kind -----------------------------------------------------------------
@pytest.fixture(scope="module")
def em_run(tmp_path_factory, faithful):
    fit = ppvae.fit_em(GMM(K=2), faithful, restarts=2, seed=0)
    path = tmp_path_factory.mktemp("em") / "run"
    fit.save(str(path))
    return fit, path


def _mcmc_result(model, data, samples, method="nuts"):
    """An MCMCResult holding given draws (chains, draws, ...): the saved format does not depend on how they came."""
    model.setup(data)
    return ppvae.MCMCResult(model, None, samples, method, 1.5, 3, runs.data_info(data),
                            {"kernel": method, "num_chains": 2, "seed": 0})


@pytest.fixture(scope="module")
def gmm_draws(faithful):
    """Draws of a diagonal GMM's globals around its EM fit: 2 chains x 40 draws, seeded."""
    em = ppvae.fit_em(GMM(K=2, covariance="diag"), faithful, restarts=2, seed=0)
    gen = torch.Generator().manual_seed(1)
    noise = lambda *shape: torch.randn(2, 40, *shape, generator=gen, dtype=torch.float64)  # noqa: E731
    w = em.params["weights"] * torch.exp(0.05 * noise(2))
    scales = em.params["covs"].diagonal(dim1=-2, dim2=-1).sqrt()
    return {"weights": (w / w.sum(-1, keepdim=True)).float(), "locs": (em.params["locs"] + 0.1 * noise(2, 2)).float(),
            "scales": (scales * torch.exp(0.05 * noise(2, 2))).float()}


@pytest.fixture(scope="module")
def mcmc_run(tmp_path_factory, faithful, gmm_draws):
    result = _mcmc_result(GMM(K=2, covariance="diag"), faithful, gmm_draws)
    path = tmp_path_factory.mktemp("mcmc") / "run"
    result.save(str(path))
    return result, path


@pytest.fixture(scope="module")
def cavi_run(tmp_path_factory):
    data = ppvae.load_dataset("reuters", split="train")
    fit = LDA(topics=3).fit_cavi(data, max_iter=2, init_sweeps=20, seed=0, rel_tol=0.0)
    path = tmp_path_factory.mktemp("cavi") / "run"
    fit.save(str(path))
    return fit, path, data


# -- exact round trips ----------------------------------------------------------------------------------------
def test_em_round_trip_is_exact(em_run):
    fit, path = em_run
    loaded = ppvae.EMFit.load(str(path))
    assert loaded.params.keys() == fit.params.keys()
    assert all(torch.equal(loaded.params[k], fit.params[k]) for k in fit.params)
    assert (loaded.traces, loaded.log_likelihood_total, loaded.best_restart, loaded.converged, loaded.config,
            loaded.data_info, loaded.model.hparams) == (fit.traces, fit.log_likelihood_total, fit.best_restart,
                                                        fit.converged, fit.config, fit.data_info, fit.model.hparams)
    state, again = fit.model.state_dict(), loaded.model.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)


def test_mcmc_round_trip_is_exact(mcmc_run, faithful):
    result, path = mcmc_run
    loaded = ppvae.MCMCResult.load(str(path))
    assert loaded.samples.keys() == result.samples.keys()
    assert all(torch.equal(loaded.samples[k], result.samples[k]) for k in result.samples)
    assert (loaded.method, loaded.time_s, loaded.num_divergences, loaded.config, loaded.data_info,
            loaded.num_chains, loaded.num_draws) == (result.method, result.time_s, result.num_divergences,
                                                     result.config, result.data_info, 2, 40)
    assert loaded.mcmc is None and loaded.model.hparams == result.model.hparams
    idata = ppvae.to_inference_data(loaded, faithful, align=False)  # from the draws alone (no sampler statistics)
    assert np.array_equal(idata.posterior["locs"].values, result.samples["locs"].numpy())


def test_cavi_round_trip_is_exact(cavi_run):
    fit, path, _ = cavi_run
    loaded = CAVIFit.load(str(path))
    assert torch.equal(loaded.gamma, fit.gamma) and torch.equal(loaded.lam, fit.lam)
    assert (loaded.alpha, loaded.eta, loaded.history, loaded.converged, loaded.vocab, loaded.config,
            loaded.data_info) == (fit.alpha, fit.eta, fit.history, fit.converged, fit.vocab, fit.config, fit.data_info)
    assert loaded.model.name == "lda" and loaded.model.hparams == fit.model.hparams


def test_every_kind_records_its_kind_and_version(em_run, mcmc_run, cavi_run):
    for (_, path, *_), kind in ((em_run, "em"), (mcmc_run, "mcmc"), (cavi_run, "cavi")):
        config = json.loads((path / "config.json").read_text())
        assert (config["kind"], config["ppvae_version"]) == (kind, ppvae.__version__)
        assert runs.run_kind(str(path)) == kind


# -- refusals ------------------------------------------------------------------------------------------------
def _copy(path, tmp_path):
    import shutil

    shutil.copytree(path, tmp_path / "copy")
    return tmp_path / "copy"


LOADERS = {"em": ppvae.EMFit.load, "mcmc": ppvae.MCMCResult.load, "cavi": CAVIFit.load}


@pytest.mark.parametrize("kind", ["em", "mcmc", "cavi"])
def test_another_minor_version_is_refused(kind, em_run, mcmc_run, cavi_run, tmp_path):
    path = _copy({"em": em_run, "mcmc": mcmc_run, "cavi": cavi_run}[kind][1], tmp_path)
    config = json.loads((path / "config.json").read_text())
    config["ppvae_version"] = "0.9.0"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ppvae.PPVAEError, match=r"config.json was written by ppvae 0\.9\.0; this is ppvae "
                                               r"0\.1\.0 and runs load only within the same major\.minor"):
        LOADERS[kind](str(path))


@pytest.mark.parametrize("kind,name", [("em", "params.pt"), ("mcmc", "samples.pt"), ("mcmc", "params.pt"),
                                       ("cavi", "params.pt")])
@pytest.mark.parametrize("raw", [False, True], ids=["torch-zip", "raw-pickle"])
def test_a_file_that_would_run_code_is_refused(kind, name, raw, em_run, mcmc_run, cavi_run, tmp_path):
    path = _copy({"em": em_run, "mcmc": mcmc_run, "cavi": cavi_run}[kind][1], tmp_path)
    marker = tmp_path / "ran"
    write_payload(path / name, marker, raw=raw)
    with pytest.raises(ppvae.PPVAEError, match=rf"{name} .*refused without running anything"):
        LOADERS[kind](str(path))
    assert not marker.exists()


def test_a_run_of_another_kind_is_named(em_run, mcmc_run):
    with pytest.raises(ppvae.PPVAEError, match="holds a run of kind 'mcmc'; expected 'em'"):
        ppvae.EMFit.load(str(mcmc_run[1]))
    with pytest.raises(ppvae.PPVAEError, match="holds a run of kind 'em'; expected 'svi'"):
        ppvae.Fit.load(str(em_run[1]))
    with pytest.raises(ppvae.PPVAEError, match="holds a run of kind 'em'; expected 'mcmc'"):
        ppvae.MCMCResult.load(str(em_run[1]))


def test_safe_but_foreign_samples_are_named(mcmc_run, tmp_path):
    path = _copy(mcmc_run[1], tmp_path)
    torch.save({"locs": torch.zeros(3)}, path / "samples.pt")  # no (chains, draws) dimensions
    with pytest.raises(ppvae.PPVAEError, match=r"samples.pt is not a ppvae MCMC file .*got locs"):
        ppvae.MCMCResult.load(str(path))


def test_a_figure_that_fails_leaves_neither_a_file_nor_a_temporary(tmp_path):
    def broken(path):
        with open(path, "w") as fh:
            fh.write("half")
        raise RuntimeError("drawing failed")

    (tmp_path / "fig.png").write_text("old")
    with pytest.raises(RuntimeError):
        runs.write_figure(str(tmp_path), "fig.png", broken)
    assert sorted(os.listdir(tmp_path)) == ["fig.png"] and (tmp_path / "fig.png").read_text() == "old"


# -- evaluate on each kind, against numbers computed by hand -----------------------------------------------------
def _svi_entry_keys(faithful, tmp_path):
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=3, progress=False)
    fit.save(str(tmp_path / "svi"))
    return set(evaluate_run(str(tmp_path / "svi"), num_particles=2)[1])


def test_em_evaluate_is_the_closed_form_mixture_density(em_run, faithful, tmp_path):
    fit, path = em_run
    values, entry = evaluate_run(str(path))
    p = fit.params
    by_hand = MixtureSameFamily(Categorical(p["weights"]), MultivariateNormal(p["locs"], p["covs"])).log_prob(
        faithful.x.double())
    torch.testing.assert_close(values, by_hand, rtol=0, atol=1e-10)
    assert entry["total"] == pytest.approx(float(by_hand.sum()), abs=1e-8)
    assert entry["total"] == pytest.approx(fit.log_likelihood_total, abs=1e-6)  # EM's own total at the same parameters
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["log_marginal"] == entry and (path / "log_marginal.png").stat().st_size > 0
    assert _svi_entry_keys(faithful, tmp_path) <= set(entry)  # the same metrics.json shape as an SVI run


def _gmm_diag_loglik(draws, x):
    """log p(x_i | theta_s) = log sum_k w_sk prod_d N(x_id | mu_skd, sigma_skd), shape (S, N)."""
    w, mu, sd = (draws[k].double() for k in ("weights", "locs", "scales"))
    comp = Normal(mu[:, None], sd[:, None]).log_prob(x.double()[None, :, None]).sum(-1)  # (S, N, K)
    return torch.logsumexp(w.log()[:, None] + comp, -1)


def test_mcmc_evaluate_is_lppd_over_the_saved_draws_beside_psis_loo(mcmc_run, faithful, gmm_draws):
    _, path = mcmc_run
    values, entry = evaluate_run(str(path))
    ll = _gmm_diag_loglik({k: v.reshape(80, *v.shape[2:]) for k, v in gmm_draws.items()}, faithful.x)
    lppd = torch.logsumexp(ll, 0) - math.log(80)
    torch.testing.assert_close(values, lppd, rtol=0, atol=1e-4)  # the model evaluates in float32
    loo = entry["loo"]
    assert entry["num_particles"] == 80 and entry["lppd"] == pytest.approx(float(lppd.sum()), abs=1e-2)
    assert loo["p_loo"] == pytest.approx(entry["lppd"] - loo["elpd_loo"], abs=1e-6)  # arviz: p_loo = lppd - elpd
    assert loo["elpd_loo"] < entry["lppd"]


def test_mcmc_evaluate_on_a_continuous_model_by_hand(tmp_path):
    """Normal-Gamma with draws from its exact posterior: lppd_i = log mean_s N(x_i | mu_s, tau_s^-1/2)."""
    gen = torch.Generator().manual_seed(0)
    x = 1.0 + 0.5 * torch.randn(30, 1, generator=gen)
    csv = tmp_path / "x.csv"
    csv.write_text("x\n" + "\n".join(f"{v:.17g}" for v in x[:, 0].tolist()) + "\n")
    data = ppvae.load_dataset(str(csv))
    tau = torch._standard_gamma(torch.full((2, 50), 16.0), generator=gen) / 4.0
    mu = 1.0 + torch.randn(2, 50, generator=gen) / (30 * tau).sqrt()
    _mcmc_result(NormalGamma(), data, {"mu": mu, "tau": tau}).save(str(tmp_path / "run"))
    values, entry = evaluate_run(str(tmp_path / "run"))
    ll = Normal(mu.reshape(-1, 1).double(), tau.reshape(-1, 1).double().rsqrt()).log_prob(data.x[:, 0].double())
    torch.testing.assert_close(values, torch.logsumexp(ll, 0) - math.log(100), rtol=0, atol=1e-4)
    assert entry["method"] == "mcmc" and entry["num_points"] == 30


def test_cavi_evaluate_bounds_sum_to_the_elbo(cavi_run):
    fit, path, data = cavi_run
    values, entry = evaluate_run(str(path))
    assert len(values) == len(fit.gamma) and entry["fitted_q_theta"]
    # sum_d B_d - KL(q(beta) || p(beta)) is the ELBO the fit recorded after its last iteration
    assert entry["elbo"] == pytest.approx(fit.elbo, rel=1e-12)
    assert entry["total"] - entry["kl_topics"] == pytest.approx(fit.trace[-1], rel=1e-12)
    # B_d by its definition for the first documents, with phi written out (dense):
    # B_d = sum_w c_dw sum_k phi_dwk (E log theta_dk + E log beta_kw - log phi_dwk) + log C(c_d)
    #       + E_q[log Dir(theta_d | alpha)] + H[Dir(gamma_d)]
    x = data.x[data.x.sum(1) > 0][:5].double()
    gamma, lam = fit.gamma[:5], fit.lam
    elog_theta = torch.digamma(gamma) - torch.digamma(gamma.sum(-1, keepdim=True))
    elog_beta = torch.digamma(lam) - torch.digamma(lam.sum(-1, keepdim=True))
    log_phi = torch.log_softmax(elog_theta[:, None, :] + elog_beta.T[None], -1)  # (D, V, K)
    words = (x[..., None] * log_phi.exp() * (elog_theta[:, None, :] + elog_beta.T[None] - log_phi)).sum((1, 2))
    log_coef = torch.lgamma(x.sum(1) + 1) - torch.lgamma(x + 1).sum(1)
    K = gamma.shape[1]
    prior = math.lgamma(K * fit.alpha) - K * math.lgamma(fit.alpha) + ((fit.alpha - 1) * elog_theta).sum(-1)
    by_hand = words + log_coef + prior + torch.distributions.Dirichlet(gamma).entropy()
    torch.testing.assert_close(values[:5], by_hand, rtol=1e-10, atol=1e-8)


def test_cli_evaluate_prints_each_kind(em_run, mcmc_run, tmp_path, capsys):
    for (_, path, *_), what in ((em_run, "log p(x_i | EM parameters), exact"), (mcmc_run, "PSIS-LOO: elpd_loo")):
        path = _copy(path, tmp_path / what[:3].replace(" ", "_"))
        assert main(["evaluate", str(path)]) == 0
        assert what in capsys.readouterr().out
    assert main(["evaluate", str(path), "--method", "ais"]) == 2
    assert "--method: 'ais' estimates log p(x) for SVI runs" in capsys.readouterr().err


def test_evaluate_refuses_points_of_another_shape(em_run, tmp_path):
    np.savetxt(tmp_path / "three.csv", np.ones((4, 3)), delimiter=",")
    with pytest.raises(ppvae.PPVAEError, match=r"fitted on points of shape \(2,\); got points of shape \(3,\)"):
        evaluate_run(str(_copy(em_run[1], tmp_path)), str(tmp_path / "three.csv"))
