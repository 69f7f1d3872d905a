"""Evidence log p(X) by bridge sampling (ppvae.evaluate.bridge) and by AIS over all latents
(ppvae.evaluate.evidence_ais),
checked against closed forms; the vectorized log joint both use, checked against the NUTS potential; the
`ppvae evidence` command; bad input."""

import importlib.util
import json
import math

import pytest
import torch
from _helpers import REPO_ROOT

import ppvae
from ppvae import PPVAEError
from ppvae.evaluate.bridge import bridge_sampling, iterate_bridge, relative_mse
from ppvae.evaluate.joint import log_density, potential_for, unconstrained_draws
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.models.gmm import GMM
from ppvae.models.normal_gamma import NormalGamma

# the hierarchical normal model of eight schools (mu, theta_i; tau known) and its closed-form evidence
# live in the example script, loaded from its file (as test_model does with examples/custom_model.py)
_spec = importlib.util.spec_from_file_location("evidence_schools",
                                               REPO_ROOT / "examples" / "evidence_schools.py")
_example = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_example)
HierarchicalNormal = _example.HierarchicalNormal


@pytest.fixture(scope="module")
def schools():
    return _example.schools()


@pytest.fixture(scope="module")
def schools_nuts(schools):
    model = HierarchicalNormal()
    run = ppvae.run_mcmc(model, schools, num_draws=400, warmup=200, num_chains=1, init="prior", jit=True, seed=0,
                         progress=False)
    return model, run


@pytest.fixture(scope="module")
def ng_data():
    g = torch.Generator().manual_seed(0)
    return (1.5 + 0.7 * torch.randn(20, 1, generator=g, dtype=torch.float64))


def _within(est, exact, k=3.0):
    return abs(est.value - exact) <= k * est.stderr


# -- the iterative scheme and its error, on densities with known normalizers ---------------------------
def test_iterate_bridge_is_exact_when_the_proposal_is_the_posterior():
    # pi = c g exactly: every ratio equals c, the fixed point is c after the first iteration
    l1, l2 = torch.full((50,), 3.25, dtype=torch.float64), torch.full((60,), 3.25, dtype=torch.float64)
    log_r, iters = iterate_bridge(l1, l2, s1=50 / 110)
    assert log_r == pytest.approx(3.25, abs=1e-12) and iters <= 2


def test_bridge_error_predicts_the_spread_over_replications():
    # pi(u) = Z N(u; 0, 1) with log Z = 2, proposal g = N(0.5, 1.5^2), iid draws. Over 200 replications
    # the sd of log p-hat must match the mean RE of Frühwirth-Schnatter 2004 within 20% (the sd of a
    # sample sd over 200 replications is ~5%, so 20% is four of those) and the mean be within 3 SE of 2.
    g = torch.Generator().manual_seed(1)
    post, prop = torch.distributions.Normal(0.0, 1.0), torch.distributions.Normal(0.5, 1.5)
    est, res = [], []
    for _ in range(200):
        u = torch.randn(300, generator=g, dtype=torch.float64)
        v = 0.5 + 1.5 * torch.randn(300, generator=g, dtype=torch.float64)
        lp_u, lp_v = 2.0 + post.log_prob(u), 2.0 + post.log_prob(v)
        lg_u, lg_v = prop.log_prob(u), prop.log_prob(v)
        log_z, _ = iterate_bridge(lp_u - lg_u, lp_v - lg_v, s1=0.5)
        est.append(log_z)
        res.append(math.sqrt(relative_mse(lp_u, lg_u, lp_v, lg_v, log_z, num_chains=1)))
    est, res = torch.tensor(est), torch.tensor(res)
    assert float(est.std()) == pytest.approx(float(res.mean()), rel=0.2)
    assert abs(float(est.mean()) - 2.0) <= 3 * float(est.std()) / math.sqrt(200)


