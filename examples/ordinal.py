"""A user's model: ordinal regression with ordered cutpoints (proportional odds; McCullagh 1980).

    beta ~ N(0, prior_sd^2 I),   c_1 < ... < c_{K-1} ~ N(0, cut_sd^2) ordered,
    P(y_i <= k) = logit^-1(c_{k+1} - x_i . beta),   y_i in {0, ..., K-1},

written with Pyro's ``OrderedLogistic`` and the cutpoints drawn through ``OrderedTransform`` (the ordered
vector of the Stan reference manual, sec. 10.6), as in NumPyro's ordinal-regression example.

Data: ``examples/data/ordinal.csv`` (written by ``examples/make_example_data.py``: 150 rows, covariates x0, x1
and a response y in {0, 1, 2}).

    ppvae fit examples/ordinal.py:Ordinal --data examples/data/ordinal.csv:target=y --steps 2000
"""

import pyro
import pyro.distributions as dist
from pyro.distributions.transforms import OrderedTransform

import ppvae


@ppvae.register_model("ordinal", "ordinal regression with ordered cutpoints (example)")
class Ordinal(ppvae.Model):
    """Ordinal (proportional-odds) regression (module docstring); y in {0, ..., K-1}."""

    def __init__(self, K: int = 3, prior_sd: float = 2.0, cut_sd: float = 5.0):
        super().__init__()
        self.K = ppvae.check_int("K", K, low=2)
        self.prior_sd = ppvae.check_float("prior_sd", prior_sd, low=0.0, strict=True)
        self.cut_sd = ppvae.check_float("cut_sd", cut_sd, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        y = data.y
        if y is None or bool(((y != y.round()) | (y < 0) | (y >= self.K)).any()):
            raise ppvae.PPVAEError(f"data: ordinal expects a response y in 0..{self.K - 1} "
                                   "(--data file.csv:target=COLUMN)")

    def forward(self, batch):
        x = batch.x
        beta = pyro.sample("beta", dist.Normal(x.new_zeros(x.shape[1]), self.prior_sd).to_event(1))
        base = dist.Normal(x.new_zeros(self.K - 1), self.cut_sd).to_event(1)
        cut = pyro.sample("cutpoints", dist.TransformedDistribution(base, [OrderedTransform()]))
        with self.data_plate(batch):
            # (x * beta).sum(-1): broadcasts over vectorized draws of beta (MCMC, evaluation)
            eta = (x * beta).sum(-1)
            pyro.sample("y", dist.OrderedLogistic(eta, cut), obs=None if batch.y is None else batch.y.long())
