"""A user's model: Bayesian linear regression, conjugate, with its exact posterior and evidence.

Story: coefficients w_j ~ N(0, prior_sd^2) and intercept b ~ N(0, prior_sd^2); for each point
y_i ~ N(x_i . w + b, noise_sd^2) with the noise sd known. Writing A = [X, 1] (the intercept as a
column of ones) and theta = (w, b), the posterior is Gaussian (Bishop 2006, PRML eqs. 3.53-3.54):
Sigma = (I / prior_sd^2 + A^T A / noise_sd^2)^-1, m = Sigma A^T y / noise_sd^2, and the evidence is
y ~ N(0, noise_sd^2 I + prior_sd^2 A A^T) (PRML eq. 3.86), both computed by :func:`exact`.

Command line (from the repository root; data: examples/data/regression.csv, column y the response):

    ppvae fit examples/blr.py:BayesianLinearRegression noise_sd=0.5 --data examples/data/regression.csv:target=y \
        --guide auto_mvn --out runs/blr
"""

import pyro
import pyro.distributions as dist
import torch

import ppvae


@ppvae.register_model("blr", "Bayesian linear regression y = x.w + b + N(0, noise_sd^2), conjugate (example)")
class BayesianLinearRegression(ppvae.Model):
    def __init__(self, prior_sd: float = 1.0, noise_sd: float = 1.0):
        super().__init__()
        self.prior_sd = ppvae.check_float("prior_sd", prior_sd, low=0.0, strict=True)
        self.noise_sd = ppvae.check_float("noise_sd", noise_sd, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        if not data.has_response:
            raise ppvae.PPVAEError("data: blr expects a real-valued response y: Dataset(x, y) or "
                                   "--data file.csv:target=COLUMN")

    def forward(self, batch):
        zeros = batch.x.new_zeros(batch.x.shape[1])
        w = pyro.sample("w", dist.Normal(zeros, self.prior_sd).to_event(1))
        b = pyro.sample("b", dist.Normal(zeros.sum(), self.prior_sd))
        with self.data_plate(batch):
            # (x * w).sum(-1), not x @ w: broadcasts over vectorized draws of w (MCMC, evaluation)
            pyro.sample("y", dist.Normal((batch.x * w).sum(-1) + b, self.noise_sd), obs=batch.y)


def exact(model: BayesianLinearRegression, x: torch.Tensor, y: torch.Tensor):
    """(posterior mean of (w, b), its covariance, log p(y | X)) in float64, in closed form."""
    a = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    y = y.double()
    precision = torch.eye(a.shape[1], dtype=torch.float64) / model.prior_sd ** 2 + a.T @ a / model.noise_sd ** 2
    cov = torch.linalg.inv(precision)
    mean = cov @ a.T @ y / model.noise_sd ** 2
    marginal_cov = model.noise_sd ** 2 * torch.eye(len(y), dtype=torch.float64) + model.prior_sd ** 2 * a @ a.T
    evidence = dist.MultivariateNormal(torch.zeros(len(y), dtype=torch.float64), marginal_cov).log_prob(y)
    return mean, cov, float(evidence)
