"""The three-coin model, the textbook example of EM (Li Hang, *Statistical Learning Methods*, 2012,
sec. 9.1.1; Collins' EM notes).

Coin A (P(heads) = pi) is tossed; on heads coin B (P(heads) = p) is tossed, on tails coin C
(P(heads) = q); only the second toss y_i is seen::

    pi, p, q ~ Beta(1, 1)
    z_i ~ Bernoulli(pi)                              (enumerated)
    y_i | z_i ~ Bernoulli(p if z_i = 1 else q)

Closed-form EM (Li 2012, eqs. 9.5-9.8): mu_i = pi p^y (1-p)^(1-y) / (pi p^y (1-p)^(1-y) +
(1-pi) q^y (1-q)^(1-y)); pi = mean(mu); p = sum mu y / sum mu; q = sum (1-mu) y / sum (1-mu).
The model is not identifiable (only pi p + (1 - pi) q is), so EM's fixed point depends on the start:
from (0.5, 0.5, 0.5) it is (0.5, 0.6, 0.6); from (0.4, 0.6, 0.7) it is (0.4064, 0.5368, 0.6432).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch

from ppvae import ClosedFormEM, Model, PPVAEError, register_model


@register_model("three_coin", "three-coin mixture of Bernoullis (the textbook EM example)")
class ThreeCoin(Model, ClosedFormEM):
    """Coin A picks coin B or C; the chosen coin's toss is observed (see module docstring)."""

    data_kinds = ("real", "binary")

    def __init__(self):
        super().__init__()

    def setup(self, data):
        super().setup(data)
        if data.x.dim() != 2 or data.x.shape[1] != 1:
            raise PPVAEError(f"data: three_coin expects one 0/1 toss per row, shape (N, 1); got {tuple(data.x.shape)}")
        if not ((data.x == 0) | (data.x == 1)).all():
            raise PPVAEError("data: three_coin expects tosses coded 0 or 1; got other values")

    def forward(self, batch):
        one = batch.x.new_tensor(1.0)
        pi = pyro.sample("pi", dist.Beta(one, one))
        p = pyro.sample("p", dist.Beta(one, one))
        q = pyro.sample("q", dist.Beta(one, one))
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Bernoulli(pi))
            heads = torch.where(z.bool(), p, q)
            pyro.sample("obs", dist.Bernoulli(heads), obs=batch.x[..., 0])

    def init_values(self, data, generator):
        return {"pi": data.x.new_tensor(0.5), "p": data.x.new_tensor(0.4), "q": data.x.new_tensor(0.6)}

    def em_init(self, x, generator, init=None):
        if init is not None:
            return {k: torch.as_tensor(float(init[k]), dtype=x.dtype) for k in ("pi", "p", "q")}
        u = torch.rand(3, generator=generator, dtype=x.dtype) * 0.8 + 0.1
        return {"pi": u[0], "p": u[1], "q": u[2]}

    def em_step(self, x, params):
        y = x[:, 0]
        pi, p, q = params["pi"], params["p"], params["q"]
        a = pi * p.pow(y) * (1 - p).pow(1 - y)
        b = (1 - pi) * q.pow(y) * (1 - q).pow(1 - y)
        mu = a / (a + b)
        new = {"pi": mu.mean(), "p": (mu * y).sum() / mu.sum(), "q": ((1 - mu) * y).sum() / (1 - mu).sum()}
        return new, (a + b).log()

    def em_to_sites(self, params) -> dict:
        return dict(params)


__all__ = ["ThreeCoin"]
