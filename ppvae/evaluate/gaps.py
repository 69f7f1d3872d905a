"""Inference suboptimality: the per-datapoint guide and the gap decomposition of Cremer et al. (2018).

Cremer, Li & Duvenaud (2018), "Inference Suboptimality in Variational Autoencoders", eq. 3-5: for a
fitted model with an amortized guide q_phi(z | x),

    log p(x) - L[q_phi]  =  (log p(x) - L[q*])  +  (L[q*] - L[q_phi])
       inference gap          approximation gap      amortization gap

where q* is the best distribution of the same family for x alone (found here by optimizing one set of
variational parameters per data point with the decoder frozen) and L is the ELBO. This module gives

* :class:`LocalGuide`: q(s_i) = T_s # Normal(m_i, diag s_i^2) with free (m_i, s_i) for every data
  point i and every local continuous site s (T_s = ``biject_to(support)``, as the amortized guide);
* :func:`optimize_local`: fits a :class:`LocalGuide` to fixed data with the model's parameters frozen,
  starting from the amortized guide's output (so L[q*] >= L[q_phi] up to optimization noise);
* :func:`inference_gaps`: the decomposition, with log p(x) and both ELBOs from
  :func:`ppvae.evaluate.marginal.log_marginal` (K importance samples; the ELBO is the mean of the same K log
  weights). As in Cremer et al. (sec. 5.1), log p(x) is the tightest available estimate: per point the
  larger of the IWAE bounds with q_phi and with q* as proposals.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from torch import nn

from ppvae._util.validation import PPVAEError, check_float, check_int, renamed
from ppvae.data.loaders import Batch, Dataset
from ppvae.evaluate.marginal import log_marginal
from ppvae.infer.svi.amortized import AmortizedGuide, local_site_info, site_distribution
from ppvae.infer.svi.objectives import make_elbo
from ppvae.model.structure import data_plate

__all__ = ["LocalGuide", "optimize_local", "inference_gaps", "InferenceGaps"]


def _unwrap_normal(fn):
    """(loc, scale) of a Normal possibly wrapped in Independent / TransformedDistribution, else None."""
    while True:
        if isinstance(fn, torch.distributions.Independent):
            fn = fn.base_dist
        elif isinstance(fn, torch.distributions.TransformedDistribution):
            fn = fn.base_dist
        else:
            break
    return (fn.loc, fn.scale) if isinstance(fn, torch.distributions.Normal) else None


@torch.no_grad()
def guide_local_params(guide, batch: Batch, sites: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per local site, the guide's (loc, scale) on ``batch`` in the unconstrained space, shape (M, *event):
    read from an :class:`AmortizedGuide`, or from the Normal inside each guide site; sites without one
    start at (0, 1)."""
    if isinstance(guide, AmortizedGuide):
        return {k: (v[0].detach(), v[1].detach()) for k, v in guide.local_params(batch).items()}
    with poutine.block(), pyro.validation_enabled(False):
        tr = poutine.trace(guide).get_trace(batch)
    out = {}
    m = len(batch)
    for name, info in sites.items():
        shape = (m,) + info["event"]
        got = _unwrap_normal(tr.nodes[name]["fn"]) if name in tr.nodes else None
        if got is None:
            out[name] = (batch.x.new_zeros(shape), batch.x.new_ones(shape))
        else:
            out[name] = tuple(t.detach().expand(tr.nodes[name]["value"].shape if t.dim() else shape).reshape(shape)
                              for t in got)
    return out


