"""Simulation-based calibration (ppvae.comparison.calibration) against methods whose calibration is known exactly.

Every test is seeded; the level of the simultaneous ECDF band is 0.05 (Säilynoja et al. 2022), so a calibrated
method fails it with probability 0.05 per parameter: the seeds are fixed, and the counts stated per test.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from _helpers import REPO_ROOT
from scipy.stats import binom, norm
from test_guide_diagnostics import blr, blr_module

import ppvae
from ppvae.comparison.calibration import ecdf_band, rank_verdict, sbc

ROOT = REPO_ROOT


class ExactBLR(blr, ppvae.ExactPosterior):
    """examples/blr.py with its closed-form posterior as a guide: w ~ N(m_w, S_ww), b | w ~ N(m_b + k.(w - m_w), v)."""

    def posterior_guide(self, x, y=None):
        mean, cov = (t.float() for t in blr_module.exact(self, x, y)[:2])
        d = x.shape[1]
        k = torch.linalg.solve(cov[:d, :d], cov[:d, d])
        v = cov[d, d] - cov[d, :d] @ k

        def guide(batch):
            w = pyro.sample("w", dist.MultivariateNormal(mean[:d], cov[:d, :d]))
            pyro.sample("b", dist.Normal(mean[d] + ((w - mean[:d]) * k).sum(-1), v.sqrt()))

        return guide


def _covariates(n=12, eps=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    x = torch.cat([z, z + eps * torch.randn(n, 1, generator=g)], 1)
    return ppvae.Dataset(x, torch.zeros(n), name="covariates")  # y is simulated; only its shape is kept


def test_band_has_its_stated_level():
    """Uniform ranks leave the 95% simultaneous band in 5% of 2000 fresh trials (binomial sd 0.5%; within 1.5%)."""
    band = ecdf_band(100, 49, level=0.05, seed=0)
    rng = np.random.default_rng(7)
    fails = sum(rank_verdict(rng.integers(0, 50, 100), 49, band) != "calibrated" for _ in range(2000))
    assert abs(fails / 2000 - 0.05) < 0.015, fails
    assert rank_verdict(np.r_[np.zeros(50, int), np.full(50, 49)], 49, band) == "too narrow (ranks U-shaped)"
    assert rank_verdict(np.full(100, 25), 49, band) == "too wide (ranks central)"
    assert rank_verdict(rng.integers(0, 20, 100), 49, band).startswith("biased")


@pytest.mark.slow
def test_exact_posteriors_are_calibrated():
    # 200 simulations each; both models' every parameter stays inside the band at these seeds
    ng = sbc("normal_gamma", ppvae.Dataset(torch.randn(20, 1, generator=torch.Generator().manual_seed(1))), "exact",
             num_sims=200, num_draws=99, seed=0)
    assert ng.verdicts == {"exact": {"tau": "calibrated", "mu": "calibrated"}}
    reg = sbc(ExactBLR(noise_sd=0.5), _covariates(), "exact", num_sims=200, num_draws=99, seed=0)
    assert reg.verdicts == {"exact": {"w[0]": "calibrated", "w[1]": "calibrated", "b": "calibrated"}}
    # the ranks are uniform on {0..99}: mean 49.5, sd 28.9 / sqrt(200) = 2.0
    assert all(abs(r.mean() - 49.5) < 6 for r in reg.ranks["exact"].values())


def mean_field_optimum(model, data, num_draws, seed):
    """The KL(q || p)-optimal mean-field Gaussian of the exact posterior: exact means, variances 1 / Lambda_jj
    (Bishop 2006, PRML eq. 10.13)."""
    mean, cov = blr_module.exact(model, data.x, data.y)[:2]
    sd = torch.linalg.inv(cov).diagonal().rsqrt()
    g = torch.Generator().manual_seed(seed)
    theta = mean + sd * torch.randn(num_draws, 3, generator=g, dtype=torch.float64)
    return {"w": theta[:, :2].float(), "b": theta[:, 2].float()}


def test_mean_field_is_flagged_at_the_rate_its_underdispersion_predicts():
    """Given X, the truth is a posterior draw theta_j ~ N(m_j, S_jj) and q_j = N(m_j, 1 / Lambda_jj), so a rank is
    Binomial(L, Phi(c Z)) with c = sqrt(S_jj Lambda_jj) (which does not depend on y) and Z ~ N(0, 1). The predicted
    share of ranks in {0, 1, 2} u {97, 98, 99} is E binom tails; the observed share over 300 simulations is within
    3.5 binomial sds of it, and the verdict says "too narrow" for the correlated coefficients."""
    data, L, S = _covariates(), 99, 300
    model = blr(noise_sd=0.5)
    model.setup(data)
    res = sbc(model, data, [mean_field_optimum], num_sims=S, num_draws=L, seed=0)
    _, cov = blr_module.exact(model, data.x, data.x[:, 0])[:2]
    lam = torch.linalg.inv(cov).diagonal()
    z = np.linspace(-8, 8, 4001)
    for j, key in enumerate(("w[0]", "w[1]", "b")):
        c = math.sqrt(float(cov[j, j] * lam[j]))
        u = norm.cdf(c * z)
        p = np.trapezoid((binom.cdf(2, L, u) + binom.sf(96, L, u)) * norm.pdf(z), z)
        r = res.ranks["mean_field_optimum"][key]
        observed = ((r <= 2) | (r >= 97)).mean()
        assert abs(observed - p) < 3.5 * math.sqrt(p * (1 - p) / S), (key, observed, p, c)
        if c > 2:  # the two coefficients (c ~ 4.6); the intercept is nearly uncorrelated (c ~ 1.0)
            assert res.verdicts["mean_field_optimum"][key] == "too narrow (ranks U-shaped)", key


def test_em_point_estimate_is_flagged_and_labels_are_aligned():
    """EM's L copies of one point put every rank at 0 or L (the truth differs from the estimate almost surely):
    every parameter fails the band (as too narrow, or as biased where most truths fall on one side)."""
    x = torch.randn(40, 1, generator=torch.Generator().manual_seed(0))
    res = sbc(ppvae.build_model("gmm", K=2, covariance="diag"), ppvae.Dataset(x), "em", num_sims=20, num_draws=49,
              seed=0, em_restarts=2)
    verdicts = res.verdicts["em"]
    assert set(verdicts) >= {"locs[0,0]", "locs[1,0]", "weights[0]"}
    assert all(v != "calibrated" for v in verdicts.values()), verdicts
    assert verdicts["locs[1,0]"] == "too narrow (ranks U-shaped)"
    assert all(np.isin(r, [0, 49]).all() for r in res.ranks["em"].values())


def test_resumes_from_its_directory(tmp_path):
    calls = []

    def counted(model, data, num_draws, seed):
        calls.append(seed)
        return mean_field_optimum(model, data, num_draws, seed)

    data = _covariates()
    model = blr(noise_sd=0.5)
    first = sbc(model, data, [counted], num_sims=5, num_draws=19, seed=0, out=str(tmp_path))
    again = sbc(model, data, [counted], num_sims=8, num_draws=19, seed=0, out=str(tmp_path))
    assert len(calls) == 8  # 5, then the 3 missing
    assert [s["ranks"] for s in again.sims[:5]] == [s["ranks"] for s in first.sims]
    assert {p.name for p in tmp_path.iterdir()} >= {"sbc.md", "sbc.json", "sbc_ecdf.png", "sbc_ranks.png", "sims"}
    with pytest.raises(ppvae.PPVAEError, match="other settings"):
        sbc(model, data, [counted], num_sims=8, num_draws=29, seed=0, out=str(tmp_path))


@pytest.mark.slow
def test_nuts_on_normal_gamma_is_calibrated():
    # 20 one-chain NUTS runs (413 s at load average 13): both parameters inside the band (a small S: gross
    # miscalibration only)
    x = torch.randn(20, 1, generator=torch.Generator().manual_seed(1))
    res = sbc("normal_gamma", ppvae.Dataset(x), "nuts", num_sims=20, num_draws=49, warmup=150, seed=0)
    assert res.verdicts == {"nuts": {"tau": "calibrated", "mu": "calibrated"}}


def test_bad_input():
    data = _covariates()
    with pytest.raises(ppvae.PPVAEError, match="methods: expected exact, em"):
        sbc(blr(), data, "gibbs")
    with pytest.raises(ppvae.PPVAEError, match="methods: 'exact'"):
        sbc(blr(), data, "exact")
    with pytest.raises(ppvae.PPVAEError, match="num_sims"):
        sbc(ExactBLR(), data, "exact", num_sims=0)


def test_cli_sbc_writes_and_resumes(tmp_path, capsys):
    from ppvae.cli import main

    x = tmp_path / "x.csv"
    np.savetxt(x, np.random.default_rng(0).normal(size=(15, 1)), delimiter=",")
    out = tmp_path / "sbc"
    argv = ["sbc", "normal_gamma", "--data", str(x), "--methods", "exact", "--sims", "20", "--num-draws", "19",
            "--quiet", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| exact | mu |" in printed and len(list((out / "sims").glob("sim_*.json"))) == 20
    assert main(argv[:7] + ["30"] + argv[8:]) == 0  # resumes: 10 more
    assert len(list((out / "sims").glob("sim_*.json"))) == 30
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert main(argv[:-1] + [str(tmp_path / "other")]) == 2
    assert "holds no sbc run" in capsys.readouterr().err


class EightSchools(ppvae.Model):
    """Non-centered eight schools (Rubin 1981; Gelman et al. BDA3 sec. 5.5): mu ~ N(0, 5), tau ~ HalfCauchy(5),
    theta_tilde_j ~ N(0, 1), y_j ~ N(mu + tau theta_tilde_j, sigma_j) with sigma_j the covariate x_j."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(batch.x.new_zeros(()), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(batch.x.new_tensor(5.0)))
        theta = pyro.sample("theta_tilde", dist.Normal(batch.x.new_zeros(8), 1.0).to_event(1))
        index = batch.index if batch.index is not None else torch.arange(len(batch))
        theta = theta[..., index]
        if theta.dim() > 1:  # vectorized draws: (S, 1, M) -> (S, M), the draws' dim left of the data plate
            theta = theta.reshape(theta.shape[:-2] + theta.shape[-1:])
        with self.data_plate(batch):
            pyro.sample("y", dist.Normal(mu + tau * theta, batch.x[:, 0]), obs=batch.y)


SIGMA = torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])


@pytest.mark.slow
def test_nuts_on_eight_schools_non_centered_is_calibrated():
    # 8 one-chain NUTS runs (537 s in all at load average 13) at the schools' sigmas, y simulated:
    # mu, tau and every theta_tilde inside the band (a small S: this catches gross miscalibration only)
    data = ppvae.Dataset(SIGMA[:, None], torch.zeros(8), name="schools")
    res = sbc(EightSchools(), data, "nuts", num_sims=8, num_draws=49, warmup=150, seed=0)
    assert set(res.verdicts["nuts"]) == {"mu", "tau"} | {f"theta_tilde[{j}]" for j in range(8)}
    assert all(v == "calibrated" for v in res.verdicts["nuts"].values()), res.verdicts
