"""Missing values (Dataset ``mask``, ppvae.ConditionsOnSubset): probabilistic PCA's masked log p(x_obs) against the
Gaussian marginal of the observed coordinates and its imputation against the Gaussian conditional mean; the VAE on
masked data; models without the capability refuse masked data in one line."""

import numpy as np
import pytest
import torch

import ppvae
from ppvae.models import GMM, PPCA, VAE

D, Q, N = 5, 2, 6


def _ppca(seed=0):
    g = torch.Generator().manual_seed(seed)
    W, mu = torch.randn(D, Q, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    model = PPCA(latent_dim=Q).set_parameters(W, mu, 0.6, fixed=True)
    x = torch.randn(N, Q, generator=g, dtype=torch.float64) @ W.T + mu + 0.6 * torch.randn(N, D, generator=g,
                                                                                          dtype=torch.float64)
    return model, W, mu, x


def _mask(seed):
    g = torch.Generator().manual_seed(100 + seed)
    mask = torch.rand(N, D, generator=g) < 0.5
    mask[torch.arange(N), torch.randint(D, (N,), generator=g)] = True  # at least one observed entry per point
    return mask


def _marginal_obs(W, mu, x, mask):
    """log N(x_o; mu_o, W_o W_o^T + sigma^2 I) per point, the observed coordinates' Gaussian marginal."""
    out = []
    for i in range(len(x)):
        o = mask[i]
        cov = W[o] @ W[o].T + 0.36 * torch.eye(int(o.sum()), dtype=W.dtype)
        out.append(torch.distributions.MultivariateNormal(mu[o], cov).log_prob(x[i, o]))
    return torch.stack(out)


def _conditional_mean(W, mu, x, mask):
    """E[x_m | x_o] = mu_m + C_mo C_oo^-1 (x_o - mu_o), C = W W^T + sigma^2 I."""
    C = W @ W.T + 0.36 * torch.eye(D, dtype=W.dtype)
    out = x.clone()
    for i in range(len(x)):
        o, m = mask[i], ~mask[i]
        out[i, m] = mu[m] + C[m][:, o] @ torch.linalg.solve(C[o][:, o], x[i, o] - mu[o])
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppca_masked_log_marginal_equals_the_observed_gaussian_marginal(seed):
    """Three random masks: IS with the prior proposal (K = 20,000) within 3 Monte Carlo standard errors of
    log N(x_o; mu_o, W_o W_o^T + sigma^2 I); the masked exact posterior as proposal gives it to 1e-8 (every weight
    equals p(x_o)); missing entries' values do not matter."""
    model, W, mu, x = _ppca()
    mask = _mask(seed)
    exact = _marginal_obs(W, mu, x, mask)
    data = ppvae.Dataset(torch.where(mask, x, torch.nan), name="masked")
    assert torch.equal(data.mask, mask)
    lm = ppvae.log_marginal((model, None), data, proposal="prior", num_particles=20_000, seed=seed, warn=False)
    assert ((lm.values - exact).abs() < 3 * lm.mc_stderr).all(), ((lm.values - exact) / lm.mc_stderr)
    assert lm.mc_stderr.max() < 0.05
    guide = model.posterior_guide()
    lm = ppvae.log_marginal((model, guide), data, num_particles=10, seed=seed)
    assert torch.allclose(lm.values, exact, atol=1e-8)
    full = ppvae.log_marginal((model, guide), ppvae.Dataset(x), num_particles=10).values
    assert torch.allclose(full, model.log_marginal_exact(x), atol=1e-8)  # unmasked: the full marginal as before


def test_ppca_imputation_mean_is_the_gaussian_conditional_mean():
    """impute's mean over 4,000 posterior predictive draws equals E[x_m | x_o] within 4 standard errors per entry
    (observed entries returned unchanged)."""
    model, W, mu, x = _ppca(seed=3)
    mask = _mask(4)
    data = ppvae.Dataset(torch.where(mask, x, torch.nan), name="masked")
    result = ppvae.exact_posterior(model, data)
    out = result.impute(data, num_draws=4000, seed=0)
    target = _conditional_mean(W, mu, x, mask)
    se = out["draws"].std(0) / np.sqrt(4000)
    assert torch.allclose(out["mean"][mask], x[mask], atol=1e-12) and torch.equal(out["mask"], mask)
    assert ((out["mean"] - target)[~mask].abs() < 4 * se[~mask] + 1e-12).all()
    assert se[~mask].max() < 0.05


def test_dataset_mask_validation():
    x = np.arange(12, dtype=float).reshape(4, 3)
    with pytest.raises(ppvae.PPVAEError, match="expected the data's shape"):
        ppvae.Dataset(x, mask=np.ones((4, 2), bool))
    with pytest.raises(ppvae.PPVAEError, match="boolean"):
        ppvae.Dataset(x, mask=np.ones((4, 3)))
    with pytest.raises(ppvae.PPVAEError, match="no observed value"):
        ppvae.Dataset(x, mask=np.array([[1, 1, 1], [0, 0, 0], [1, 0, 1], [1, 1, 1]], bool))
    y = x.copy()
    y[0, 0] = np.nan
    with pytest.raises(ppvae.PPVAEError, match="NaN entries are marked observed"):
        ppvae.Dataset(y, mask=np.ones((4, 3), bool))
    ds = ppvae.Dataset(y)
    assert ds.mask.sum() == 11 and ds.x[0, 0] == 0 and ds.subset([0, 1]).mask.shape == (2, 3)
    assert ds.batch(torch.tensor([0])).mask.tolist() == [[False, True, True]]
    assert ppvae.Dataset(x).mask is None


def test_csv_and_npy_missing_cells_are_read_as_missing(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("a,b,c\n1,,3\n4,NA,6\n7,8,nan\n")
    ds = ppvae.load_dataset(str(path))
    assert ds.mask.tolist() == [[True, False, True], [True, False, True], [True, True, False]]
    arr = np.array([[1.0, np.nan], [2.0, 3.0]])
    np.save(tmp_path / "m.npy", arr)
    assert ppvae.load_dataset(str(tmp_path / "m.npy")).mask.tolist() == [[True, False], [True, True]]


def test_models_without_the_capability_refuse_masked_data():
    x = torch.randn(20, 2)
    x[0, 1] = float("nan")
    with pytest.raises(ppvae.PPVAEError, match="has missing values: model 'gmm' has no conditioning on observed "
                                               "subsets") as info:
        ppvae.fit(GMM(K=2), ppvae.Dataset(x), steps=2, progress=False)
    assert "\n" not in str(info.value)


def test_vae_on_masked_pixels_counts_only_the_observed_ones():
    """The VAE's log-likelihood on a masked batch equals the sum over observed pixels of its Bernoulli terms, so
    log p(x_obs) >= log p(x) per point (the missing pixels' probability <= 1) at the same seed and particles."""
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(30, 10, generator=g) < 0.4).float()
    mask = torch.rand(30, 10, generator=g) < 0.6
    mask[:, 0] = True
    full, masked = ppvae.Dataset(x, kind="binary"), ppvae.Dataset(x, kind="binary", mask=mask)
    torch.manual_seed(0)
    model = VAE(latent_dim=2, hidden=8, depth=1)
    fit = ppvae.fit(model, masked, steps=30, batch_size=10, lr=1e-2, progress=False, check_convergence=False)
    z = torch.zeros(30, 2)
    tr = ppvae.Batch(x, mask=mask)
    site = pyro_trace_x(model, tr, z)
    logits = model.likelihood_dist(z).base_dist.logits
    by_hand = (torch.distributions.Bernoulli(logits=logits).log_prob(x) * mask).sum(-1)
    assert torch.allclose(site, by_hand, atol=1e-5)
    lo = ppvae.log_marginal(fit, masked, num_particles=200, warn=False).values
    hi = ppvae.log_marginal(fit, full, num_particles=200, warn=False).values
    assert (lo > hi).all()
    out = fit.impute(masked, num_draws=50)
    assert out["draws"].shape == (50, 30, 10) and torch.allclose(out["mean"][mask], x[mask])
    with pytest.raises(ppvae.PPVAEError, match="no missing values"):
        fit.impute(full)


def pyro_trace_x(model, batch, z):
    import pyro

    tr = pyro.poutine.trace(pyro.poutine.condition(model, data={"z": z})).get_trace(batch)
    return tr.nodes["x"]["fn"].log_prob(batch.x)


def test_weighted_imputation_is_the_conditional_mean_with_a_poor_guide():
    """impute_weighted with a guide that ignores the data (z ~ N(0, 1.5^2 I)): self-normalized IS over K = 20,000
    draws recovers E[x_m | x_o] to 0.03 (the posterior sd of E[x_m | z] is about 1, ESS > 1,000), where the
    guide's own predictive mean would be the prior mean mu_m."""
    import pyro
    import pyro.distributions as dist

    model, W, mu, x = _ppca(seed=3)
    mask = _mask(4)
    data = ppvae.Dataset(torch.where(mask, x, torch.nan), name="masked")

    def guide(batch):
        with model.data_plate(batch):
            pyro.sample("z", dist.Normal(torch.zeros(Q, dtype=torch.float64), 1.5).to_event(1))

    out = ppvae.impute_weighted((model, guide), data, num_particles=20_000, seed=0)
    target = _conditional_mean(W, mu, x, mask)
    assert out["ess"].min() > 1000
    assert torch.allclose(out["mean"][mask], x[mask])
    assert (out["mean"] - target)[~mask].abs().max() < 0.03
    assert (mu.expand_as(x) - target)[~mask].abs().max() > 0.3  # the check has teeth
    with pytest.raises(ppvae.PPVAEError, match="no missing values"):
        ppvae.impute_weighted((model, guide), ppvae.Dataset(x), num_particles=10)


def test_standardize_uses_the_observed_entries(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("a,b\n1,10\n2,\n3,30\n4,20\n")
    ds = ppvae.load_dataset(str(path), standardize=True)
    b = np.array([10.0, 30.0, 20.0])
    np.testing.assert_allclose(ds.x[[0, 2, 3], 1].numpy(), (b - b.mean()) / b.std(ddof=1), rtol=1e-5)
    assert ds.x[1, 1] == 0 and not ds.mask[1, 1]
    np.testing.assert_allclose(ds.meta["standardized"]["mean"], [2.5, 20.0], rtol=1e-6)
