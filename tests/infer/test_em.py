"""Classical EM: monotone log-likelihood, known fixed points, and agreement with scikit-learn's EM."""

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import ppvae
from ppvae.infer.em import fit_em
from ppvae.models import GMM, ThreeCoin


def _assert_monotone(history):
    for h in history:
        diffs = np.diff(h)
        # float64 round-off on a sum of 272 terms is ~1e-12; any real decrease would be far larger
        assert (diffs >= -1e-9).all(), f"log-likelihood decreased by {diffs.min()}"


@pytest.mark.parametrize("covariance", ["full", "diag"])
@pytest.mark.parametrize("K", [2, 3])
def test_gmm_em_is_monotone_at_every_iteration(faithful, covariance, K):
    result = fit_em(GMM(K=K, covariance=covariance), faithful, restarts=4, seed=1)
    assert all(len(h) > 2 for h in result.traces)
    _assert_monotone(result.traces)


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_em_matches_sklearn_maximum(faithful, covariance):
    from sklearn.mixture import GaussianMixture

    x = faithful.x.double().numpy()
    ref = GaussianMixture(2, covariance_type=covariance, n_init=10, tol=1e-12, max_iter=5000,
                          reg_covar=1e-6, random_state=0).fit(x)
    ours = fit_em(GMM(K=2, covariance=covariance), faithful, restarts=10, seed=0)
    # the bar: the same maximum to within 1e-3 per point
    assert abs(ours.log_likelihood_total / len(x) - ref.score(x)) < 1e-3
    # known value for the full-covariance fit on Old Faithful
    if covariance == "full":
        assert ours.log_likelihood_total == pytest.approx(-1130.264, abs=1e-3)


def test_gmm_em_log_likelihood_equals_independent_computation(faithful):
    res = fit_em(GMM(K=2), faithful, restarts=3)
    x = faithful.x.double().numpy()
    p = {k: v.numpy() for k, v in res.params.items()}
    dens = sum(p["weights"][k] * multivariate_normal(p["locs"][k], p["covs"][k]).pdf(x) for k in range(2))
    assert res.log_likelihood_total == pytest.approx(np.log(dens).sum(), abs=1e-8)


def test_engine_enumeration_equals_closed_form_at_em_params(faithful):
    """The engine's generic enumerated log-likelihood agrees with the mixture formula (float64)."""
    from ppvae.model.enumeration import data_plate_log_prob, enumerated_trace

    model = GMM(K=2)
    res = fit_em(model, faithful, restarts=3)
    values = {k: v for k, v in model.em_to_sites(res.params).items()}
    batch = ppvae.Dataset(faithful.x.double()).batch()
    model.double()
    trace = enumerated_trace(model, batch, 1, values)
    ll = data_plate_log_prob(trace)
    assert ll.shape == (272,)
    assert ll.sum().item() == pytest.approx(res.log_likelihood_total, abs=1e-8)


@pytest.mark.parametrize(
    "init, expected",
    [((0.5, 0.5, 0.5), (0.5, 0.6, 0.6)), ((0.4, 0.6, 0.7), (0.4064, 0.5368, 0.6432))],
)
def test_three_coin_em_fixed_points(coin_tosses, init, expected):
    res = fit_em(ThreeCoin(), coin_tosses, init=dict(zip(("pi", "p", "q"), init, strict=True)))
    got = tuple(round(float(res.params[k]), 4) for k in ("pi", "p", "q"))
    assert got == expected
    _assert_monotone(res.traces)


def test_three_coin_exact_log_likelihood(coin_tosses):
    """log p(y) = sum_i log(pi p^y (1-p)^(1-y) + (1-pi) q^y (1-q)^(1-y)) by hand."""
    res = fit_em(ThreeCoin(), coin_tosses, init={"pi": 0.4, "p": 0.6, "q": 0.7})
    pi, p, q = (float(res.params[k]) for k in ("pi", "p", "q"))
    y = coin_tosses[:, 0].numpy()
    by_hand = np.log(pi * p**y * (1 - p) ** (1 - y) + (1 - pi) * q**y * (1 - q) ** (1 - y)).sum()
    assert res.log_likelihood_total == pytest.approx(by_hand, abs=1e-10)
    # the marginal P(y = 1) = pi p + (1 - pi) q is pinned at the sample mean, 0.6
    assert pi * p + (1 - pi) * q == pytest.approx(0.6, abs=1e-6)


def test_em_rejects_bad_input(faithful):
    with pytest.raises(ppvae.PPVAEError, match="restarts"):
        fit_em(GMM(K=2), faithful, restarts=0)
    with pytest.raises(ppvae.PPVAEError, match="K: expected at most N"):
        fit_em(GMM(K=300), faithful)
    with pytest.raises(ppvae.PPVAEError, match="0 or 1"):
        fit_em(ThreeCoin(), torch.tensor([[0.0], [2.0]]))


def test_em_result_saves(tmp_path, faithful):
    res = fit_em(GMM(K=2), faithful, restarts=2)
    res.save(str(tmp_path))
    loaded = torch.load(tmp_path / "params.pt", weights_only=True)
    assert torch.equal(loaded["params"]["locs"], res.params["locs"])


def test_emfit_repr_is_a_one_line_summary(faithful):
    # before: the dataclass repr printed every restart's whole log-likelihood trace
    em = fit_em(GMM(K=2), faithful, restarts=4, seed=0)
    text = repr(em)
    assert text == (f"EMFit(model=gmm(K=2, covariance='full', concentration=1.0, reg_covar=1e-06), "
                    f"log_likelihood_total={em.log_likelihood_total:.4f}, restarts=4, best_restart={em.best_restart}, "
                    f"iterations={em.num_iterations}, converged={em.converged}, time_s={em.time_s:.2f})")
    assert "\n" not in text and len(text) < 200