class LocalGuide(nn.Module):
    """Free variational parameters per data point (see the module docstring); ``batch.index`` picks
    the rows, so the guide works on minibatches and in :func:`ppvae.evaluate.marginal.log_marginal`."""

    def __init__(self, sites: dict, init: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.sites = sites
        self.locs = nn.ParameterDict({k: nn.Parameter(v[0].clone()) for k, v in init.items()})
        self.raw_scales = nn.ParameterDict({k: nn.Parameter(v[1].clamp_min(1e-6).log()) for k, v in init.items()})

    def forward(self, batch: Batch):
        n = next(iter(self.locs.values())).shape[0]
        index = batch.index if batch.index is not None else torch.arange(len(batch), device=batch.x.device)
        values = {}
        dim = next(iter(self.sites.values()))["dim"]
        with data_plate(Batch(batch.x, None, index, n), dim):  # subsampled at index unless it is all n points
            for name, info in self.sites.items():
                loc, scale = self.locs[name][index], self.raw_scales[name][index].exp()
                values[name] = pyro.sample(name, site_distribution(info, loc, scale))
        return values


def _conditioned_model(fit, data: Dataset):
    values = fit.global_values(data) if fit.global_sites(data) else {}
    model = poutine.condition(fit.model, data=values) if values else fit.model
    return model, values


def optimize_local(fit, data, *, steps: int = 500, lr: float = 0.01, elbo: str = "meanfield",
                   num_particles: int = 1, seed: int = 0) -> LocalGuide:
    """Fit a :class:`LocalGuide` to ``data`` by full-batch SVI (Adam, ``steps``, ``lr``) with the
    model's parameters and global latents frozen at the fit, starting from ``fit.guide``'s output."""
    steps = check_int("steps", steps, low=0)
    lr = check_float("lr", lr, low=0.0, strict=True)
    if not isinstance(data, Dataset):
        data = Dataset(data)
    device = fit.device
    y = None if data.y is None else data.y.to(device)  # a regression's response rides with x
    batch = Batch(data.x.to(device), y, torch.arange(len(data), device=device), len(data))
    model, values = _conditioned_model(fit, data)
    sites, _, discrete = local_site_info(model, batch)
    if not sites:
        raise PPVAEError("fit: the model has no local continuous latent sites; there is no per-datapoint guide to fit")
    model_fn = poutine.condition(fit.model.enumerated(), data=values) if discrete else model
    with torch.no_grad():
        guide = LocalGuide(sites, guide_local_params(fit.guide, batch, sites))
    _, objective = make_elbo("enum" if discrete else elbo, has_discrete=bool(discrete),
                             max_plate_nesting=fit.model.max_plate_nesting(batch), num_particles=num_particles)
    frozen = [p for p in fit.model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(guide.parameters(), lr=lr)
    try:
        for p in frozen:
            p.requires_grad_(False)
        with pyro.validation_enabled(False), torch.random.fork_rng():
            torch.manual_seed(seed)
            for _ in range(steps):
                optim.zero_grad(set_to_none=True)
                objective.differentiable_loss(model_fn, guide, batch).backward()
                optim.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return guide


@dataclass
class InferenceGaps:
    """Per-point tensors (float64, shape (N,)) of the decomposition and their means (nats per point)."""

    log_px: torch.Tensor
    elbo_amortized: torch.Tensor
    elbo_optimal: torch.Tensor
    num_particles: int

    @property
    def approximation_gap(self) -> torch.Tensor:
        return self.log_px - self.elbo_optimal

    @property
    def amortization_gap(self) -> torch.Tensor:
        return self.elbo_optimal - self.elbo_amortized

    @property
    def inference_gap(self) -> torch.Tensor:
        return self.log_px - self.elbo_amortized

    def to_dict(self) -> dict:
        mean = lambda t: float(t.mean())  # noqa: E731
        return {"log_px": mean(self.log_px), "elbo_amortized": mean(self.elbo_amortized),
                "elbo_optimal": mean(self.elbo_optimal), "approximation_gap": mean(self.approximation_gap),
                "amortization_gap": mean(self.amortization_gap), "inference_gap": mean(self.inference_gap),
                "num_particles": self.num_particles, "num_data": len(self.log_px)}


@renamed(num_samples="num_particles")
def inference_gaps(fit, data, *, num_particles: int = 5000, steps: int = 500, lr: float = 0.01,
                   elbo: str = "meanfield", chunk_size: int | None = None, seed: int = 0) -> InferenceGaps:
    """Cremer et al.'s (2018) decomposition on ``data`` (see the module docstring): ``num_particles``
    importance samples per point for log p(x) and both ELBOs; ``steps``/``lr``/``elbo`` for
    :func:`optimize_local`."""
    if not isinstance(data, Dataset):
        data = Dataset(data)
    local = optimize_local(fit, data, steps=steps, lr=lr, elbo=elbo, seed=seed)
    amortized = log_marginal(fit, data, num_particles=num_particles, chunk_size=chunk_size, seed=seed, warn=False)
    _, values = _conditioned_model(fit, data)
    optimal = log_marginal((fit.model, local), data, num_particles=num_particles, chunk_size=chunk_size, seed=seed,
                           global_values=values, warn=False)
    log_px = torch.maximum(amortized.values, optimal.values)
    return InferenceGaps(log_px, amortized.elbo, optimal.elbo, num_particles)
