"""Gaussian mixture model with Dirichlet weights, full or diagonal covariances, and its EM.

Generative story (Bishop 2006, sec. 9.2; Bayesian version sec. 10.2)::

    w ~ Dirichlet(alpha 1_K)
    mu_k ~ N(m, s^2 I),  sigma_k ~ LogNormal(log sd(X), 1),  L_k ~ LKJCholesky(D, 1)   (full only)
    z_i ~ Categorical(w)                                                             (enumerated)
    x_i | z_i = k ~ N(mu_k, diag(sigma_k) L_k L_k^T diag(sigma_k))

with m the data mean and s = 10 sd(X) per coordinate (weakly informative priors on the data's scale;
Richardson & Green 1997 set theirs from the data range the same way). The assignments z_i are summed
out by enumeration, so every guide covers only (w, mu, sigma, L).

Closed-form EM (Bishop 2006, eqs. 9.23-9.28) with a ``reg_covar`` ridge on the covariances as in
scikit-learn's ``GaussianMixture``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from ppvae import Model, PPVAEError, check_choice, check_float, check_int, register_model


def gmm_log_likelihood(x, weights, locs, scale_tril) -> torch.Tensor:
    """Per-point log p(x_i) = log sum_k w_k N(x_i | mu_k, Sigma_k) (exact, for tests and EM)."""
    comp = dist.MultivariateNormal(locs, scale_tril=scale_tril)
    return torch.logsumexp(weights.log() + comp.log_prob(x.unsqueeze(-2)), dim=-1)


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


@register_model("gmm", "Gaussian mixture: K components, full or diagonal covariance, Dirichlet weights")
class GMM(Model):
    """Gaussian mixture with enumerated assignments (see module docstring)."""

    data_kinds = ("real",)
    # The CLI's defaults for flags left unset: on unstandardized data (Old Faithful's waiting times are
    # ~70) lr 0.01 needs thousands of steps; 0.05 reaches the EM maximum's neighbourhood in a few hundred.
    train_defaults = {"lr": 0.05}

    def __init__(self, K: int = 2, covariance: str = "full", concentration: float = 1.0, reg_covar: float = 1e-6):
        super().__init__()
        self.K = check_int("K", K, low=1)
        self.covariance = check_choice("covariance", covariance, ("full", "diag"))
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

    def forward(self, batch):
        K, D = self.K, batch.x.shape[-1]
        weights = pyro.sample("weights", dist.Dirichlet(self.concentration * batch.x.new_ones(K)))
        locs = pyro.sample("locs", dist.Normal(self.loc_mean, self.loc_scale).expand([K, D]).to_event(2))
        scales = pyro.sample("scales", dist.LogNormal(self.scale_median.log(), 1.0).expand([K, D]).to_event(2))
        if self._full(D):
            corr = pyro.sample("corr", dist.LKJCholesky(D, batch.x.new_tensor(1.0)).expand([K]).to_event(1))
            scale_tril = scales.unsqueeze(-1) * corr
        else:
            scale_tril = torch.diag_embed(scales)
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Categorical(weights))
            component = dist.MultivariateNormal(Vindex(locs)[..., z, :], scale_tril=Vindex(scale_tril)[..., z, :, :])
            pyro.sample("obs", component, obs=batch.x)

    def init_values(self, data, generator):
        K, D = self.K, data.x.shape[1]
        values = {
            "weights": data.x.new_full((K,), 1.0 / K),
            "locs": _kmeanspp(data.x, K, generator),
            "scales": self.scale_median.expand(K, D).clone(),
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
        diff = x.unsqueeze(1) - mu  # (N, K, D)
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        if self.covariance == "full":
            cov = torch.einsum("nk,nkd,nke->kde", r, diff, diff) / nk[:, None, None] + self.reg_covar * eye
        else:
            var = torch.einsum("nk,nkd->kd", r, diff.pow(2)) / nk[:, None] + self.reg_covar
            cov = torch.diag_embed(var)
        return {"weights": nk / nk.sum(), "locs": mu, "covs": cov}, ll

    def em_to_sites(self, params) -> dict:
        """EM parameters as values of this model's sample sites (weights, locs, scales, corr)."""
        cov = params["covs"]
        scales = cov.diagonal(dim1=-2, dim2=-1).sqrt()
        values = {"weights": params["weights"], "locs": params["locs"], "scales": scales}
        if self._full(cov.shape[-1]):
            values["corr"] = torch.linalg.cholesky(cov / (scales.unsqueeze(-1) * scales.unsqueeze(-2)))
        return values

    def pointwise_log_likelihood(self, values, x) -> torch.Tensor:
        """Per-point log p(x_i | w, mu, sigma, L) = log sum_k w_k N(x_i | mu_k, Sigma_k), z summed in
        closed form (Bishop 2006, eq. 9.7); ``ppvae.mcmc`` uses it in place of enumeration."""
        w, locs, scales = values["weights"], values["locs"], values["scales"]
        if "corr" in values:
            return gmm_log_likelihood(x, w, locs, scales.unsqueeze(-1) * values["corr"])
        comp = dist.Normal(locs, scales).log_prob(x.unsqueeze(-2)).sum(-1)  # diagonal: (N, K)
        return torch.logsumexp(w.log() + comp, dim=-1)

    def mixture_components(self, values) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, locs, covariances) from values of the sample sites."""
        scales = values["scales"]
        tril = scales.unsqueeze(-1) * values["corr"] if "corr" in values else torch.diag_embed(scales)
        return values["weights"], values["locs"], tril @ tril.transpose(-1, -2)

    def em_responsibilities(self, x, params) -> torch.Tensor:
        """p(z_i = k | x_i, params), shape (N, K)."""
        w, mu, cov = params["weights"], params["locs"], params["covs"]
        log_joint = w.log() + dist.MultivariateNormal(mu, covariance_matrix=cov).log_prob(x.unsqueeze(-2))
        return torch.softmax(log_joint, -1)

    @staticmethod
    def num_free_parameters(K: int, D: int, covariance: str) -> int:
        cov = D * (D + 1) // 2 if covariance == "full" else D
        return K - 1 + K * D + K * cov

    def __repr__(self):
        return f"GMM(K={self.K}, covariance={self.covariance!r})"


__all__ = ["GMM", "gmm_log_likelihood"]
