"""PPCA's closed forms (Tipping & Bishop 1999, eqs. 4-7) against Bayes' identity and scikit-learn."""

import pytest
import torch
from sklearn.decomposition import PCA

import ppvae
from ppvae.models import PPCA


def _simulate(n=60, D=5, q=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(D, q, generator=g, dtype=torch.float64)
    mu = torch.randn(D, generator=g, dtype=torch.float64)
    z, noise = (torch.randn(n, k, generator=g, dtype=torch.float64) for k in (q, D))
    x = z @ W.T + mu + 0.5 * noise
    return W, mu, x


def test_bayes_identity_links_marginal_and_posterior():
    """log p(x) = log p(x | z) + log p(z) - log p(z | x) at any z, to 1e-10 (float64)."""
    W, mu, x = _simulate()
    model = PPCA(latent_dim=2).set_parameters(W, mu, 0.5)
    means, cov = model.exact_posterior(x)
    z = torch.randn(len(x), 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 3
    lik = torch.distributions.Normal(z @ W.T + mu, 0.5).log_prob(x).sum(-1)
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    post = torch.distributions.MultivariateNormal(means, covariance_matrix=cov).log_prob(z)
    torch.testing.assert_close(lik + prior - post, model.log_marginal_exact(x), rtol=0, atol=1e-10)


def test_marginal_matches_sklearn_at_the_maximum_likelihood_parameters():
    """At Tipping & Bishop's ML solution (eqs. 7-8: sigma^2 = mean discarded eigenvalue,
    W = U_q (Lambda_q - sigma^2 I)^(1/2)) our log N(x | mu, W W^T + sigma^2 I) equals
    sklearn.decomposition.PCA.score_samples to 1e-9."""
    _, _, x = _simulate(n=200, D=6, q=2)
    pca = PCA(n_components=2).fit(x.numpy())
    sigma2 = float(pca.noise_variance_)
    U = torch.as_tensor(pca.components_.T)
    W = U * (torch.as_tensor(pca.explained_variance_) - sigma2).sqrt()
    model = PPCA(latent_dim=2).set_parameters(W, torch.as_tensor(pca.mean_), sigma2**0.5)
    reference = torch.as_tensor(pca.score_samples(x.numpy()))
    torch.testing.assert_close(model.log_marginal_exact(x), reference, rtol=0, atol=1e-9)


def test_setup_initializes_and_keeps_set_parameters():
    W, mu, x = _simulate(n=20)
    model = PPCA(latent_dim=2)
    model.setup(ppvae.Dataset(x.float()))
    assert model.W.shape == (5, 2) and model.mu.shape == (5,)
    torch.testing.assert_close(model.mu.detach(), x.float().mean(0))
    model.set_parameters(W, mu, 0.5, fixed=True)
    model.setup(ppvae.Dataset(x))  # does not overwrite
    torch.testing.assert_close(model.W.detach(), W)
    assert not any(p.requires_grad for p in model.parameters())


def test_bad_input():
    with pytest.raises(ppvae.PPVAEError, match="latent_dim"):
        PPCA(latent_dim=0)
    with pytest.raises(ppvae.PPVAEError, match="parameters"):
        PPCA(latent_dim=2).set_parameters(torch.zeros(5, 3), torch.zeros(5), 1.0)
    with pytest.raises(ppvae.PPVAEError, match="sigma"):
        PPCA(latent_dim=2).set_parameters(torch.zeros(5, 2), torch.zeros(5), 0.0)
