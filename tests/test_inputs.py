"""Issue 22's silent wrong results, each now refused in one line or warned (the input-validation half):
a user's model named like a bundled one, a resumed run on other data, zero draws, two spellings of one option,
an evidence error that cannot be estimated, MCMC on a model that observes nothing, EM on a constant column,
and bad init/order arguments of run_mcmc and fit_em."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.cli import main
from ppvae.models import GMM, NormalGamma


def _err(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppvae: error: ") and "Traceback" not in err, err
    return err


def test_a_user_model_cannot_take_a_bundled_models_name():
    with pytest.raises(ppvae.PPVAEError, match="'gmm' is the name of the bundled GMM"):
        @ppvae.register_model("gmm")
        class MyGMM(ppvae.Model):
            def forward(self, batch):
                pass
    assert ppvae.model.base.get_model_class("gmm") is GMM


def test_resume_refuses_a_checkpoint_trained_on_other_data(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["fit", "gmm", "K=2", "--data", "faithful", "--steps", "4", "--checkpoint-every", "2", "--quiet",
                 "--out", str(first)]) == 0
    other = tmp_path / "other.csv"
    other.write_text("\n".join(f"{i},{i % 3}" for i in range(272)))  # as many points, other values
    capsys.readouterr()
    out = tmp_path / "second"
    argv = ["fit", "gmm", "K=2", "--steps", "8", "--quiet", "--resume", str(first), "--out", str(out)]
    assert main(argv + ["--data", str(other)]) == 2
    assert "the state was trained on other data (272 points, " in _err(capsys) and not out.exists()
    assert main(argv + ["--data", "faithful"]) == 0  # the same data resumes


def test_zero_draws_are_refused_not_read_as_the_default():
    em = ppvae.fit_em(GMM(K=2), ppvae.load_dataset("faithful"), restarts=1)
    with pytest.raises(ppvae.PPVAEError, match="num_draws: expected an integer >= 1; got 0"):
        em.predict(ppvae.load_dataset("faithful"), num_draws=0)


@pytest.mark.parametrize("argv, message", [
    (["em", "gmm", "--tol", "1e-3", "--ll-tol", "1e-3"], "--tol is now --ll-tol"),
    (["cavi", "lda", "--rel-tol", "1e-3", "--tol", "1e-3"], "--tol is now --rel-tol"),
    (["mcmc", "gmm", "--samples", "10", "--num-draws", "10"], "--samples is now --num-draws"),
    (["mcmc", "gmm", "--num-draws", "3"], "num_draws: expected at least 4 draws per chain"),
])
def test_two_spellings_of_one_option_and_too_few_draws(tmp_path, capsys, argv, message):
    assert main(argv + ["--data", "faithful", "--out", str(tmp_path / "r")]) == 2
    assert message in _err(capsys) and not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag", ["--chains", "--num-particles"])
def test_evidence_refuses_one_draw_whose_error_is_unknown(tmp_path, capsys, flag):
    assert main(["evidence", str(tmp_path), flag, "1"]) == 2
    assert f"{flag}: expected at least 2" in _err(capsys)


class _ObservesNothing(ppvae.Model):
    def forward(self, batch):
        pyro.sample("mu", dist.Normal(0.0, 1.0))


def test_run_mcmc_refuses_a_model_that_observes_nothing_as_fit_does():
    x = torch.randn(10, 1, generator=torch.Generator().manual_seed(0))
    for call in (lambda: ppvae.fit(_ObservesNothing(), x, steps=2, progress=False),
                 lambda: ppvae.run_mcmc(_ObservesNothing(), x, num_draws=10, warmup=10, progress=False)):
        with pytest.raises(ppvae.PPVAEError, match="no observed site"):
            call()


def test_em_on_a_constant_column_warns():
    x = torch.stack([torch.arange(20.0), torch.full((20,), 5.0)], -1)
    with pytest.warns(UserWarning, match=r"column\(s\) \[1\] hold one value each"):
        ppvae.fit_em(GMM(K=2), x, restarts=1)


@pytest.mark.parametrize("init, message", [
    ({"locs": torch.zeros(3)}, r"init\['locs'\]: expected shape \(2, 2\); got \(3,\)"),
    ({"bogus": torch.zeros(3)}, "init: expected values for sampled continuous sites among weights, locs"),
    ({"scales": -torch.ones(2, 2)}, r"init\['scales'\]: expected values in the support"),
])
def test_run_mcmc_init_of_a_wrong_site_shape_or_support(init, message):
    with pytest.raises(ppvae.PPVAEError, match=message):
        ppvae.run_mcmc(GMM(K=2), ppvae.load_dataset("faithful"), init=init, num_draws=5, warmup=5, progress=False)


@pytest.mark.parametrize("order", ["locs:0", ("locs",), ("locs", "0"), 3])
def test_run_mcmc_order_of_a_wrong_type(order):
    with pytest.raises(ppvae.PPVAEError, match=r"order: expected \(SITE, COLUMN\) such as \('locs', 0\)"):
        ppvae.run_mcmc(GMM(K=2), ppvae.load_dataset("faithful"), order=order, num_draws=5, warmup=5, progress=False)


@pytest.mark.parametrize("init, message", [
    ({"bogus": 1}, "init: unknown option 'bogus'; expected one of covs, locs, weights"),
    ({"weight": torch.ones(2) / 2}, "did you mean 'weights'"),
    ({"weights": torch.ones(2) / 2}, "init: expected every EM parameter (weights, locs, covs); missing covs, locs"),
    ({"weights": torch.ones(3) / 3, "locs": torch.zeros(2, 2), "covs": torch.eye(2).expand(2, 2, 2)},
     "init['weights']: expected shape (2,)"),
    ("kmeans", "init: expected a dict of EM parameters; got str"),
])
def test_fit_em_init_is_checked(init, message):
    with pytest.raises(ppvae.PPVAEError) as info:
        ppvae.fit_em(GMM(K=2), ppvae.load_dataset("faithful"), init=init)
    assert message in str(info.value)


def test_mcmc_result_rhat_is_arviz_rank_normalized_as_in_summary():
    import arviz as az

    x = torch.randn(30, 1, generator=torch.Generator().manual_seed(0)) * 2 + 1
    result = ppvae.run_mcmc(NormalGamma(), x, num_draws=60, warmup=60, num_chains=2, cores=1, seed=3,
                            progress=False)
    rhat = result.rhat()
    table = result.summary(ppvae.Dataset(x))
    for site, draws in result.samples.items():
        expected = az.rhat(draws.double().numpy().reshape(2, 60))
        assert float(rhat[site]) == pytest.approx(float(expected), rel=1e-6)  # returned as float32
        row = next(r for r in table.to_dict()["rows"] if r["name"] == site)
        assert row["r_hat"] == pytest.approx(float(rhat[site]), rel=1e-6)


# -- tracebacks of issue 22 that are now one PPVAEError naming the argument ---------------------------------
class _NoBroadcast(ppvae.Model):
    """mu[0] indexes the event dimension from the left: fails once mu carries a leading dimension of draws."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with pyro.plate("data", len(batch.x)):
            pyro.sample("obs", dist.Normal(torch.stack([mu[0], mu[1]]), 1.0).to_event(1), obs=batch.x)


