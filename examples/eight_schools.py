"""A user's model: eight schools (Rubin 1981; Gelman et al. 2013, BDA3 sec. 5.5), non-centered.

    mu ~ N(0, 5^2),   tau ~ HalfCauchy(5),   eta_j ~ N(0, 1),   theta_j = mu + tau eta_j,
    y_j ~ N(theta_j, sigma_j^2),   j = 1..8,

with the standard errors sigma_j known. Writing theta through eta (the non-centered form; Papaspiliopoulos
et al. 2007) removes the funnel between tau and the school effects that troubles samplers and Gaussian
guides alike. Each row is a school (a group) and its effect eta_j is sampled in the data plate beside its
y_j; the model declares ``data_structure = "groups"``, so the school effects are globals of the posterior
(NUTS samples them, ``compare`` compares them and scores the schools by PSIS-LOO instead of holding schools
out, since a held-out school's effect is informed by its own row only).

Data: :func:`schools` (columns y and sigma of BDA3 table 5.2), or on the command line a CSV with those columns:

    ppvae fit examples/eight_schools.py:EightSchools --data examples/data/schools.csv --guide auto_mvn --steps 5000
"""

import pyro
import pyro.distributions as dist
import torch

import ppvae

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


@ppvae.register_model("eight_schools", "eight schools, non-centered: theta_j = mu + tau eta_j (example)")
class EightSchools(ppvae.Model):
    """Non-centered eight schools (module docstring); data x = (y_j, sigma_j), one row per school."""

    data_structure = "groups"

    def __init__(self, mu_sd: float = 5.0, tau_scale: float = 5.0):
        super().__init__()
        self.mu_sd = ppvae.check_float("mu_sd", mu_sd, low=0.0, strict=True)
        self.tau_scale = ppvae.check_float("tau_scale", tau_scale, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        if data.x.dim() != 2 or data.x.shape[1] != 2:
            raise ppvae.PPVAEError(f"data: eight_schools expects (J, 2) rows (y, sigma); got {tuple(data.x.shape)}")
        if not bool((data.x[:, 1] > 0).all()):
            raise ppvae.PPVAEError("data: eight_schools expects positive standard errors sigma in column 2")

    def forward(self, batch):
        x = batch.x
        mu = pyro.sample("mu", dist.Normal(x.new_tensor(0.0), self.mu_sd))
        tau = pyro.sample("tau", dist.HalfCauchy(x.new_tensor(self.tau_scale)))
        with self.data_plate(batch):
            eta = pyro.sample("eta", dist.Normal(x.new_tensor(0.0), 1.0))
            pyro.sample("y", dist.Normal(mu + tau * eta, x[:, 1]), obs=x[:, 0])


def schools(dtype=torch.float32) -> ppvae.Dataset:
    """The eight schools data (BDA3 table 5.2) as a Dataset with x = (y, sigma)."""
    return ppvae.Dataset(torch.tensor([Y, SIGMA], dtype=dtype).T, name="eight_schools")
