"""A user's model: hierarchical logistic regression with correlated group effects (LKJ prior).

    mu ~ N(0, 2^2 I_2),   sigma_k ~ HalfNormal(1) (k = 1, 2),   L ~ LKJCholesky(2, eta),
    z_g ~ N(0, I_2),   b_g = mu + diag(sigma) L z_g   (g = 1..G; intercept and slope of group g),
    y_i ~ Bernoulli(logit^-1(b_{g_i,0} + b_{g_i,1} x_i)),

as in the Stan user's guide (sec. 1.13, "multivariate priors for hierarchical models") and NumPyro's
examples: the group effects b_g are correlated, their correlation matrix L L^T has the LKJ prior
(Lewandowski, Kurowicka & Joe 2009), and writing b_g through z_g (the non-centered form) avoids the funnel.

Data: rows (group, x, y) with y in {0, 1} the response (``examples/data/hier_logistic.csv``, written by
``examples/make_example_data.py``: 8 groups x 15 rows). The group effects z are one latent (G, 2) block
outside the data plate: every latent is global, the rows are i.i.d. given them (``data_structure = "points"``),
so ``compare`` holds out rows within groups. The number of groups is a hyperparameter (``groups``), so
a held-out part never changes the model.

    ppvae fit examples/hier_logistic.py:HierLogistic --data examples/data/hier_logistic.csv:target=y --steps 2000
"""

import pyro
import pyro.distributions as dist
from pyro.ops.indexing import Vindex

import ppvae


@ppvae.register_model("hier_logistic", "hierarchical logistic regression, correlated group effects (example)")
class HierLogistic(ppvae.Model):
    """Hierarchical logistic regression (module docstring); x = (group, covariate), y in {0, 1}."""

    def __init__(self, groups: int = 8, lkj_eta: float = 2.0):
        super().__init__()
        self.groups = ppvae.check_int("groups", groups, low=1)
        self.lkj_eta = ppvae.check_float("lkj_eta", lkj_eta, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        g = data.x[:, 0] if data.x.dim() == 2 and data.x.shape[1] == 2 else None
        if g is None or not data.has_response:
            raise ppvae.PPVAEError(f"data: hier_logistic expects rows (group, x) and a response y; got x of shape "
                                   f"{tuple(data.x.shape)}")
        if bool(((g != g.round()) | (g < 0) | (g >= self.groups)).any()):
            raise ppvae.PPVAEError(f"data: hier_logistic expects group ids 0..{self.groups - 1} in column 1")

    def forward(self, batch):
        x = batch.x
        mu = pyro.sample("mu", dist.Normal(x.new_zeros(2), 2.0).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(x.new_ones(2)).to_event(1))
        corr = pyro.sample("L", dist.LKJCholesky(2, x.new_tensor(self.lkj_eta)))
        z = pyro.sample("z", dist.Normal(x.new_zeros(self.groups, 2), 1.0).to_event(2))
        # b_g = mu + diag(sigma) L z_g for every group, batched over any leading draw dims
        b = mu.unsqueeze(-2) + (z @ (sigma.unsqueeze(-1) * corr).transpose(-1, -2))
        rows = Vindex(b)[..., x[:, 0].long(), :]  # Vindex: the draw dims stay left of the rows' dim
        with self.data_plate(batch):
            pyro.sample("y", dist.Bernoulli(logits=rows[..., 0] + rows[..., 1] * x[:, 1]), obs=batch.y)
