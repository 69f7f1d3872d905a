"""Variational Bayes over the weights of a network (Kingma & Welling 2013, "Auto-Encoding Variational Bayes",
app. F; Blundell et al. 2015, "Weight Uncertainty in Neural Networks", sec. 3).

Every parameter tensor theta_j of an ``nn.Module`` becomes a global sample site ``"<prefix>.<name>"`` (outside
every plate) with the prior and a mean-field Gaussian variational factor::

    p(theta_j) = N(theta_j; 0, prior_scale^2 I)                      (model: :meth:`BayesianWeights.prior`)
    q(theta_j) = N(theta_j; m_j, diag s_j^2),  s_j = softplus(rho_j) (guide: :meth:`BayesianWeights.posterior`)

and the network is applied with the drawn weights by :func:`torch.func.functional_call` (its own parameters serve
only as the initial m_j). With the likelihood in the data plate (scaled by N/M on a minibatch of M of N points),
the SVI objective of one step is

    L_step = (N/M) [ sum_{i in batch} E_q[log p(x_i | z_i, theta) + log p(z_i) - log q(z_i | x_i)]
                     - (M/N) KL(q(theta) || p(theta)) ]

(app. F, the minibatch estimator of L(phi; X)): the weight KL enters every step with weight M/N relative to the
batch's points, so over one epoch of N/M disjoint minibatches the bracketed terms sum to the full-data ELBO, with
KL(q(theta) || p(theta)) counted exactly once (``tests/models/test_vae.py`` checks this identity and the ELBO of a
linear-Gaussian decoder against its closed form).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.func import functional_call

from ppvae._util.validation import check_float

__all__ = ["BayesianWeights"]


class BayesianWeights(nn.Module):
    """The parameters of ``net`` as global latent sites ``"<prefix>.<name>"``: the prior N(0, ``prior_scale``^2),
    the mean-field Gaussian q(theta) (locations initialized at ``net``'s own values, scales at ``init_scale``), and
    ``net`` applied with given weights (``apply``). ``net`` is not registered here (it lives in its model)."""

    def __init__(self, net: nn.Module, prefix: str, prior_scale: float = 1.0, init_scale: float = 1e-3):
        super().__init__()
        self.prior_scale = check_float("prior_scale", prior_scale, low=0.0, strict=True)
        init_scale = check_float("init_scale", init_scale, low=0.0, strict=True)
        self.__dict__["net"] = net
        self.prefix = prefix
        self.names = [name for name, _ in net.named_parameters()]
        self.loc = nn.ParameterList([nn.Parameter(p.detach().clone()) for p in net.parameters()])
        raw = math.log(math.expm1(init_scale))  # softplus^-1
        self.raw_scale = nn.ParameterList([nn.Parameter(torch.full_like(p, raw)) for p in net.parameters()])

    def site(self, name: str) -> str:
        """The sample-site name of the parameter ``name`` of the network."""
        return f"{self.prefix}.{name}"

    def scales(self) -> list[torch.Tensor]:
        """The standard deviations s_j of q(theta), one tensor per parameter."""
        return [nn.functional.softplus(r) for r in self.raw_scale]

    def prior(self) -> dict[str, torch.Tensor]:
        """Model side: one draw theta ~ p(theta) (or the value the guide supplies), name -> tensor."""
        out = {}
        for name, loc in zip(self.names, self.loc, strict=True):
            fn = dist.Normal(loc.new_zeros(()), self.prior_scale).expand(loc.shape).to_event(loc.dim())
            out[name] = pyro.sample(self.site(name), fn)
        return out

    def posterior(self) -> dict[str, torch.Tensor]:
        """Guide side: one reparameterized draw theta ~ q(theta), name -> tensor."""
        out = {}
        for name, loc, scale in zip(self.names, self.loc, self.scales(), strict=True):
            out[name] = pyro.sample(self.site(name), dist.Normal(loc, scale).to_event(loc.dim()))
        return out

    def mean(self) -> dict[str, torch.Tensor]:
        """The posterior means m_j (what the reports decode with)."""
        return dict(zip(self.names, self.loc, strict=True))

    def apply(self, weights: dict[str, torch.Tensor], *args):
        """``net(*args)`` with its parameters replaced by ``weights`` (name -> tensor of the parameter's shape).
        A ``Sequential`` of ``Linear`` layers and parameter-free modules (what :func:`ppvae.model.nn.mlp` builds) is
        applied layer by layer with ``F.linear``, which ``torch.jit.trace`` records (``fit(jit=True)``), and takes
        weights with leading draw dimensions (S, 1, out, in) (vectorized draws: ``predict``, diagnostics); any other
        network goes through :func:`torch.func.functional_call` (one draw at a time, eager only)."""
        net = self.net
        if not isinstance(net, nn.Sequential) or len(args) != 1 or not all(
                isinstance(m, nn.Linear) or not any(True for _ in m.parameters()) for m in net):
            return functional_call(net, weights, args)
        h = args[0]
        for i, layer in enumerate(net):
            if isinstance(layer, nn.Linear):
                h = _linear(h, weights[f"{i}.weight"], weights.get(f"{i}.bias"))
            else:
                h = layer(h)
        return h

    @torch.no_grad()
    def kl(self) -> torch.Tensor:
        """KL(q(theta) || p(theta)) in closed form (a sum over every weight), for checks and reports."""
        total = torch.zeros((), dtype=torch.float64)
        for loc, scale in zip(self.loc, self.scales(), strict=True):
            q = dist.Normal(loc.double(), scale.double())
            p = dist.Normal(torch.zeros((), dtype=torch.float64), float(self.prior_scale))
            total = total + torch.distributions.kl_divergence(q, p).sum()
        return total


def _linear(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """h W^T + b; a weight with leading dimensions (draws, 1, out, in) broadcasts against h's leading dimensions."""
    if weight.dim() == 2:
        return nn.functional.linear(h, weight, bias)
    out = (h.unsqueeze(-2) @ weight.transpose(-1, -2)).squeeze(-2)
    return out if bias is None else out + bias