class _BrokenInit(ppvae.Model):
    def __init__(self, K: int = 2):
        super().__init__()
        raise RuntimeError("my constructor broke")


def test_run_mcmc_states_the_broadcasting_rule_before_any_chain_runs():
    # a model that does not broadcast over draws is evaluated draw by draw (issue 29), said once before sampling
    x = torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match=r"model '_NoBroadcast': its forward does not broadcast over a leading "
                      r"dimension of draws .* draw by draw \(slower\)\. To vectorize, index the data dimension from "
                      r"the right, e.g\. \(X \* w\)\.sum\(-1\)"):
        result = ppvae.run_mcmc(_NoBroadcast(), x, num_draws=10, warmup=10, progress=False)
    assert result.samples["mu"].shape[-1] == 2


def test_a_model_constructor_that_raises_is_named():
    ppvae.register_model("_broken_init_test")(_BrokenInit)
    with pytest.raises(ppvae.PPVAEError, match=r"model '_broken_init_test': its constructor raised RuntimeError: "
                       r"my constructor broke \(hyperparameters \{'K': 3\}\)"):
        ppvae.build_model("_broken_init_test", K="3")


def test_run_paths_of_the_wrong_type_or_an_existing_file(tmp_path):
    fit = ppvae.fit(GMM(K=2), ppvae.load_dataset("faithful"), steps=2, progress=False, check_convergence=False)
    for cls in (ppvae.Fit, ppvae.EMFit, ppvae.MCMCResult):
        with pytest.raises(ppvae.PPVAEError, match=r"path: expected a run directory \(str or os.PathLike\); got None"):
            cls.load(None)
    user_file = tmp_path / "notes.txt"
    user_file.write_text("keep me")
    with pytest.raises(ppvae.PPVAEError, match="save: expected a directory path; .*notes.txt is an existing file"):
        fit.save(str(user_file))
    assert user_file.read_text() == "keep me"


def test_log_marginal_refuses_more_samples_than_memory_before_allocating():
    from ppvae.models import PPCA

    x = ppvae.load_dataset("faithful", standardize=True)
    fit = ppvae.fit(PPCA(latent_dim=1), x, steps=2, progress=False, check_convergence=False)
    with pytest.raises(ppvae.PPVAEError, match=r"num_particles: 1000000000000 importance samples of one data point "
                       r"need at least 8e\+03 GB; .* GB are free on cpu; lower num_particles"):
        ppvae.log_marginal(fit, x, num_particles=10**12)


def test_predict_and_summary_of_a_cavi_run(tmp_path, capsys):
    import numpy as np

    counts = tmp_path / "counts.npy"
    np.save(counts, np.random.default_rng(0).poisson(1.0, (20, 30)).astype(float))
    run = tmp_path / "cavi"
    assert main(["cavi", "lda", "topics=2", "--data", str(counts), "--max-iter", "3", "--out", str(run)]) == 0
    assert main(["predict", str(run), "--num-draws", "4", "--out", str(tmp_path / "p.npz")]) == 0
    draws = np.load(tmp_path / "p.npz")
    assert draws["doc_topics"].shape == (4, 20, 2) and np.allclose(draws["doc_topics"].sum(-1), 1, atol=1e-5)
    assert main(["summary", str(run), "--num-draws", "4"]) == 0
