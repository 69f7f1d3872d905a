"""The Bayesian Gaussian mixture with conjugate priors and its variational Bayes (Bishop 2006, sec. 10.2)::

    pi ~ Dirichlet(alpha0 1_K)
    Lambda_k ~ Wishart(W0, nu0),   mu_k | Lambda_k ~ N(m0, (beta0 Lambda_k)^-1)      k = 1..K
    z_i ~ Categorical(pi),   x_i | z_i = k ~ N(mu_k, Lambda_k^-1)                      (z enumerated)

Defaults as scikit-learn's ``BayesianGaussianMixture`` (``weight_concentration_prior_type=
"dirichlet_distribution"``): alpha0 = 1/K, beta0 = 1, nu0 = D, m0 = the data mean, W0^-1 = the data's
covariance (``np.cov``); m0 and W0^-1 are set by ``setup`` from the data and kept as buffers.

Mean-field q(z) q(pi) prod_k q(mu_k, Lambda_k) (Bishop 2006, eqs. 10.42-10.63): each factor is in the prior's
family, with natural parameters prior + expected sufficient statistics of the responsibilities r_ik:
N_k = sum_i r_ik, S1_k = sum_i r_ik x_i, S2_k = sum_i r_ik x_i x_i^T,

    alpha_k = alpha0 + N_k,  beta_k = beta0 + N_k,  beta_k m_k = beta0 m0 + S1_k,  nu_k = nu0 + N_k,
    W_k^-1 + beta_k m_k m_k^T = W0^-1 + beta0 m0 m0^T + S2_k                 (Bishop eqs. 10.58-10.63),

which ``lam`` stores (``alpha``, ``beta``, ``beta_m``, ``S`` = the last line, ``nu``: linear in the natural
parameters, so natural-gradient SVI steps them directly). The E step (Bishop eqs. 10.46, 10.49, 10.64-10.66)

    log rho_ik = E[log pi_k] + 1/2 E[log |Lambda_k|] - D/2 log 2 pi
                 - 1/2 [D / beta_k + nu_k (x_i - m_k)^T W_k (x_i - m_k)].

With r at its optimum, the ELBO is sum_i log sum_k rho_ik - KL(q(pi) || p(pi)) - sum_k KL(q(mu_k, Lambda_k) ||
p(mu_k, Lambda_k)). scikit-learn's ``lower_bound_`` drops the terms that do not depend on q: ours minus theirs is
log C(alpha0 1_K) - N D/2 log 2 pi + K [D/2 log beta0 + log B(W0, nu0) + D (D - 1)/4 log pi] (Bishop's C and B,
eqs. B.23, B.79; tests/models/test_bayes_gmm.py checks it).
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex

from ppvae import (
    ConjugateExponential,
    CoordinateAscentVI,
    Mixture,
    Model,
    PPVAEError,
    check_float,
    check_int,
    register_model,
)
from ppvae.infer.conjugate import (
    ConjugateFit,
    expected_log_dirichlet,
    fit_conjugate,
    kl_dirichlet,
    kl_normal_wishart,
    wishart_expected_log_det,
)


@register_model("bayes_gmm", "Bayesian Gaussian mixture, conjugate Dirichlet / Normal-Wishart priors (Bishop 10.2)")
class BayesGMM(Model, Mixture, CoordinateAscentVI, ConjugateExponential):
    """Bayesian GMM with conjugate priors (module docstring). ``concentration`` = alpha0 (None: 1/K),
    ``beta0``, ``dof`` = nu0 (None: D)."""

    data_kinds = ("real",)

    def __init__(self, K: int = 2, concentration: float | None = None, beta0: float = 1.0, dof: float | None = None):
        super().__init__()
        self.K = check_int("K", K, low=1)
        self.concentration = None if concentration is None else check_float("concentration", concentration, low=0.0,
                                                                              strict=True)
        self.beta0 = check_float("beta0", beta0, low=0.0, strict=True)
        self.dof = None if dof is None else check_float("dof", dof, low=0.0, strict=True)

    def setup(self, data):
        super().setup(data)
        x = data.x
        if x.dim() != 2:
            raise PPVAEError(f"data: bayes_gmm expects an (N, D) array; got shape {tuple(x.shape)}")
        D = x.shape[1]
        if self.dof is not None and self.dof <= D - 1:
            raise PPVAEError(f"dof: expected a number > D - 1 = {D - 1} (the Wishart's degrees of freedom); "
                             f"got {self.dof}")
        xd = x.double()
        cov = torch.cov(xd.T).reshape(D, D) if len(x) > 1 else torch.eye(D, dtype=torch.float64)
        if not bool((torch.linalg.eigvalsh(cov) > 0).all()):
            cov = torch.eye(D, dtype=torch.float64)  # e.g. the zeros a saved run is set up on before loading
        self.register_buffer("m0", xd.mean(0))
        self.register_buffer("w0_inv", cov)

    # -- hyperparameters ------------------------------------------------------------------------------------------
    @property
    def alpha0(self) -> float:
        return 1.0 / self.K if self.concentration is None else self.concentration

    @property
    def nu0(self) -> float:
        return float(self.m0.shape[0]) if self.dof is None else self.dof

    # -- the generative model ------------------------------------------------------------------------------------
    def forward(self, batch):
        x, K = batch.x, self.K
        m0, w0 = self.m0.to(x.dtype), torch.linalg.inv(self.w0_inv).to(x.dtype)
        weights = pyro.sample("weights", dist.Dirichlet(x.new_full((K,), self.alpha0)))
        with pyro.plate("components", K):
            prec = pyro.sample("precisions", dist.Wishart(x.new_tensor(self.nu0), covariance_matrix=w0))
            locs = pyro.sample("locs", dist.MultivariateNormal(m0, precision_matrix=self.beta0 * prec))
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.MultivariateNormal(Vindex(locs)[..., z, :],
                                                       precision_matrix=Vindex(prec)[..., z, :, :]), obs=x)

    def num_components(self) -> int:
        return self.K

    def mixture_components(self, values):
        return values["weights"], values["locs"], torch.linalg.inv(values["precisions"])

    # -- conjugate-exponential updates ---------------------------------------------------------------------------
    def _stats_of(self, x, r) -> dict:
        return {"n": r.sum(0), "sx": r.T @ x, "sxx": torch.einsum("nk,nd,ne->kde", r, x, x)}

    def ce_init(self, x, generator, init=None):
        """The M step from starting responsibilities: ``init["responsibilities"]`` (N, K), or hard assignments
        to the nearest of K distinct data points drawn at random."""
        if init is not None and "responsibilities" in init:
            r = torch.as_tensor(init["responsibilities"], dtype=torch.float64)
            if r.shape != (x.shape[0], self.K):
                raise PPVAEError(f"init: expected responsibilities of shape ({x.shape[0]}, {self.K}); "
                                 f"got {tuple(r.shape)}")
        else:
            centres = x[torch.randperm(x.shape[0], generator=generator)[: self.K]]
            r = torch.nn.functional.one_hot(torch.cdist(x, centres).argmin(1), self.K).double()
        return self.ce_global(self._stats_of(x, r), None)

    def _unpack(self, lam):
        m = lam["beta_m"] / lam["beta"].unsqueeze(-1)
        w_inv = lam["S"] - lam["beta"][:, None, None] * m.unsqueeze(-1) * m.unsqueeze(-2)
        return m, w_inv

    def log_rho(self, x, lam) -> torch.Tensor:
        """log rho_ik of the E step (module docstring), shape (N, K)."""
        m, w_inv = self._unpack(lam)
        D = x.shape[1]
        chol = torch.linalg.cholesky(w_inv)  # W_k^-1 = L L^T: (x - m)^T W (x - m) = |L^-1 (x - m)|^2
        diff = (x.unsqueeze(1) - m).unsqueeze(-1)  # (N, K, D, 1)
        maha = torch.linalg.solve_triangular(chol, diff, upper=False).squeeze(-1).pow(2).sum(-1)
        return (expected_log_dirichlet(lam["alpha"]) + 0.5 * wishart_expected_log_det(w_inv, lam["nu"])
                - 0.5 * D * math.log(2 * math.pi) - 0.5 * (D / lam["beta"] + lam["nu"] * maha))

    def ce_local(self, x, lam):
        """Responsibilities r = softmax(log rho) and their statistics (N_k, S1_k, S2_k)."""
        return self._stats_of(x, torch.softmax(self.log_rho(x, lam), -1))

    def ce_global(self, stats, lam):
        """Prior + statistics (Bishop eqs. 10.58-10.63 in natural coordinates); independent of ``lam``."""
        m0, b0 = self.m0, self.beta0
        return {"alpha": self.alpha0 + stats["n"], "beta": b0 + stats["n"], "beta_m": b0 * m0 + stats["sx"],
                "S": self.w0_inv + b0 * torch.outer(m0, m0) + stats["sxx"], "nu": self.nu0 + stats["n"]}

    def ce_elbo(self, x, lam):
        m, w_inv = self._unpack(lam)
        kl = kl_dirichlet(lam["alpha"], self.alpha0) + kl_normal_wishart(
            m, lam["beta"], w_inv, lam["nu"], self.m0, self.beta0, self.w0_inv, self.nu0).sum()
        return float(torch.logsumexp(self.log_rho(x, lam), -1).sum() - kl)

    def ce_values(self, lam):
        """E_q[pi], E_q[mu_k] = m_k, E_q[Lambda_k] = nu_k W_k."""
        m, w_inv = self._unpack(lam)
        return {"weights": lam["alpha"] / lam["alpha"].sum(), "locs": m,
                "precisions": lam["nu"][:, None, None] * torch.linalg.inv(w_inv)}

    def ce_draws(self, lam, num_draws):
        m, w_inv = self._unpack(lam)
        prec = dist.Wishart(lam["nu"], precision_matrix=w_inv).sample((num_draws,))
        locs = dist.MultivariateNormal(m, precision_matrix=lam["beta"][:, None, None] * prec).sample()
        return {"weights": dist.Dirichlet(lam["alpha"]).sample((num_draws,)), "precisions": prec, "locs": locs}

    # -- structured VI: q(beta) prod_i p(z_i | x_i, beta) ----------------------------------------------------------
    def _log_lik_given(self, x, values) -> torch.Tensor:
        """log pi_k + log N(x_i | mu_k, Lambda_k^-1), shape (..., N, K), for global values (leading draw dims)."""
        comp = dist.MultivariateNormal(values["locs"].unsqueeze(-3),
                                       precision_matrix=values["precisions"].unsqueeze(-4))
        return values["weights"].log().unsqueeze(-2) + comp.log_prob(x.unsqueeze(-2))

    def ce_local_given(self, x, values):
        """Responsibilities p(z_i | x_i, beta) at one draw beta of the globals, and their statistics."""
        return self._stats_of(x, torch.softmax(self._log_lik_given(x, values), -1))

    def _log_prior_and_q(self, values, lam) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(beta), log q(beta)) for draws ``values`` (leading dim S)."""
        m, w_inv = self._unpack(lam)

        def log_nw(w, locs, prec, mean, beta, w_inv_, nu):
            wish = dist.Wishart(torch.as_tensor(nu, dtype=torch.float64), precision_matrix=w_inv_).log_prob(prec)
            return wish + dist.MultivariateNormal(mean, precision_matrix=beta[..., None, None] * prec).log_prob(locs)

        w, locs, prec = values["weights"], values["locs"], values["precisions"]
        K = self.K
        prior = dist.Dirichlet(torch.full((K,), self.alpha0, dtype=torch.float64)).log_prob(w) + log_nw(
            w, locs, prec, self.m0, torch.full((K,), self.beta0, dtype=torch.float64), self.w0_inv,
            torch.full((K,), self.nu0, dtype=torch.float64)).sum(-1)
        q = dist.Dirichlet(lam["alpha"]).log_prob(w) + log_nw(w, locs, prec, m, lam["beta"], w_inv, lam["nu"]).sum(-1)
        return prior, q

    def structured_bounds(self, x, lam, num_draws: int = 4000, seed: int = 0) -> dict:
        """For q(beta) = ``lam``'s factors: the ELBO of the structured family q(beta) prod_i p(z_i | x_i, beta),
        E_q[log p(x | beta) + log p(beta) - log q(beta)] (z summed out exactly), and the importance-sampling estimate
        log p-hat(x) = log mean_s p(x, beta_s) / q(beta_s) with q as the proposal, from ``num_draws`` draws (float64);
        each with its Monte Carlo standard error. q covers one of the K! label-permuted modes, so log p-hat is the
        evidence of that mode (log p(x) - log K! when the modes do not overlap)."""
        x = torch.as_tensor(x, dtype=torch.float64)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            values = self.ce_draws(lam, num_draws)
        log_lik = torch.logsumexp(self._log_lik_given(x, values), -1).sum(-1)
        prior, q = self._log_prior_and_q(values, lam)
        w = log_lik + prior - q
        log_p = torch.logsumexp(w, 0) - math.log(num_draws)
        ratio = (w - log_p).exp()
        return {"elbo": w.mean().item(), "elbo_se": (w.std() / num_draws**0.5).item(), "log_evidence": log_p.item(),
                "log_evidence_se": (ratio.std() / num_draws**0.5).item(),
                "ess": (ratio.sum() ** 2 / (ratio**2).sum()).item()}

    def responsibilities(self, fit, x) -> torch.Tensor:
        """q(z_i = k) for the rows ``x`` under a fit's q (N, K)."""
        return torch.softmax(self.log_rho(torch.as_tensor(x, dtype=torch.float64), fit.params), -1)

    def fit_cavi(self, data, **options):
        """Variational Bayes by CAVI (:func:`ppvae.fit_conjugate`); ``init={"responsibilities": r}`` starts from r."""
        for key in ("update_alpha", "update_eta"):  # LDA's options, meaningless here
            options.pop(key, None)
        return fit_conjugate(self, data, **options)

    def load_cavi(self, path):
        return ConjugateFit.load(path)

    def __repr__(self):
        return f"BayesGMM(K={self.K})"


__all__ = ["BayesGMM"]
