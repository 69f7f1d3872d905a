"""ppvae.compare and the `ppvae compare` / `ppvae mcmc` commands: exact numbers where the model has
them (EM's log-likelihood, the Normal-Gamma posterior), the written files, failing methods recorded.

Tolerances are stated per test and are several Monte Carlo standard errors wide at the fixed seeds."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from ppvae import Dataset, PPVAEError, fit, load_dataset
from ppvae.cli.app import main
from ppvae.comparison.compare_methods import compare, parse_methods
from ppvae.comparison.inference_data import guide_draws
from ppvae.infer.em import fit_em
from ppvae.models import GMM, NormalGamma
from ppvae.models.gmm import gmm_log_likelihood


def _faithful_half():
    data = load_dataset("faithful", standardize=True)
    return data.subset(torch.arange(0, len(data), 2))


@pytest.mark.slow
def test_compare_gmm_writes_every_file_and_records_a_failing_method(tmp_path):
    data = _faithful_half()
    result = compare("gmm", data, "em,svi:auto_normal,svi:model,nuts", hparams={"K": 2, "covariance": "diag"},
                     svi_steps=100, svi_lr=0.05, num_draws=200, num_mcmc_draws=60, warmup=40, num_chains=2)
    paths = result.save(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ppvae-run", "comparison.csv", "comparison.json",
                                                           "comparison.md", "marginals.png"]
    records = {r["method"]: r for r in json.loads((tmp_path / "comparison.json").read_text())["records"]}
    assert list(records) == ["em", "svi:auto_normal", "svi:model", "nuts"]
    # the failing method's row: its error, and every other method still ran
    assert records["svi:model"]["status"] == "failed" and "defines no guide" in records["svi:model"]["error"]
    assert all(records[m]["status"] == "ok" for m in ("em", "svi:auto_normal", "nuts"))
    # EM's train log-likelihood is the exact log sum_k w_k N(x_i | mu_k, Sigma_k) at the EM fit (same split, seed)
    train, test = data.split(0.2, 0)
    model = GMM(K=2, covariance="diag")
    em = fit_em(model, train, restarts=5, seed=0)
    w, mu, cov = em.params["weights"], em.params["locs"], em.params["covs"]
    exact = float(gmm_log_likelihood(train.x.double(), w, mu, torch.linalg.cholesky(cov)).sum())
    assert records["em"]["train_loglik"] == pytest.approx(exact, abs=1e-2)
    exact_test = float(gmm_log_likelihood(test.x.double(), w, mu, torch.linalg.cholesky(cov)).sum())
    assert records["em"]["test_loglik"] == pytest.approx(exact_test, abs=1e-2)
    # NUTS: finite PSIS-LOO, R-hat, ESS/s; posterior means of the (aligned) locations within 3 sd of EM
    nuts = records["nuts"]
    assert math.isfinite(nuts["elpd_loo"]) and nuts["elpd_loo_se"] > 0 and nuts["rhat_max"] < 1.1
    assert nuts["ess_per_s"] > 0 and nuts["num_divergences"] == 0
    for key, stat in nuts["posterior"].items():
        if key.startswith("locs"):
            assert abs(stat["mean"] - records["em"]["posterior"][key]["mean"]) < 3 * stat["sd"], key
    # the lppd on the training data is at least elpd_loo (LOO cannot beat in-sample fit)
    assert nuts["train_loglik"] >= nuts["elpd_loo"]
    with open(paths["csv"]) as fh:
        rows = list(csv.DictReader(fh))
    assert [r["method"] for r in rows] == list(records) and "mean:locs[0,0]" in rows[0]
    md = (tmp_path / "comparison.md").read_text()
    assert "**svi:model failed:**" in md and "ordering locs" in md
    # the guide's k-hat and the verdict against NUTS (60 draws x 2 chains: flagged as not converged, ESS < 200)
    svi = records["svi:auto_normal"]
    assert svi["guide_khat_reading"] in ("good", "usable", "do not trust") and svi["vs_mcmc"]
    assert set(svi["verdict"]) <= set(nuts["posterior"]) and "locs[0,0]" in svi["verdict"]
    assert records["em"]["vs_mcmc"] == "point estimate" and nuts["mcmc_converged"] is False
    assert "## Against MCMC" in md and "| vs_mcmc |" in md


@pytest.mark.slow
def test_compare_normal_gamma_shows_the_mean_field_missing_dependence():
    # exact posterior draws vs NUTS vs a mean-field guide, n = 10 training points: the rank correlation
    # of |mu - median mu| with tau is about -0.2 under the exact posterior; NUTS within 0.1 of the exact
    # draws' value; mean-field (mu and log tau independent) within 0.07 of 0 (MCSE ~0.02-0.04)
    x = torch.randn(12, 1, generator=torch.Generator().manual_seed(1)) * 1.5 + 0.5
    result = compare("normal_gamma", Dataset(x, name="ng12"), "exact,svi:auto_normal,nuts", svi_steps=800,
                     svi_lr=0.02, num_draws=2000, num_mcmc_draws=300, warmup=150, num_chains=2)
    rec = {r["method"]: r for r in result.records}
    dep = {m: rec[m]["pairs"]["mu|tau"]["scale_dep"] for m in rec}
    assert dep["exact"] < -0.12
    assert abs(dep["nuts"] - dep["exact"]) < 0.1
    assert abs(dep["svi:auto_normal"]) < 0.07
    assert all(abs(rec[m]["pairs"]["mu|tau"]["corr"]) < 0.15 for m in rec)  # the linear correlation is 0
    assert rec["nuts"]["elpd_loo"] == pytest.approx(rec["exact"]["elpd_loo"], abs=0.5)
    assert "rank corr(|a - median a|, b)" in result.to_markdown()


@pytest.mark.slow
def test_svi_full_rank_recovers_normal_gamma_moments():
    # AutoMultivariateNormal on (log tau, mu), n = 50 (posterior close to Gaussian): 4000 guide draws,
    # means within 0.1 posterior sd and sds within 10% of the exact Normal-Gamma posterior
    model, x = NormalGamma(a0=2.0, b0=2.0), torch.randn(50, 1, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.5
    result = fit(model, Dataset(x), guide="auto_mvn", steps=1000, lr=0.02, lr_schedule="exponential",
                 num_particles=4, seed=0, progress=False)
    draws = guide_draws(result.model, result.guide, Dataset(x), num_draws=4000, seed=0)
    post = model.exact_posterior(x)
    for site, mean, var in (("mu", post.mean_mu, post.var_mu), ("tau", post.mean_tau, post.var_tau)):
        sd = math.sqrt(var)
        assert abs(float(draws[site].mean()) - mean) < 0.1 * sd, site
        assert abs(float(draws[site].std()) / sd - 1) < 0.1, site


def test_bad_methods_are_refused_before_anything_runs(capsys):
    with pytest.raises(PPVAEError, match="methods: expected em, exact, nuts, hmc or svi:<guide>.*got 'svi:auto_foo'"):
        parse_methods("em,svi:auto_foo")
    with pytest.raises(PPVAEError, match="expected each method once"):
        parse_methods(["nuts", "nuts"])
    # a method that cannot apply to the model is skipped with its reason in the table (issue 29), never a crash
    (rec,) = compare("normal_gamma", Dataset(torch.randn(10, 1)), "em").records
    assert rec["status"] == "skipped" and "does not declare ClosedFormEM" in rec["error"], rec
    assert main(["compare", "gmm", "K=2", "--data", "faithful", "--methods", "em,gibbs", "--out", "/tmp/x"]) == 2
    assert "methods: expected em" in capsys.readouterr().err


def test_cli_compare_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "gmm", "K=2", "covariance=diag", "--data", "faithful", "--standardize", "--methods",
                 "em,svi:auto_delta", "--steps", "100", "--lr", "0.05", "--num-draws", "5", "--quiet",
                 "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [".ppvae-run", "comparison.csv", "comparison.json", "comparison.md",
                                                     "marginals.png"]
    records = json.loads((out / "comparison.json").read_text())["records"]
    # MAP under weak priors sits next to the maximum-likelihood EM fit: train log-likelihoods within 1 nat
    assert abs(records[0]["train_loglik"] - records[1]["train_loglik"]) < 1.0
    assert "| em | ok |" in capsys.readouterr().out


# -- the VI-versus-MCMC verdict (ppvae.comparison.vi_verdict) --------------------------------------
def _chains(rng, num_chains=4, num_draws=500, shifts=(0.0, 0.0, 0.0, 0.0)):
    import arviz as az

    a = rng.normal(size=(num_chains, num_draws)) + np.asarray(shifts)[:num_chains, None]
    b = 2.0 + 0.5 * rng.normal(size=(num_chains, num_draws))
    return az.from_dict(posterior={"a": a, "b": b})


def test_verdict_tells_real_differences_from_noise():
    """Reference: 4 chains x 500 iid draws of a ~ N(0, 1), b ~ N(2, 0.5^2) (MCSE of a mean ~0.022). Draws from the
    same distribution agree (|z| < 3, sd interval covers 1); a mean shifted by 0.2 sd (z ~ 6), a sd 0.8 x (interval
    ~[0.76, 0.84]) and a bimodal shape of equal mean and sd are each flagged as what they are."""
    from ppvae.comparison.vi_verdict import reference_stats, verdict, verdict_line

    rng = np.random.default_rng(0)
    ref = reference_stats(_chains(rng))
    assert ref["a"]["mcse_mean"] == pytest.approx(1 / math.sqrt(2000), rel=0.15)
    same = verdict({"a": torch.as_tensor(rng.normal(size=2000)), "b": torch.as_tensor(2 + 0.5 * rng.normal(size=2000))},
                   ref)
    assert verdict_line(same) == "agrees" and all(abs(v["z_mean"]) < 3 for v in same.values())
    bimodal = np.where(rng.random(2000) < 0.5, -1.0, 1.0) * math.sqrt(1 - 0.3 ** 2) + 0.3 * rng.normal(size=2000)
    off = verdict({"a": torch.as_tensor(0.2 + rng.normal(size=2000)), "b": torch.as_tensor(2 + 0.4 * rng.normal(
        size=2000)), "c": torch.zeros(3)}, ref)
    assert off["a"]["real"][0] == "mean" and off["a"]["z_mean"] > 4  # W1 >= |mean difference|: shape too
    assert off["b"]["real"][0] == "sd" and off["b"]["sd_ratio_high"] < 0.9 and "c" not in off
    shape = verdict({"a": torch.as_tensor(bimodal)}, ref)
    assert shape["a"]["real"] == ["shape"], shape["a"]
    assert verdict_line(off).startswith("differs: a (mean, shape); b (sd")


def test_unconverged_chains_are_flagged():
    """Chains stuck at different means (R-hat ~1.4) and 4 x 30 draws (ESS < 100 per chain) are not converged;
    the table shows 'not converged' where it showed 'ok'."""
    from ppvae.comparison.report import Comparison
    from ppvae.comparison.vi_verdict import converged, reference_stats

    rng = np.random.default_rng(1)
    ok, why = converged(reference_stats(_chains(rng, shifts=(0, 0, 1.5, 1.5))), 4)
    assert not ok and "R-hat > 1.01" in why
    ok, why = converged(reference_stats(_chains(rng, num_draws=30)), 4)
    assert not ok and "bulk ESS < 100 per chain" in why  # (R-hat of 30 iid draws is noisy too: 1.02)
    assert converged(reference_stats(_chains(rng)), 4) == (True, None)
    md = Comparison("m", "d", [{"method": "nuts", "status": "ok", "mcmc_converged": False}]).to_markdown()
    assert "| nuts | not converged |" in md
