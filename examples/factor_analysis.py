"""A user's model: factor analysis of a CSV of one's own, with the closed-form marginal likelihood.

Story: per point, factors z_i ~ N(0, I_K) and x_i ~ N(mu + W^T z_i, diag psi), with priors
mu ~ N(0, 10^2), W ~ N(0, 1) (K x D) and noise variances psi_j ~ LogNormal(0, 1). Integrating z out
gives x_i ~ N(mu, W^T W + diag psi) (Bishop 2006, PRML eq. 12.65), so the importance-sampled
per-point log p(x_i | mu, W, psi) of ``ppvae evaluate`` can be checked against :func:`exact_log_marginal`.

``marginal=True`` writes the same model with z integrated out: x_i ~ N(mu, W^T W + diag psi) directly, so
only the 2 D + K D globals are latent. That is the formulation for NUTS (``ppvae mcmc``, ``ppvae compare``): the
posterior over the globals is the same, but the chain moves in 20 dimensions instead of 20 + N K (620 here), and
the scale coupling of W and z (W -> c W, z -> z / c) is gone. ``compare`` refuses per-point continuous latents
for MCMC, and a joint chain over them (``ppvae mcmc --allow-local``) answers the same question slower.

Command line (data: examples/data/fa.csv, 300 x 5 simulated by examples/make_example_data.py):

    ppvae fit examples/factor_analysis.py:FactorAnalysis K=2 --data examples/data/fa.csv --out runs/fa
    ppvae mcmc examples/factor_analysis.py:FactorAnalysis K=2 marginal=true --data examples/data/fa.csv \
        --out runs/fa-nuts
"""

import pyro
import pyro.distributions as dist
import torch

import ppvae


@ppvae.register_model("factor_analysis", "factor analysis x = mu + W^T z + N(0, diag psi), z ~ N(0, I_K) (example)")
class FactorAnalysis(ppvae.Model):
    # K counts factors, not mixture components: W is identified only up to rotation (W -> R W, z -> R z), which
    # no ordering of its rows removes, so the model does not declare ppvae.Mixture and nothing aligns labels
    # (compare, summaries); compare mu, psi, W^T W

    def __init__(self, K: int = 2, marginal: bool = False):
        super().__init__()
        self.K = ppvae.check_int("K", K, low=1)
        if not isinstance(marginal, bool):
            raise ppvae.PPVAEError(f"marginal: expected True or False; got {marginal!r}")
        self.marginal = marginal

    def forward(self, batch):
        x = batch.x
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(x.shape[1]), 10.0).to_event(1))
        W = pyro.sample("W", dist.Normal(x.new_zeros(self.K, x.shape[1]), 1.0).to_event(2))
        psi = pyro.sample("psi", dist.LogNormal(x.new_zeros(x.shape[1]), 1.0).to_event(1))
        with self.data_plate(batch):
            if self.marginal:  # z integrated out (PRML eq. 12.65); W^T W batched over vectorized draws of W
                cov = W.transpose(-1, -2) @ W + torch.diag_embed(psi)
                pyro.sample("x", dist.MultivariateNormal(mu, cov), obs=x)
            else:
                z = pyro.sample("z", dist.Normal(x.new_zeros(self.K), 1.0).to_event(1))
                pyro.sample("x", dist.Normal(mu + z @ W, psi.sqrt()).to_event(1), obs=x)

    def init_values(self, data, generator):
        return {"mu": data.x.mean(0), "psi": data.x.var(0) / 2}


def exact_log_marginal(values: dict, x: torch.Tensor) -> torch.Tensor:
    """log N(x_i; mu, W^T W + diag psi) per point, in float64, at the globals ``values``."""
    mu, W, psi = (values[k].double() for k in ("mu", "W", "psi"))
    return dist.MultivariateNormal(mu, W.T @ W + torch.diag(psi)).log_prob(x.double())
