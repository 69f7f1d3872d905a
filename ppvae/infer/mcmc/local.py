"""HMC over one data point's local latents with the model held fixed (exported as ppvae.local_posterior).

:func:`local_posterior` samples p(z | x, theta-hat) for a single point: the fitted global latents are
conditioned and the network weights frozen, and NUTS runs on the potential of
:class:`ppvae.infer.mcmc.potential.Potential`.
:func:`fitted_proposal` turns those draws into an importance-sampling proposal for ``ppvae.log_marginal``.
"""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ppvae._util.validation import PPVAEError, check_float, renamed
from ppvae.data.loaders import Batch
from ppvae.infer.mcmc.inputs import check_options
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.mcmc.sampler import MCMCResult, _sample
from ppvae.infer.pyro_adapter import divergences
from ppvae.model.base import Model
from ppvae.model.structure import is_local

__all__ = ["local_posterior", "fitted_proposal"]

@renamed(num_samples="num_draws")
def local_posterior(fit_or_model, x: torch.Tensor, *, y: torch.Tensor | None = None, values: dict | None = None,
                    num_draws: int = 500, warmup: int = 300, num_chains: int = 1, init: dict | None = None,
                    init_jitter: float = 0.5, jit: bool = False, target_accept: float = 0.8, max_tree_depth: int = 10,
                    seed: int = 0, progress: bool | None = None) -> MCMCResult:
    """NUTS over one data point's local latents with everything else held fixed.

    Samples p(z | x, theta-hat, phi-hat): the global latents are conditioned on ``values`` (default:
    the fit's ``global_values``) and the model's network weights are frozen. ``x`` is one data point
    (shaped like one row of the data set); ``y`` is its response for a regression model (one row of
    ``Dataset(x, y)``'s real-valued y), observed beside the covariates ``x``. The draws are the gold
    standard against which an amortized guide q(z | x) is judged (Wu et al. 2017, "On the Quantitative Analysis of
    Decoder-Based Generative Models", use annealed importance sampling / HMC for the same purpose).
    """
    model = getattr(fit_or_model, "model", fit_or_model)
    if not isinstance(model, Model):
        raise PPVAEError(f"fit_or_model: expected a ppvae Fit or Model; got {type(fit_or_model).__name__}")
    x = torch.as_tensor(x)
    if y is not None:
        y = torch.as_tensor(y)
        if not y.is_floating_point():
            raise PPVAEError(f"y: expected the point's real-valued response; got dtype {y.dtype}")
        y = y.unsqueeze(0).to(torch.get_default_dtype())
    batch = Batch(x.unsqueeze(0).to(torch.get_default_dtype()), y)
    if values is None:
        values = fit_or_model.global_values(batch) if hasattr(fit_or_model, "global_values") else {}
    fn = poutine.condition(model, data={k: v.detach() for k, v in values.items()}) if values else model
    options = {"target_accept": target_accept, "max_tree_depth": max_tree_depth, "num_leapfrog": 10, "full_mass": True}
    check_options("nuts", num_draws, warmup, num_chains, seed, options)
    frozen = [p for p in model.parameters() if p.requires_grad]
    try:
        for p in frozen:
            p.requires_grad_(False)
        potential = Potential(fn, batch, max_plate_nesting=model.max_plate_nesting(batch), jit=jit)
        local = [n for n, s in potential.sites.items() if not is_local(s)]
        if local:
            raise PPVAEError(f"values: expected values for every global latent site; missing {', '.join(local)}")
        _check_observes(fn, batch, y)
        mcmc, samples, elapsed = _sample(potential, "nuts", model=None, fn=fn, batch=batch, num_samples=num_draws,
                                         warmup=warmup, num_chains=num_chains, init=init or "prior",
                                         init_jitter=init_jitter, seed=seed, progress=progress, options=options)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return MCMCResult(model, mcmc, samples, "nuts", elapsed, divergences(mcmc), data_info={"num_data": 1},
                      config={"kernel": "nuts", "num_draws": num_draws, "warmup": warmup, "num_chains": num_chains,
                              "seed": seed, "local": True})


def _check_observes(fn, batch, y) -> None:
    """A regression's response left out (y=None) would turn its observed site into a latent one that NUTS
    samples silently: refuse a point at which the model observes nothing."""
    with poutine.block(), pyro.validation_enabled(False):
        tr = poutine.trace(fn).get_trace(batch)
    if not any(s["type"] == "sample" and s["is_observed"] and is_local(s) for s in tr.nodes.values()):
        hint = "pass the point's response: local_posterior(fit, x, y=y)" if y is None else "check the model"
        raise PPVAEError(f"y: the model observes nothing at this point (a regression reads batch.y); {hint}")


def fitted_proposal(result: MCMCResult, model: Model, *, scale: float = 1.2, df: float = 5.0) -> Callable:
    """A guide for one data point's local latents fitted to a :func:`local_posterior` run: each
    (vector-valued, real) site drawn from a multivariate Student-t with ``df`` degrees of freedom, the
    draws' mean and their covariance with the scale inflated by ``scale`` (so its tails cover the
    posterior's). Pass it as ``proposal=`` to ``ppvae.log_marginal``: importance sampling from a
    proposal close to p(z | x) estimates log p(x) with small variance (Wu et al. 2017 use AIS from
    HMC-refined proposals for the same purpose)."""
    check_float("scale", scale, low=0.0, strict=True)
    check_float("df", df, low=0.0, strict=True)
    fitted = {}
    for name, value in result.flat_samples().items():
        if value.dim() != 3 or value.shape[1] != 1:
            raise PPVAEError(f"result: expected draws of one point's vector-valued local site; got '{name}' with "
                             f"draws of shape {tuple(value.shape)} (run local_posterior)")
        flat = value[:, 0].double()
        cov = torch.cov(flat.T).reshape(flat.shape[1], -1) + 1e-8 * torch.eye(flat.shape[1], dtype=flat.dtype)
        fitted[name] = (flat.mean(0), scale * torch.linalg.cholesky(cov))

    def guide(batch):
        with model.data_plate(batch):
            for name, (loc, tril) in fitted.items():
                t = batch.x.new_tensor
                pyro.sample(name, dist.MultivariateStudentT(t(df), loc.to(batch.x.dtype), tril.to(batch.x.dtype)))

    return guide