# -- the vectorized log joint ----------------------------------------------------------------------------
def test_log_density_equals_the_nuts_potential(schools):
    # the vectorized log joint at 5 random points equals -U of mcmc.Potential, one trace each (float64: 1e-10)
    model = HierarchicalNormal()
    pot = potential_for(model, ppvae.Dataset(schools))
    theta = torch.randn(5, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    fast = log_density(pot, theta)
    slow = torch.stack([-pot.energy(t) for t in theta]).detach()
    assert torch.allclose(fast, slow.double(), rtol=0, atol=1e-10)


def test_log_density_sums_discrete_locals_and_orders_labels(faithful):
    # a GMM (discrete z summed by enumeration, Dirichlet and Wishart-type transforms, the ordered column):
    # the same equality, on the standardized faithful data in float64, to 1e-8 relative
    x = faithful.x.double()
    x = (x - x.mean(0)) / x.std(0)
    model = GMM(K=2)
    model.setup(ppvae.Dataset(x))
    pot = potential_for(model, ppvae.Dataset(x), order=("locs", 0))
    dim = pot.flatten({n: pot.transforms[n](s["value"]) for n, s in pot.sites.items()}).numel()
    theta = 0.5 * torch.randn(4, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    fast = log_density(pot, theta)
    slow = torch.stack([-pot.energy(t) for t in theta]).detach().double()
    assert torch.allclose(fast, slow, rtol=1e-8, atol=0)


# -- bridge sampling against closed forms -----------------------------------------------------------------
@pytest.mark.slow
def test_bridge_hierarchical_normal_within_three_stderr(schools_nuts, schools):
    # 3 SE: a seeded run; SE is Frühwirth-Schnatter's RE (validated above), and must be small (< 0.1)
    model, run = schools_nuts
    exact = model.log_evidence_exact(schools)
    est = ppvae.log_evidence(run, schools, method="bridge")
    assert est.method == "bridge" and est.stderr < 0.1
    assert _within(est, exact), (est.value, est.stderr, exact)
    assert est.info["num_posterior"] == est.info["num_proposal"] == 200


@pytest.mark.slow
def test_bridge_normal_gamma_within_three_stderr(ng_data):
    model = NormalGamma()
    run = ppvae.run_mcmc(model, ng_data, num_draws=400, warmup=200, jit=True, seed=0, progress=False)
    exact = model.log_evidence_exact(ng_data)
    est = bridge_sampling(run, ng_data)
    assert est.stderr < 0.05 and _within(est, exact), (est.value, est.stderr, exact)


def test_bridge_on_exact_posterior_draws_normal_gamma(ng_data):
    # iid draws from the exact posterior (NG(mu_n, lambda_n, a_n, b_n)) in the shape of an MCMC result
    model = NormalGamma()
    model.setup(ppvae.Dataset(ng_data))
    post = model.exact_posterior(ng_data)
    g = torch.Generator().manual_seed(3)
    tau = torch.distributions.Gamma(post.a_n, post.b_n).sample((2, 1000))
    mu = post.mu_n + torch.randn(2, 1000, generator=g, dtype=torch.float64) * (post.lambda_n * tau).rsqrt()
    run = MCMCResult(model, None, {"tau": tau.double(), "mu": mu}, "exact", 0.0, 0, {}, {})
    est = bridge_sampling(run, ng_data, seed=1)
    exact = model.log_evidence_exact(ng_data)
    assert est.stderr < 0.01 and _within(est, exact), (est.value, est.stderr, exact)


# -- AIS over all latents ------------------------------------------------------------------------------
def test_ais_hierarchical_normal_from_guide_within_three_stderr(schools):
    # the mean-field guide misses the mu-theta correlation (IS from it has ESS ~ 1/3 of S); AIS from it
    # at T = 100, C = 32 lands within 3 delta-method SE of the closed form
    model = HierarchicalNormal()
    fit = ppvae.fit(model, schools, guide="auto_normal", steps=400, lr=0.05, seed=0, progress=False)
    est = ppvae.log_evidence(fit, schools, method="ais", num_steps=100, num_chains=32, seed=0)
    exact = model.log_evidence_exact(schools)
    assert est.method == "ais" and est.stderr < 0.2
    assert _within(est, exact), (est.value, est.stderr, exact)
    assert est.info["num_latent_dims"] == 9 and 0.3 < est.info["accept_rate"] <= 1.0


def test_ais_from_mcmc_draws_within_three_stderr(schools_nuts, schools):
    model, run = schools_nuts
    est = ppvae.log_evidence(run, schools, method="ais", num_steps=100, num_chains=32, seed=1)
    assert est.stderr < 0.1 and _within(est, model.log_evidence_exact(schools)), est


def test_ais_with_one_step_is_importance_sampling_from_p0(ng_data):
    # T = 1 makes no transition (accept rate undefined): plain importance sampling from p_0, here with
    # 500 weights, within 3 delta-method SE of the closed form
    model = NormalGamma()
    fit = ppvae.fit(model, ng_data, guide="auto_normal", steps=300, lr=0.05, seed=0, progress=False)
    est = ppvae.log_evidence(fit, ng_data, method="ais", num_steps=1, num_chains=500, seed=4)
    exact = model.log_evidence_exact(ng_data)
    assert est.info["accept_rate"] is None and est.num_particles == 500
    assert _within(est, exact, k=3.0), (est.value, est.stderr, exact)


# -- the command line ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_cli_evidence_on_mcmc_and_fit_directories(tmp_path, ng_data, capsys):
    from ppvae.cli.app import main

    csv = tmp_path / "ng.csv"
    csv.write_text("x\n" + "\n".join(f"{v:.10f}" for v in ng_data[:, 0].tolist()) + "\n")
    mc, run = tmp_path / "mc", tmp_path / "run"
    assert main(["mcmc", "normal_gamma", "--data", str(csv), "--chains", "1", "--num-draws", "300", "--warmup", "150",
                 "--jit", "--quiet", "--out", str(mc)]) == 0
    assert main(["fit", "normal_gamma", "--data", str(csv), "--guide", "auto_normal", "--steps", "300", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["evidence", str(run), "--data", str(csv), "--mcmc", str(mc), "--steps", "50", "--chains", "32",
                 "--num-particles", "500", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "is " in out and "ais " in out and "bridge " in out and "agree within 3" in out
    entry = json.loads((run / "metrics.json").read_text())["evidence"]
    exact = NormalGamma().log_evidence_exact(ng_data)
    assert [e["method"] for e in entry["estimates"]] == ["is", "ais", "bridge"] and entry["agree"] is True
    for e in entry["estimates"]:  # each within 3 of its own SE of the closed form
        assert abs(e["value"] - exact) <= 3 * e["stderr"], e
    assert entry["estimates"][1]["info"]["num_steps"] == 50 and len(entry["pairs"]) == 3
    assert main(["evidence", str(mc), "--data", str(csv), "--steps", "20", "--chains", "8", "--quiet"]) == 0
    entry = json.loads((mc / "metrics.json").read_text())["evidence"]
    assert [e["method"] for e in entry["estimates"]] == ["bridge", "ais"]
    assert json.loads((mc / "metrics.json").read_text())["method"] == "nuts"  # other keys kept


def test_cli_evidence_bad_directory(tmp_path, capsys):
    from ppvae.cli.app import main

    assert main(["evidence", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["evidence", str(tmp_path)]) == 2
    assert "run_dir: expected a directory written by `ppvae fit` or `ppvae mcmc`" in capsys.readouterr().err


# -- bad input -------------------------------------------------------------------------------------------
def test_bridge_refuses_too_few_draws(ng_data):
    model = NormalGamma()
    model.setup(ppvae.Dataset(ng_data))
    run = MCMCResult(model, None, {"tau": torch.ones(1, 9, dtype=torch.float64) + torch.rand(1, 9),
                                   "mu": torch.randn(1, 9, dtype=torch.float64)}, "nuts", 0.0, 0, {}, {})
    with pytest.raises(PPVAEError, match=r"^mcmc: bridge sampling needs at least 6 draws in each half") as info:
        ppvae.log_evidence(run, ng_data, method="bridge")
    assert "\n" not in str(info.value)


def test_bad_method_option_and_source(schools_nuts, schools, ng_data):
    model, run = schools_nuts
    with pytest.raises(PPVAEError, match=r"^method: expected one of is, ais, bridge; got 'nested'"):
        ppvae.log_evidence(run, schools, method="nested")
    with pytest.raises(PPVAEError, match=r"^options: method='bridge' takes .*; got num_steps"):
        ppvae.log_evidence(run, schools, method="bridge", num_steps=10)
    with pytest.raises(PPVAEError, match=r"^options: method='is' takes"):
        ppvae.log_evidence(run, schools, num_chains=3)
    fit = ppvae.fit(NormalGamma(), ng_data, guide="auto_delta", steps=20, seed=0, progress=False)
    with pytest.raises(PPVAEError, match=r"^fit_or_model_guide: method='bridge' needs posterior draws"):
        ppvae.log_evidence(fit, ng_data, method="bridge")
    with pytest.raises(PPVAEError, match=r"^proposal: its draws do not vary"):  # auto_delta has no spread
        ppvae.log_evidence(fit, ng_data, method="ais", num_steps=5, num_chains=4)
    with pytest.raises(PPVAEError, match=r"^num_steps: expected an integer >= 1; got 0"):
        ppvae.log_evidence(run, schools, method="ais", num_steps=0)
    with pytest.raises(PPVAEError, match=r"^num_chains: expected an integer >= 1; got 0"):
        ppvae.log_evidence(run, schools, method="ais", num_chains=0)
    with pytest.raises(PPVAEError, match=r"^mcmc: draws of site 'mu' should have shape"):
        bad = MCMCResult(model, None, {"mu": torch.zeros(1, 10, 2), "theta": torch.zeros(1, 10, 8)}, "nuts", 0.0, 0,
                         {}, {})
        bridge_sampling(bad, schools)


def test_unconstrained_draws_round_trip(schools_nuts, schools):
    # the flat unconstrained draws the bridge uses are those the Pyro kernel moved (its "_theta" site)
    model, run = schools_nuts
    pot = potential_for(model, ppvae.Dataset(schools))
    u = unconstrained_draws(pot, run.samples)
    assert torch.allclose(u.double(), run.mcmc.get_samples(group_by_chain=True)["_theta"].double(), atol=1e-10)


@pytest.mark.slow
def test_defensive_mixture_costs_little_where_the_guide_is_good(ng_data):
    """Defensive importance sampling (r = 0.9 q + 0.1 p) is off by default on a model without label symmetry;
    asked for where the full-rank guide is near the exact Normal-Gamma posterior it stays within 3 SE and keeps
    most of the ESS: measured 3290 of 3445 at S = 4,000 (standard error 0.0073 against 0.0063; k-hat 0.09 against
    0.49)."""
    model = NormalGamma()
    exact = model.log_evidence_exact(ng_data)
    fit = ppvae.fit(model, ng_data, guide="auto_mvn", steps=500, lr=0.05, progress=False, seed=0)
    plain = ppvae.log_evidence(fit, ng_data, num_particles=4000, seed=0)
    mixed = ppvae.log_evidence(fit, ng_data, num_particles=4000, seed=0, defensive=0.1)
    assert "defensive" not in plain.info and mixed.info["defensive"]["num_prior_draws"] == 400
    assert _within(plain, exact) and _within(mixed, exact)
    assert 0.9 * plain.ess < mixed.ess <= plain.ess * 1.05
    assert mixed.stderr < 1.5 * plain.stderr
