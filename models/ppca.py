"""Probabilistic PCA (Tipping & Bishop 1999, "Probabilistic principal component analysis", eqs. 2-7)::

    z_i ~ N(0, I_q)                                  (local, inside the data plate)
    x_i | z_i ~ N(W z_i + mu, sigma^2 I_D)

W (D x q), mu (D) and sigma are *parameters* (PyroParams fitted by maximum likelihood alongside the
guide), not latent variables: the model has no global latents, so ``log_marginal`` gives
log p(x_i | W, mu, sigma) directly. :meth:`PPCA.set_parameters` fixes them to known values. Closed
forms (Tipping & Bishop 1999, eqs. 4-7)::

    log p(x_i) = log N(x_i | mu, W W^T + sigma^2 I)
    p(z_i | x_i) = N(M^-1 W^T (x_i - mu), sigma^2 M^-1),    M = W^T W + sigma^2 I_q.

It is also the example of a model a user writes: ``forward`` is the generative story and nothing else.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroParam

from ppvae import ConditionsOnSubset, ExactPosterior, Model, PPVAEError, observed_part, register_model


@register_model("ppca", "probabilistic PCA: x = W z + mu + noise, z ~ N(0, I) (Tipping & Bishop 1999)")
class PPCA(Model, ExactPosterior, ConditionsOnSubset):
    """Linear-Gaussian latent model with q latent dimensions; see the module docstring. With missing values (a
    ``Dataset`` with a ``mask``) the likelihood counts the observed coordinates o_i of each point only, so
    p(x_i,o) = N(mu_o, W_o W_o^T + sigma^2 I) and p(z_i | x_i,o) uses W_o (rows of W at o_i)."""

    data_kinds = ("real", "binary", "image")

    def __init__(self, latent_dim: int = 2):
        super().__init__()
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise PPVAEError(f"latent_dim: expected an integer >= 1; got {latent_dim!r}")
        self.latent_dim = latent_dim

    def setup(self, data):
        """Create W (small random, seed 0), mu (data mean), sigma (mean column sd) unless already set."""
        super().setup(data)
        x = data.x.reshape(len(data), -1)
        if hasattr(self, "W_unconstrained"):
            return
        gen = torch.Generator().manual_seed(0)
        W = 0.1 * torch.randn(x.shape[1], self.latent_dim, generator=gen, dtype=x.dtype)
        self.set_parameters(W, x.mean(0), x.std(0).mean().clamp_min(1e-3) if len(x) > 1 else x.new_tensor(1.0))

    def set_parameters(self, W, mu, sigma, fixed: bool = False) -> "PPCA":
        """Set W (D, q), mu (D,) and sigma (scalar > 0); ``fixed=True`` keeps them out of training."""
        W = torch.as_tensor(W)
        W = W if W.is_floating_point() else W.to(torch.get_default_dtype())
        mu, sigma = (torch.as_tensor(v, dtype=W.dtype) for v in (mu, sigma))
        if W.dim() != 2 or W.shape[1] != self.latent_dim or mu.shape != (W.shape[0],) or sigma.numel() != 1:
            raise PPVAEError(
                f"parameters: expected W ({'D'}, {self.latent_dim}), mu (D,), scalar sigma; "
                f"got {tuple(W.shape)}, {tuple(mu.shape)}, {tuple(sigma.shape)}"
            )
        if not float(sigma) > 0:
            raise PPVAEError(f"sigma: expected a number > 0; got {float(sigma)}")
        self.W = PyroParam(W.clone())
        self.mu = PyroParam(mu.clone())
        self.sigma = PyroParam(sigma.reshape(()).clone(), constraint=dist.constraints.positive)
        for p in self.parameters():
            p.requires_grad_(not fixed)
        return self

    def masked_site(self) -> str:
        return "obs"

    def forward(self, batch):
        x = batch.x.reshape(len(batch), -1)
        mask = None if batch.mask is None else batch.mask.reshape(len(batch), -1)
        W, mu = self.W, self.mu
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("obs", observed_part(dist.Normal(z @ W.T + mu, self.sigma).to_event(1), mask), obs=x)

    # -- closed forms -----------------------------------------------------------------------------
    @torch.no_grad()
    def log_marginal_exact(self, x) -> torch.Tensor:
        """Per-point log N(x_i | mu, W W^T + sigma^2 I) (Tipping & Bishop 1999, eq. 4), float64."""
        W, mu, s2 = self.W.double(), self.mu.double(), self.sigma.double() ** 2
        x = torch.as_tensor(x).reshape(len(x), -1).double()
        cov = W @ W.T + s2 * torch.eye(W.shape[0], dtype=W.dtype)
        return dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x)

    @torch.no_grad()
    def exact_posterior(self, x, mask=None) -> tuple[torch.Tensor, torch.Tensor]:
        """p(z_i | x_i) = N(M^-1 W^T (x_i - mu), sigma^2 M^-1): returns (means (N, q), covariance (q, q))
        in float64 (Tipping & Bishop 1999, eqs. 6-7). With ``mask`` (N, D), True = observed, W and x - mu keep
        the observed rows of each point only (W_o): M_i = W_o^T W_o + sigma^2 I and the covariance is (N, q, q)."""
        W, mu, s2 = self.W.double(), self.mu.double(), self.sigma.double() ** 2
        x = torch.as_tensor(x).reshape(len(x), -1).double()
        eye = torch.eye(self.latent_dim, dtype=W.dtype)
        if mask is None:
            M = W.T @ W + s2 * eye
            means = torch.linalg.solve(M, W.T @ (x - mu).T).T
            return means, s2 * torch.linalg.inv(M)
        m = torch.as_tensor(mask).reshape(len(x), -1).to(W.dtype)
        Wo = W[None] * m[..., None]  # (N, D, q): the rows of missing coordinates zeroed
        M = Wo.transpose(1, 2) @ Wo + s2 * eye
        means = torch.linalg.solve(M, (Wo.transpose(1, 2) @ ((x - mu) * m)[..., None]))[..., 0]
        return means, s2 * torch.linalg.inv(M)

    def posterior_guide(self, x=None, y=None):
        """A guide drawing z_i from the exact posterior p(z_i | x_i) of the batch it is called on (``x`` is not
        needed: the posterior is per point): used as proposal, every weight equals p(x_i)."""

        def guide(batch):
            x = batch.x.reshape(len(batch), -1)
            means, cov = self.exact_posterior(x, batch.mask)
            with self.data_plate(batch):
                pyro.sample("z", dist.MultivariateNormal(means.to(x.dtype), covariance_matrix=cov.to(x.dtype)))

        return guide


__all__ = ["PPCA"]
