"""A user's model: a mixture of K linear regressions (a "mixture of experts" with constant gates).

Story: weights pi ~ Dirichlet(1); per component k, slopes w_k ~ N(0, prior_sd^2 I) and intercept
b_k ~ N(0, prior_sd^2); a shared noise sd sigma ~ LogNormal(0, 1); per point a component
z_i ~ Categorical(pi) (summed out exactly by enumeration) and y_i ~ N(x_i . w_z + b_z, sigma^2).
Its components are exchangeable (label switching): compare SVI and NUTS after ordering them,
e.g. ``ppvae mcmc ... --order w:0`` samples the region w_1,0 < w_2,0.

Command line (data: examples/data/mixreg.csv, response column y):

    ppvae fit examples/mixreg.py:MixtureOfRegressions --data examples/data/mixreg.csv:target=y --out runs/mixreg
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

import ppvae


@ppvae.register_model("mixreg", "mixture of K linear regressions, components summed out (example)")
class MixtureOfRegressions(ppvae.Model, ppvae.Mixture):
    def __init__(self, K: int = 2, prior_sd: float = 3.0):
        super().__init__()
        self.K = ppvae.check_int("K", K, low=1)
        self.prior_sd = ppvae.check_float("prior_sd", prior_sd, low=0.0, strict=True)

    def num_components(self):  # ppvae.Mixture: K exchangeable components, labels aligned across draws
        return self.K

    def forward(self, batch):
        x, zeros = batch.x, batch.x.new_zeros(self.K)
        weights = pyro.sample("weights", dist.Dirichlet(zeros + 1.0))
        # components as event dimensions, not a plate (as the zoo's GMM): Vindex then broadcasts them alike
        # under enumeration of z and vectorized draws (MCMC log-likelihoods, evaluation)
        w = pyro.sample("w", dist.Normal(x.new_zeros(self.K, x.shape[1]), self.prior_sd).to_event(2))
        b = pyro.sample("b", dist.Normal(zeros, self.prior_sd).to_event(1))
        sigma = pyro.sample("sigma", dist.LogNormal(zeros.sum(), 1.0))
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Categorical(weights))
            mean = (x * Vindex(w)[..., z, :]).sum(-1) + Vindex(b)[..., z]
            pyro.sample("y", dist.Normal(mean, sigma), obs=batch.y)

    def setup(self, data):
        super().setup(data)
        if not data.has_response:
            raise ppvae.PPVAEError("data: mixreg expects a real-valued response y: Dataset(x, y) or "
                                   "--data file.csv:target=COLUMN")

    def init_values(self, data, generator):
        # components start apart: slopes spread around 0, intercepts at quantiles of y
        q = torch.linspace(0.25, 0.75, self.K, dtype=data.y.dtype)
        slopes = torch.linspace(1.0, -1.0, self.K, dtype=data.x.dtype).unsqueeze(-1).expand(self.K, data.x.shape[1])
        return {"w": slopes.clone(), "b": torch.quantile(data.y, q), "sigma": data.y.std() / 2}
