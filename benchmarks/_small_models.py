"""The five small models of bench_small_svi.py written twice more: as a hand-written PyTorch ELBO (the floor) and in
NumPyro, with the priors of models/gmm.py, examples/blr.py, examples/eight_schools.py and examples/mixreg.py.

``FLOORS[name](model, data, steps, lr)`` -> seconds per step of a mean-field Gaussian guide over the unconstrained
sites (u = loc + softplus(rho) eps, the ``biject_to`` transforms and their log-Jacobians, the entropy in closed form),
Adam(fused=True), eager autograd, after 10 warm-up steps. ``NUMPYRO_MODELS[name](model, data)`` -> (model function,
its arguments), the assignments marginalized with ``MixtureSameFamily``.
"""

from __future__ import annotations

import math
import time

import torch
from torch.distributions import (
    Dirichlet,
    HalfCauchy,
    LKJCholesky,
    LogNormal,
    MultivariateNormal,
    Normal,
    biject_to,
    constraints,
)

_INIT_RHO = math.log(math.expm1(0.1))  # softplus(rho) = 0.1, AutoNormal's init_scale


def _floor(sites: dict, log_joint, steps: int, lr: float) -> float:
    """sites: name -> (initial constrained value, support). Returns seconds per step."""
    transforms = {n: biject_to(c) for n, (_, c) in sites.items()}
    locs = {n: transforms[n].inv(v).detach().clone().requires_grad_(True) for n, (v, _) in sites.items()}
    rhos = {n: torch.full_like(v, _INIT_RHO).requires_grad_(True) for n, v in locs.items()}
    optim = torch.optim.Adam([*locs.values(), *rhos.values()], lr=lr, fused=True)

    def step():
        values, extra = {}, 0.0
        for n, t in transforms.items():
            sigma = torch.nn.functional.softplus(rhos[n])
            u = locs[n] + sigma * torch.randn_like(sigma)
            values[n] = t(u)
            extra = extra + t.log_abs_det_jacobian(u, values[n]).sum() + sigma.log().sum()  # + entropy
        loss = -(log_joint(values) + extra)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    torch.manual_seed(0)
    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def _gmm_setup(model, data):
    model.setup(data)
    init = model.init_values(data, torch.Generator().manual_seed(0))
    return model._full(data.x.shape[1]), init


def gmm_floor(model, data, steps, lr):
    full, init = _gmm_setup(model, data)
    x, K, D = data.x, model.K, data.x.shape[1]
    sites = {"weights": (init["weights"], constraints.simplex), "locs": (init["locs"], constraints.real),
             "scales": (init["scales"], constraints.positive)}
    if full:
        sites["corr"] = (init["corr"], constraints.corr_cholesky)
    prior_w = Dirichlet(model.concentration * torch.ones(K), validate_args=False)
    prior_mu = Normal(model.loc_mean, model.loc_scale, validate_args=False)
    prior_s = LogNormal(model.scale_median.log(), 1.0, validate_args=False)
    lkj = LKJCholesky(D, 1.0, validate_args=False)

    def log_joint(v):
        lp = prior_w.log_prob(v["weights"]) + prior_mu.log_prob(v["locs"]).sum() + prior_s.log_prob(v["scales"]).sum()
        if full:
            lp = lp + lkj.log_prob(v["corr"]).sum()
            tril = v["scales"].unsqueeze(-1) * v["corr"]
            comp = MultivariateNormal(v["locs"], scale_tril=tril, validate_args=False).log_prob(x.unsqueeze(-2))
        else:
            comp = Normal(v["locs"], v["scales"], validate_args=False).log_prob(x.unsqueeze(-2)).sum(-1)
        return lp + torch.logsumexp(v["weights"].log() + comp, -1).sum()

    return _floor(sites, log_joint, steps, lr)


def blr_floor(model, data, steps, lr):
    x, y = data.x, data.y
    sites = {"w": (torch.zeros(x.shape[1]), constraints.real), "b": (torch.zeros(()), constraints.real)}
    prior = Normal(0.0, model.prior_sd, validate_args=False)

    def log_joint(v):
        mean = x @ v["w"] + v["b"]
        return (prior.log_prob(v["w"]).sum() + prior.log_prob(v["b"])
                + Normal(mean, model.noise_sd, validate_args=False).log_prob(y).sum())

    return _floor(sites, log_joint, steps, lr)


def schools_floor(model, data, steps, lr):
    y, sigma = data.x[:, 0], data.x[:, 1]
    sites = {"mu": (torch.zeros(()), constraints.real), "tau": (torch.ones(()), constraints.positive),
             "eta": (torch.zeros(len(y)), constraints.real)}
    p_mu, p_tau = Normal(0.0, model.mu_sd, validate_args=False), HalfCauchy(model.tau_scale, validate_args=False)

    def log_joint(v):
        theta = v["mu"] + v["tau"] * v["eta"]
        return (p_mu.log_prob(v["mu"]) + p_tau.log_prob(v["tau"]) - 0.5 * (v["eta"] ** 2).sum()
                - 0.5 * len(y) * math.log(2 * math.pi) + Normal(theta, sigma, validate_args=False).log_prob(y).sum())

    return _floor(sites, log_joint, steps, lr)


