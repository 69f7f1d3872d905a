"""Gaussian mixture model with Dirichlet weights, full, diagonal or spherical covariances, and its EM.

Generative story (Bishop 2006, sec. 9.2; Bayesian version sec. 10.2)::

    w ~ Dirichlet(alpha 1_K)
    mu_k ~ N(m, s^2 I),  sigma_k ~ LogNormal(log sd(X), 1),  L_k ~ LKJCholesky(D, 1)   (full only)
    z_i ~ Categorical(w)                                                             (enumerated)
    x_i | z_i = k ~ N(mu_k, diag(sigma_k) L_k L_k^T diag(sigma_k))

with m the data mean and s = 10 sd(X) per coordinate (weakly informative priors on the data's scale;
Richardson & Green 1997 set theirs from the data range the same way). The assignments z_i are summed
out by enumeration, so every guide covers only (w, mu, sigma, L).

``covariance="spherical"``: one sigma_k per component, Sigma_k = sigma_k^2 I (site ``scales`` of shape (K,)).

Closed-form EM (Bishop 2006, eqs. 9.23-9.28) with a ``reg_covar`` ridge on the covariances as in
scikit-learn's ``GaussianMixture``; the spherical M step is sigma_k^2 = sum_i r_ik |x_i - mu_k|^2 / (D N_k).
With equal weights and a common sigma -> 0 the responsibilities become the hard nearest-centre assignments and
the M step's means the cluster means: EM becomes k-means (Bishop 2006, sec. 9.3.2; tests/infer/test_em.py checks the
k-means fixed point). ``em_partial_step`` is a generalized EM step (see its docstring).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from ppvae import (
    ClosedFormEM,
    ClosedFormPotential,
    Mixture,
    Model,
    PPVAEError,
    Reports,
    check_choice,
    check_float,
    check_int,
    register_model,
)
from ppvae.models.gmm_potential import full_constants, full_potential, ordered_locs


def gmm_log_likelihood(x, weights, locs, scale_tril) -> torch.Tensor:
    """Per-point log p(x_i) = log sum_k w_k N(x_i | mu_k, Sigma_k) (exact, for tests and EM)."""
    comp = dist.MultivariateNormal(locs, scale_tril=scale_tril)
    return torch.logsumexp(weights.log() + comp.log_prob(x.unsqueeze(-2)), dim=-1)


def _diag_potential(uw: torch.Tensor, umu: torch.Tensor, uv: torch.Tensor, c: dict,
                    column: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """U(u) and dU/du for the diagonal GMM in the MCMC potential's unconstrained
    coordinates, without autograd.

    Coordinates (torch's ``biject_to`` for each support): w = StickBreaking(u_w), so
    log w_k = log z_k + sum_{j<k} log(1 - z_j) with z_j = sigmoid(u_w,j - log(K - 1 - j)); sigma = exp(v);
    mu = u_mu, except that with ``column`` = c the column mu_{:,c} = cumsum(u_0c, e^{u_1c}, ..., e^{u_{K-1}c})
    (``ppvae.infer.mcmc.potential``'s ordering transform).
    With r_ik = p(z_i = k | x_i, theta) and s_ikd = (x_id - mu_kd) / sigma_kd,

        U = -[ sum_i log sum_k w_k N(x_i | mu_k, diag sigma_k^2) + log Dir(w | alpha) + log N(mu | m, s0^2)
               + log LogNormal(sigma | log sd, 1) + log|det J| ],

    and the gradient of the log-likelihood is the Fisher identity, d/dtheta log p(x_i | theta) =
    sum_k r_ik d/dtheta log[w_k N(x_i | mu_k, sigma_k)] (Dempster, Laird & Rubin 1977, eq. 2.14;
    the E-step statistics of Bishop 2006, eqs. 9.23-9.27):

        dL/dmu_kd = sum_i r_ik s_ikd / sigma_kd,   dL/dv_kd = sum_i r_ik (s_ikd^2 - 1),   dL/dlog w_k = N_k,

    then the chain rule through the stick-breaking map and the ordered column by hand. About 60 tensor
    operations and no autograd graph: NUTS spends most of its time here (see benchmarks/bench_nuts.py).
    Returns (U, dU/du_w, dU/du_mu, dU/dv).
    """
    t = uw - c["log_offset"]
    log1mz = torch.nn.functional.logsigmoid(-t)  # log(1 - z)
    z = torch.sigmoid(t)
    zero = c["zero"]
    logw = torch.cat([t + log1mz, zero]) + torch.cat([zero, log1mz.cumsum(0)])  # log z = t + log(1 - z)
    if column is not None:
        idx = c["column"]
        mu, steps = ordered_locs(umu, idx)
    else:
        mu = umu
    inv_sigma = torch.exp(-uv)
    s = (c["x"] - mu) * inv_sigma  # (N, K, D)
    comp = logw - 0.5 * (s * s).sum(-1) - uv.sum(-1)  # log w_k N(x_i | mu_k, sigma_k) + D/2 log 2 pi
    top = comp.max(-1, keepdim=True).values
    e = (comp - top).exp()
    total = e.sum(-1, keepdim=True)
    r = e / total  # responsibilities
    nk = r.sum(0)
    rs = r.unsqueeze(-1) * s
    dm = (mu - c["loc_mean"]) * c["inv_loc_scale"]
    dv = uv - c["log_scale_median"]
    # the log sigma terms of the LogNormal prior and of the Jacobian of exp cancel
    log_joint = ((total.log() + top).sum() + c["const"] + c["alpha_m1"] * logw.sum() - 0.5 * (dm * dm).sum()
                 - 0.5 * (dv * dv).sum() + log1mz.sum() + logw[:-1].sum())
    g_mu = rs.sum(0) * inv_sigma - dm * c["inv_loc_scale"]
    g_v = (rs * s).sum(0) - nk.unsqueeze(-1) - dv
    # d/du_j of sum_k a_k log w_k = a_j (1 - z_j) - z_j sum_{k>j} a_k, with a = N + alpha - 1 (likelihood and
    # prior) + 1 for k < K-1 (the log w_k of the stick-breaking Jacobian), whose log(1 - z_j) adds -z_j
    a = nk + c["alpha_m1"] + c["jac_weights"]
    tail = a.sum() - a.cumsum(0)
    g_w = a[:-1] * (1 - z) - z * tail[:-1] - z
    if column is not None:
        log_joint = log_joint + umu[1:].index_select(1, idx).sum()
        g_col = g_mu.index_select(1, idx).squeeze(1)
        tail = g_col.flip(0).cumsum(0).flip(0)  # dL/du_kc = sum_{k' >= k} dL/dmu_k'c * dmu/du
        g_mu = g_mu.index_copy(1, idx, torch.cat([tail[:1], steps[1:] * tail[1:] + 1]).unsqueeze(1))
    return -log_joint, -g_w, -g_mu, -g_v


def _kmeanspp(x: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): centres drawn with probability ~ squared distance."""
    idx = [int(torch.randint(len(x), (1,), generator=gen))]
    for _ in range(1, k):
        d2 = torch.cdist(x, x[idx]).pow(2).min(-1).values
        if d2.sum() <= 0:
            idx.append(int(torch.randint(len(x), (1,), generator=gen)))
        else:
            idx.append(int(torch.multinomial(d2 / d2.sum(), 1, generator=gen)))
    return x[idx].clone()


@register_model("gmm", "Gaussian mixture: K components, full, diagonal or spherical covariance, Dirichlet weights")
class GMM(Model, ClosedFormEM, ClosedFormPotential, Mixture, Reports):
    """Gaussian mixture with enumerated assignments (see module docstring)."""

    data_kinds = ("real",)
    # The CLI's defaults for flags left unset: on unstandardized data (Old Faithful's waiting times are
    # ~70) lr 0.01 needs thousands of steps; 0.05 reaches the EM maximum's neighbourhood in a few hundred.
    train_defaults = {"lr": 0.05}

    def __init__(self, K: int = 2, covariance: str = "full", concentration: float = 1.0, reg_covar: float = 1e-6):
        super().__init__()
        self.K = check_int("K", K, low=1)
        self.covariance = check_choice("covariance", covariance, ("full", "diag", "spherical"))
        self.concentration = check_float("concentration", concentration, low=0.0, strict=True)
        self.reg_covar = check_float("reg_covar", reg_covar, low=0.0)

    def setup(self, data):
        super().setup(data)
        if data.x.dim() != 2:
            raise PPVAEError(f"data: gmm expects an (N, D) array; got shape {tuple(data.x.shape)}")
        if self.K > len(data):
            raise PPVAEError(f"K: expected at most N = {len(data)} components; got {self.K}")
        sd = data.x.std(0) if len(data) > 1 else torch.ones(data.x.shape[1])
        sd = torch.where(sd > 0, sd, torch.ones_like(sd))
        self.register_buffer("loc_mean", data.x.mean(0))
        self.register_buffer("loc_scale", 10 * sd)
        self.register_buffer("scale_median", sd)

    def _full(self, D: int) -> bool:
        return self.covariance == "full" and D > 1

    def _diag_scales(self, scales: torch.Tensor, D: int) -> torch.Tensor:
        """Per-coordinate scales (..., K, D): the spherical sigma_k repeated D times, else ``scales`` itself."""
        return scales.unsqueeze(-1).expand(*scales.shape, D) if self.covariance == "spherical" else scales

    def forward(self, batch):
        K, D = self.K, batch.x.shape[-1]
        weights = pyro.sample("weights", dist.Dirichlet(self.concentration * batch.x.new_ones(K)))
        locs = pyro.sample("locs", dist.Normal(self.loc_mean, self.loc_scale).expand([K, D]).to_event(2))
        if self.covariance == "spherical":  # prior median: the geometric mean of the coordinates' sd
            scales = pyro.sample("scales", dist.LogNormal(self.scale_median.log().mean(), 1.0).expand([K]).to_event(1))
        else:
            scales = pyro.sample("scales", dist.LogNormal(self.scale_median.log(), 1.0).expand([K, D]).to_event(2))
        if self._full(D):
            corr = pyro.sample("corr", dist.LKJCholesky(D, batch.x.new_tensor(1.0)).expand([K]).to_event(1))
            scale_tril = scales.unsqueeze(-1) * corr
        else:
            scale_tril = torch.diag_embed(self._diag_scales(scales, D))
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Categorical(weights))
            component = dist.MultivariateNormal(Vindex(locs)[..., z, :], scale_tril=Vindex(scale_tril)[..., z, :, :])
            pyro.sample("obs", component, obs=batch.x)

    def init_values(self, data, generator):
        K, D = self.K, data.x.shape[1]
        values = {
            "weights": data.x.new_full((K,), 1.0 / K),
            "locs": _kmeanspp(data.x, K, generator),
            "scales": (self.scale_median.log().mean().exp().expand(K) if self.covariance == "spherical"
                       else self.scale_median.expand(K, D)).clone(),
        }
        if self._full(D):
            values["corr"] = torch.eye(D, dtype=data.x.dtype).expand(K, D, D).clone()
        return values

    # -- closed-form EM ---------------------------------------------------------------------------
    def em_init(self, x, generator, init=None):
        """Start from k-means++ centres, the pooled covariance and equal weights (or ``init``)."""
        if init is not None:
            return {k: torch.as_tensor(v, dtype=x.dtype) for k, v in init.items()}
        K, D = self.K, x.shape[1]
        cov = torch.cov(x.T).reshape(D, D)
        if self.covariance == "diag":  # start inside the model family, or the first step may go down
            cov = torch.diag_embed(cov.diagonal())
        elif self.covariance == "spherical":
            cov = cov.diagonal().mean() * torch.eye(D, dtype=x.dtype)
        cov = cov + self.reg_covar * torch.eye(D, dtype=x.dtype)
        return {"weights": x.new_full((K,), 1.0 / K), "locs": _kmeanspp(x, K, generator),
                "covs": cov.expand(K, D, D).clone()}

    def em_step(self, x, params):
        """One E and M step (Bishop 2006, eqs. 9.23-9.27); returns (new params, per-point log p(x_i | old))."""
        w, mu, cov = params["weights"], params["locs"], params["covs"]
        log_joint = w.log() + dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x.unsqueeze(-2))
        ll = torch.logsumexp(log_joint, -1)
        r = (log_joint - ll.unsqueeze(-1)).exp()  # responsibilities (E step)
        nk = r.sum(0) + 10 * torch.finfo(x.dtype).eps
        mu = (r.T @ x) / nk.unsqueeze(-1)
        return {"weights": nk / nk.sum(), "locs": mu, "covs": self._m_step_covs(x, r, nk, mu)}, ll

    def _m_step_covs(self, x, r, nk, mu) -> torch.Tensor:
        """argmax over the covariances of Q given the means ``mu`` (Bishop 2006, eq. 9.25; diagonal and spherical:
        the same restricted to the family), plus the ``reg_covar`` ridge."""
        diff = x.unsqueeze(1) - mu  # (N, K, D)
        D = x.shape[1]
        eye = torch.eye(D, dtype=x.dtype)
        if self.covariance == "full":
            return torch.einsum("nk,nkd,nke->kde", r, diff, diff) / nk[:, None, None] + self.reg_covar * eye
        if self.covariance == "spherical":
            var = torch.einsum("nk,nkd->k", r, diff.pow(2)) / (D * nk) + self.reg_covar
            return var[:, None, None] * eye
        return torch.diag_embed(torch.einsum("nk,nkd->kd", r, diff.pow(2)) / nk[:, None] + self.reg_covar)

    def em_partial_step(self, x, params, iteration):
        """A generalized EM step (Dempster et al. 1977, sec. 3), an ECM-like conditional M step (Meng & Rubin 1993):
        weights and means as in EM, covariances maximized given the *incoming* means mu_t (not the new ones).
        Q rises: Q(w', mu', S(mu_t)) >= Q(w', mu_t, S(mu_t)) >= Q(w_t, mu_t, S_t), the first because the
        weighted means maximize Q over mu for any covariances, the second because S(mu_t) maximizes Q over the
        covariances given mu_t; so log p(X) never decreases, and the fixed points are EM's."""
        w, mu_t, cov = params["weights"], params["locs"], params["covs"]
        log_joint = w.log() + dist.MultivariateNormal(mu_t, covariance_matrix=cov).log_prob(x.unsqueeze(-2))
        ll = torch.logsumexp(log_joint, -1)
        r = (log_joint - ll.unsqueeze(-1)).exp()
        nk = r.sum(0) + 10 * torch.finfo(x.dtype).eps
        mu = (r.T @ x) / nk.unsqueeze(-1)
        return {"weights": nk / nk.sum(), "locs": mu, "covs": self._m_step_covs(x, r, nk, mu_t)}, ll

    def em_to_sites(self, params) -> dict:
        """EM parameters as values of this model's sample sites (weights, locs, scales, corr)."""
        cov = params["covs"]
        scales = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        if self.covariance == "spherical":
            scales = scales[..., 0]
        values = {"weights": params["weights"], "locs": params["locs"], "scales": scales}
        if self._full(cov.shape[-1]):
            values["corr"] = torch.linalg.cholesky(cov / (scales.unsqueeze(-1) * scales.unsqueeze(-2)))
        return values

    def pointwise_log_likelihood(self, values, x) -> torch.Tensor:
        """Per-point log p(x_i | w, mu, sigma, L) = log sum_k w_k N(x_i | mu_k, Sigma_k), z summed in
        closed form (Bishop 2006, eq. 9.7); ``ppvae.infer.mcmc.sampler`` uses it in place of enumeration."""
        w, locs, scales = values["weights"], values["locs"], values["scales"]
        if "corr" in values:
            return gmm_log_likelihood(x, w, locs, scales.unsqueeze(-1) * values["corr"])
        scales = self._diag_scales(scales, x.shape[-1])
        comp = dist.Normal(locs, scales).log_prob(x.unsqueeze(-2)).sum(-1)  # diagonal: (N, K)
        return torch.logsumexp(w.log() + comp, dim=-1)

    def closed_form_potential(self, x, order=None):
        """The potential of ``ppvae.infer.mcmc.sampler`` and its gradient in closed form (:func:`_diag_potential`,
        and :func:`ppvae.models.gmm_potential.full_potential` for full covariances), or None where there is none
        here (spherical covariances, or an ordering on another site than ``locs``)."""
        if self.covariance == "spherical" or (order is not None and order[0] != "locs"):
            return None
        K, D, N, a = self.K, x.shape[-1], x.shape[0], self.concentration
        column = None if order is None else order[1]
        if self._full(D):
            c = full_constants(x, K, a, self.loc_mean, self.loc_scale, self.scale_median, column)

            def potential(u):
                U, g_w, g_mu, g_v, g_c = full_potential(u["weights"], u["locs"], u["scales"], u["corr"], c, column)
                return U, {"weights": g_w, "locs": g_mu, "scales": g_v, "corr": g_c}

            return potential
        const = (-0.5 * N * D * math.log(2 * math.pi) + math.lgamma(K * a) - K * math.lgamma(a)
                 - K * float(self.loc_scale.log().sum()) - K * D * math.log(2 * math.pi))
        c = {"x": x.unsqueeze(1), "log_offset": torch.arange(K - 1, 0, -1, dtype=x.dtype, device=x.device).log(),
             "zero": x.new_zeros(1), "const": x.new_tensor(const), "alpha_m1": x.new_tensor(a - 1.0),
             "jac_weights": torch.cat([x.new_ones(K - 1), x.new_zeros(1)]), "loc_mean": self.loc_mean,
             "inv_loc_scale": 1 / self.loc_scale, "log_scale_median": self.scale_median.log(),
             "column": torch.tensor([order[1] if order else 0], device=x.device)}

        def potential(u):
            U, g_w, g_mu, g_v = _diag_potential(u["weights"], u["locs"], u["scales"], c, column)
            return U, {"weights": g_w, "locs": g_mu, "scales": g_v}

        return potential

    def num_components(self) -> int:
        """K."""
        return self.K

    def mixture_components(self, values) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, locs, covariances) from values of the sample sites."""
        scales = values["scales"]
        if "corr" in values:
            tril = scales.unsqueeze(-1) * values["corr"]
        else:
            tril = torch.diag_embed(self._diag_scales(scales, values["locs"].shape[-1]))
        return values["weights"], values["locs"], tril @ tril.transpose(-1, -2)

    def em_responsibilities(self, x, params) -> torch.Tensor:
        """p(z_i = k | x_i, params), shape (N, K)."""
        w, mu, cov = params["weights"], params["locs"], params["covs"]
        log_joint = w.log() + dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x.unsqueeze(-2))
        return torch.softmax(log_joint, -1)

    def __repr__(self):
        return f"GMM(K={self.K}, covariance={self.covariance!r})"


__all__ = ["GMM", "gmm_log_likelihood"]
