"""The Normal-Gamma model: a univariate Gaussian with unknown mean and precision under the
conjugate Normal-Gamma prior (Murphy 2007, "Conjugate Bayesian analysis of the Gaussian
distribution", sec. 3)::

    tau ~ Gamma(a0, b0)                      (shape a0, rate b0)
    mu | tau ~ N(mu0, 1 / (lambda0 tau))
    x_i | mu, tau ~ N(mu, 1 / tau),  i = 1..n

Both latents are global; the posterior is again Normal-Gamma with (Murphy 2007, eqs. 85-89)::

    mu_n = (lambda0 mu0 + n xbar) / (lambda0 + n),   lambda_n = lambda0 + n,   a_n = a0 + n / 2,
    b_n = b0 + 1/2 sum_i (x_i - xbar)^2 + lambda0 n (xbar - mu0)^2 / (2 (lambda0 + n)),

and the evidence is closed form (Murphy 2007, eq. 95)::

    p(D) = Gamma(a_n) / Gamma(a0) * b0^a0 / b_n^a_n * (lambda0 / lambda_n)^(1/2) * (2 pi)^(-n/2).

It is the exact reference for evidence estimates (``ppvae.log_evidence``) and for MCMC.

Mean-field VI (Bishop 2006, sec. 10.1.3; :func:`ppvae.fit_conjugate`, :func:`ppvae.fit_svi_natural`) with
q(mu, tau) = q(mu) q(tau): the optimal factors (Bishop 2006, eq. 10.9) are

    q(mu) = N(mu | mu_n, 1 / (lambda_n E[tau])),  mu_n and lambda_n as above,
    q(tau) = Gamma(tau | a_n, b_n),  a_n = a0 + (n + 1) / 2,
    b_n = b0 + 1/2 E_mu[sum_i (x_i - mu)^2 + lambda0 (mu - mu0)^2],

coupled through E[tau] and E_mu, so CAVI iterates them to the fixed point. The shape is a0 + (n + 1)/2, not
a0 + n/2 as in the seed notes' eq. 86 (and in Bishop's eq. 10.29, whose prior on mu does not scale with tau):
log q(tau) collects every term of E_mu[log p(x, mu, tau)] in log tau, and there are n/2 of them from the
likelihood plus 1/2 from p(mu | tau) = N(mu0, 1 / (lambda0 tau)), whose normalizer is (lambda0 tau)^(1/2).
Dropping that 1/2 gives a factor that is not the coordinate optimum: on the test data of
tests/infer/test_conjugate.py the ELBO is -32.177252 at the mean-field optimum and -32.184520 with a_n = a0 + n/2.
The exact posterior's a_n = a0 + n/2 (Murphy 2007, eq. 87) is no contradiction: there mu is integrated out
under its tau-dependent conditional, which absorbs the 1/2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import pyro
import pyro.distributions as dist
import torch

from ppvae import ConjugateExponential, CoordinateAscentVI, ExactPosterior, Model, PPVAEError, register_model
from ppvae.infer.conjugate import ConjugateFit, fit_conjugate, gamma_expectations


@dataclass(frozen=True)
class NormalGammaPosterior:
    """NG(mu, tau | mu_n, lambda_n, a_n, b_n) and its moments (all floats).

    Marginals: tau ~ Gamma(a_n, b_n); mu ~ Student-t_{2 a_n}(mu_n, b_n / (a_n lambda_n)) (Murphy 2007,
    eqs. 90-91). ``corr_mu_tau`` is 0: E[mu tau] = E[tau E[mu | tau]] = mu_n E[tau], so mu and tau are
    uncorrelated (though dependent: Var[mu | tau] = 1 / (lambda_n tau)).
    """

    mu_n: float
    lambda_n: float
    a_n: float
    b_n: float
    mean_mu: float
    mean_tau: float
    var_mu: float  # b_n / (lambda_n (a_n - 1)), finite for a_n > 1
    var_tau: float  # a_n / b_n^2
    mean_log_tau: float  # digamma(a_n) - log b_n
    corr_mu_tau: float

    def to_dict(self) -> dict:
        return asdict(self)


@register_model("normal_gamma", "Gaussian with unknown mean and precision, conjugate Normal-Gamma prior")
class NormalGamma(Model, ExactPosterior, CoordinateAscentVI, ConjugateExponential):
    """Univariate Gaussian, Normal-Gamma prior on (mu, tau); see the module docstring."""

    data_kinds = ("real",)

    def __init__(self, mu0: float = 0.0, lambda0: float = 1.0, a0: float = 1.0, b0: float = 1.0):
        super().__init__()
        for name, value in (("lambda0", lambda0), ("a0", a0), ("b0", b0)):
            if not float(value) > 0:
                raise PPVAEError(f"{name}: expected a number > 0; got {value}")
        self.mu0, self.lambda0, self.a0, self.b0 = float(mu0), float(lambda0), float(a0), float(b0)

    def setup(self, data):
        super().setup(data)
        if data.x.dim() != 2 or data.x.shape[1] != 1:
            raise PPVAEError(f"data: normal_gamma expects one value per row, shape (N, 1); got {tuple(data.x.shape)}")

    def forward(self, batch):
        x = batch.x
        tau = pyro.sample("tau", dist.Gamma(x.new_tensor(self.a0), x.new_tensor(self.b0)))
        mu = pyro.sample("mu", dist.Normal(x.new_tensor(self.mu0), (self.lambda0 * tau).rsqrt()))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal(mu, tau.rsqrt()), obs=x[..., 0])

    def init_values(self, data, generator):
        x = data.x[:, 0]
        return {"mu": x.mean(), "tau": 1.0 / x.var().clamp_min(1e-6)}

    # -- closed forms -----------------------------------------------------------------------------
    def _values(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
        if x.numel() == 0:
            raise PPVAEError("x: expected at least one observation; got none")
        return x

    def exact_posterior(self, x) -> NormalGammaPosterior:
        """Posterior NG(mu_n, lambda_n, a_n, b_n) given observations ``x`` (Murphy 2007, eqs. 85-89)."""
        x = self._values(x)
        n, xbar = x.numel(), float(x.mean())
        ss = float(((x - xbar) ** 2).sum())
        lambda_n = self.lambda0 + n
        mu_n = (self.lambda0 * self.mu0 + n * xbar) / lambda_n
        a_n = self.a0 + n / 2
        b_n = self.b0 + 0.5 * ss + self.lambda0 * n * (xbar - self.mu0) ** 2 / (2 * lambda_n)
        var_mu = b_n / (lambda_n * (a_n - 1)) if a_n > 1 else math.inf
        return NormalGammaPosterior(
            mu_n=mu_n, lambda_n=lambda_n, a_n=a_n, b_n=b_n, mean_mu=mu_n, mean_tau=a_n / b_n, var_mu=var_mu,
            var_tau=a_n / b_n**2, mean_log_tau=float(torch.special.digamma(torch.tensor(a_n, dtype=torch.float64)))
            - math.log(b_n), corr_mu_tau=0.0,
        )

    def log_evidence_exact(self, x) -> float:
        """log p(x_1..n) (Murphy 2007, eq. 95)."""
        x = self._values(x)
        post = self.exact_posterior(x)
        n = x.numel()
        return (
            math.lgamma(post.a_n) - math.lgamma(self.a0) + self.a0 * math.log(self.b0) - post.a_n * math.log(post.b_n)
            + 0.5 * math.log(self.lambda0 / post.lambda_n) - 0.5 * n * math.log(2 * math.pi)
        )

    def posterior_guide(self, x, y=None):
        """A guide sampling the exact posterior (tau ~ Gamma(a_n, b_n), mu | tau ~ N(mu_n, 1/(lambda_n
        tau))): with it as proposal every importance weight equals p(x)."""
        post = self.exact_posterior(x)

        def guide(batch):
            t = batch.x.new_tensor
            tau = pyro.sample("tau", dist.Gamma(t(post.a_n), t(post.b_n)))
            pyro.sample("mu", dist.Normal(t(post.mu_n), (post.lambda_n * tau).rsqrt()))

        return guide

    # -- mean-field VI: q(mu) = N(m, 1/p), q(tau) = Gamma(a, b); lam = {mu_eta: p m, mu_prec: p, a, b} -------------
    ce_blocks = (("mu_eta", "mu_prec"), ("a", "b"))

    def ce_init(self, x, generator, init=None):
        """The prior's factors: q(tau) = Gamma(a0, b0), q(mu) = N(mu0, 1 / (lambda0 E[tau])) (or ``init``, a lam)."""
        if init is not None:
            return {k: torch.as_tensor(init[k], dtype=torch.float64) for k in ("mu_eta", "mu_prec", "a", "b")}
        t = lambda v: torch.tensor(float(v), dtype=torch.float64)  # noqa: E731
        prec = self.lambda0 * self.a0 / self.b0
        return {"mu_eta": t(prec * self.mu0), "mu_prec": t(prec), "a": t(self.a0), "b": t(self.b0)}

    def ce_local(self, x, lam):
        """No local latents: the sufficient statistics (n, sum x_i, sum x_i^2)."""
        x = x.reshape(-1)
        return {"n": x.new_tensor(float(x.numel())), "sx": x.sum(), "sxx": (x * x).sum()}

    def _mu_moments(self, lam):
        m = lam["mu_eta"] / lam["mu_prec"]
        return m, m * m + 1 / lam["mu_prec"]

    def ce_global(self, stats, lam):
        """Both factors' updates from ``lam`` (module docstring): p = (lambda0 + n) E[tau],
        p m = E[tau] (lambda0 mu0 + sum x); a = a0 + (n + 1)/2,
        b = b0 + 1/2 [sum x^2 - 2 E[mu] sum x + n E[mu^2] + lambda0 (E[mu^2] - 2 E[mu] mu0 + mu0^2)]."""
        e_tau = lam["a"] / lam["b"]
        m, m2 = self._mu_moments(lam)
        n, sx, sxx = stats["n"], stats["sx"], stats["sxx"]
        return {"mu_eta": e_tau * (self.lambda0 * self.mu0 + sx), "mu_prec": (self.lambda0 + n) * e_tau,
                "a": self.a0 + 0.5 * (n + 1),
                "b": self.b0 + 0.5 * (sxx - 2 * m * sx + n * m2 + self.lambda0 * (m2 - 2 * m * self.mu0 + self.mu0**2))}

    def ce_elbo(self, x, lam):
        """E_q[log p(x, mu, tau)] + H[q(mu)] + H[q(tau)] in nats."""
        s = self.ce_local(x, lam)
        e_tau, e_log_tau = gamma_expectations(lam["a"], lam["b"])
        m, m2 = self._mu_moments(lam)
        log2pi = math.log(2 * math.pi)
        lik = 0.5 * s["n"] * (e_log_tau - log2pi) - 0.5 * e_tau * (s["sxx"] - 2 * m * s["sx"] + s["n"] * m2)
        prior_mu = 0.5 * (math.log(self.lambda0) + e_log_tau - log2pi) - 0.5 * self.lambda0 * e_tau * (
            m2 - 2 * m * self.mu0 + self.mu0**2)
        prior_tau = self.a0 * math.log(self.b0) - math.lgamma(self.a0) + (self.a0 - 1) * e_log_tau - self.b0 * e_tau
        entropy = 0.5 * (log2pi + 1 - lam["mu_prec"].log()) + dist.Gamma(lam["a"], lam["b"]).entropy()
        return float(lik + prior_mu + prior_tau + entropy)

    def ce_values(self, lam):
        m, _ = self._mu_moments(lam)
        return {"tau": lam["a"] / lam["b"], "mu": m}

    def ce_draws(self, lam, num_draws):
        m, _ = self._mu_moments(lam)
        return {"tau": dist.Gamma(lam["a"], lam["b"]).sample((num_draws,)),
                "mu": dist.Normal(m, lam["mu_prec"].rsqrt()).sample((num_draws,))}

    def fit_cavi(self, data, **options):
        """Mean-field CAVI (:func:`ppvae.fit_conjugate`) to the fixed point of the module docstring's updates."""
        for key in ("update_alpha", "update_eta"):  # LDA's options, meaningless here
            options.pop(key, None)
        return fit_conjugate(self, data, **options)

    def load_cavi(self, path):
        return ConjugateFit.load(path)


__all__ = ["NormalGamma", "NormalGammaPosterior"]