def mixreg_floor(model, data, steps, lr):
    x, y, K = data.x, data.y, model.K
    init = model.init_values(data, torch.Generator().manual_seed(0))
    sites = {"weights": (torch.full((K,), 1.0 / K), constraints.simplex), "w": (init["w"], constraints.real),
             "b": (init["b"], constraints.real), "sigma": (init["sigma"], constraints.positive)}
    prior, p_sigma = Normal(0.0, model.prior_sd, validate_args=False), LogNormal(0.0, 1.0, validate_args=False)
    p_w = Dirichlet(torch.ones(K), validate_args=False)

    def log_joint(v):
        mean = x @ v["w"].T + v["b"]  # (N, K)
        comp = Normal(mean, v["sigma"], validate_args=False).log_prob(y.unsqueeze(-1))
        return (p_w.log_prob(v["weights"]) + prior.log_prob(v["w"]).sum() + prior.log_prob(v["b"]).sum()
                + p_sigma.log_prob(v["sigma"]) + torch.logsumexp(v["weights"].log() + comp, -1).sum())

    return _floor(sites, log_joint, steps, lr)


FLOORS = {"gmm_full": gmm_floor, "gmm_full_autograd": gmm_floor, "gmm_diag": gmm_floor, "blr": blr_floor,
          "schools": schools_floor, "mixreg": mixreg_floor}


# -- NumPyro -------------------------------------------------------------------------------------------------
def _np(t):
    import jax.numpy as jnp

    return jnp.asarray(t.detach().numpy())


def np_gmm(model, data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    full, _ = _gmm_setup(model, data)
    x, K, D = _np(data.x), model.K, data.x.shape[1]
    lm, ls, sm, conc = _np(model.loc_mean), _np(model.loc_scale), _np(model.scale_median), model.concentration

    def fn(x):
        w = numpyro.sample("weights", nd.Dirichlet(conc * jnp.ones(K)))
        locs = numpyro.sample("locs", nd.Normal(lm, ls).expand([K, D]).to_event(2))
        scales = numpyro.sample("scales", nd.LogNormal(jnp.log(sm), 1.0).expand([K, D]).to_event(2))
        if full:
            corr = numpyro.sample("corr", nd.LKJCholesky(D, 1.0).expand([K]).to_event(1))
            comp = nd.MultivariateNormal(locs, scale_tril=scales[..., None] * corr)
        else:
            comp = nd.Normal(locs, scales).to_event(1)
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("obs", nd.MixtureSameFamily(nd.Categorical(w), comp), obs=x)

    return fn, (x,)


def np_blr(model, data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    x, y = _np(data.x), _np(data.y)

    def fn(x, y):
        w = numpyro.sample("w", nd.Normal(jnp.zeros(x.shape[1]), model.prior_sd).to_event(1))
        b = numpyro.sample("b", nd.Normal(0.0, model.prior_sd))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", nd.Normal(x @ w + b, model.noise_sd), obs=y)

    return fn, (x, y)


def np_schools(model, data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    y, sigma = _np(data.x[:, 0]), _np(data.x[:, 1])

    def fn(y, sigma):
        mu = numpyro.sample("mu", nd.Normal(0.0, model.mu_sd))
        tau = numpyro.sample("tau", nd.HalfCauchy(model.tau_scale))
        eta = numpyro.sample("eta", nd.Normal(jnp.zeros(y.shape[0]), 1.0).to_event(1))
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", nd.Normal(mu + tau * eta, sigma), obs=y)

    return fn, (y, sigma)


def np_mixreg(model, data):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd

    x, y, K = _np(data.x), _np(data.y), model.K

    def fn(x, y):
        weights = numpyro.sample("weights", nd.Dirichlet(jnp.ones(K)))
        w = numpyro.sample("w", nd.Normal(jnp.zeros((K, x.shape[1])), model.prior_sd).to_event(2))
        b = numpyro.sample("b", nd.Normal(jnp.zeros(K), model.prior_sd).to_event(1))
        sigma = numpyro.sample("sigma", nd.LogNormal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            comp = nd.Normal(x @ w.T + b, sigma)
            numpyro.sample("y", nd.MixtureSameFamily(nd.Categorical(weights), comp), obs=y)

    return fn, (x, y)


NUMPYRO_MODELS = {"gmm_full": np_gmm, "gmm_full_autograd": np_gmm, "gmm_diag": np_gmm, "blr": np_blr,
                  "schools": np_schools, "mixreg": np_mixreg}
