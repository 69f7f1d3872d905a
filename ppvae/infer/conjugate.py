"""Conjugate-exponential mean-field VI: the shared pieces and the batch CAVI driver.

For a model whose complete conditionals are in the exponential family, the optimal mean-field factor of
a block z_j is (Bishop 2006, eq. 10.9; Hoffman, Blei, Wang & Paisley 2013, sec. 2.2, eqs. 14-15)

    log q_j*(z_j) = E_{-j}[log p(x, z)] + const,   so   q_j = h(z_j) exp(lambda_j^T t(z_j) - a(lambda_j)),
    lambda_j = E_{-j}[eta_j(x, z_{-j}, alpha)]                 (the expected natural parameter),

and for a global factor of a conditionally conjugate model lambda = alpha + sum_i E_q[t(x_i, z_i)]: the
prior's natural parameter plus the expected sufficient statistics of the data and the local latents.
CAVI (Bishop 2006, sec. 10.1.1; Blei, Kucukelbir & McAuliffe 2017, sec. 2.4) sets the factors in turn;
each update maximizes the ELBO in its block, so the ELBO never decreases.

A model declares :class:`ppvae.ConjugateExponential` (``ce_init``, ``ce_local``, ``ce_global``,
``ce_elbo``, ``ce_values``, ``ce_draws``); :func:`fit_conjugate` runs batch CAVI on it and
:func:`ppvae.infer.natural_svi.fit_svi_natural` the stochastic natural-gradient version on minibatches. Both
return a :class:`ConjugateFit`. The expectations below are the ones the models share (Bishop 2006,
appendix B and eqs. 10.64-10.66).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch.distributions import Dirichlet, kl_divergence

from ppvae._util.validation import PPVAEError, check_float, check_int
from ppvae.data.loaders import Dataset
from ppvae.model.capabilities import ConjugateExponential, require
from ppvae.results.base import Result
from ppvae.results.kinds import register_kind
from ppvae.runs import directory as runs

__all__ = ["ConjugateFit", "fit_conjugate", "expected_log_dirichlet", "kl_dirichlet", "gamma_expectations",
           "wishart_log_norm", "wishart_expected_log_det", "kl_normal_wishart", "natural_step"]


# -- expectations under the exponential families the models use --------------------------------------------------
def expected_log_dirichlet(conc: torch.Tensor) -> torch.Tensor:
    """E[log x_k] under Dir(conc), row-wise: psi(conc_k) - psi(sum_j conc_j) (Bishop 2006, eq. B.21)."""
    return torch.digamma(conc) - torch.digamma(conc.sum(-1, keepdim=True))


def kl_dirichlet(conc: torch.Tensor, prior: torch.Tensor | float) -> torch.Tensor:
    """KL(Dir(conc) || Dir(prior)) row-wise (torch's closed form)."""
    prior = torch.as_tensor(prior, dtype=conc.dtype).expand_as(conc)
    return kl_divergence(Dirichlet(conc), Dirichlet(prior))


def gamma_expectations(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(E[tau], E[log tau]) under Gamma(shape a, rate b): (a / b, psi(a) - log b) (Bishop 2006, eq. B.27, B.30)."""
    return a / b, torch.digamma(a) - b.log()


def wishart_log_norm(w_inv: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """log B(W, nu) of the Wishart density W(Lambda | W, nu) = B(W, nu) |Lambda|^{(nu-D-1)/2} exp(-tr(W^-1 Lambda)/2),
    given W^-1 (Bishop 2006, eq. B.79): -nu/2 log|W| - nu D/2 log 2 - log Gamma_D(nu / 2)."""
    D = w_inv.shape[-1]
    return 0.5 * nu * torch.logdet(w_inv) - 0.5 * nu * D * math.log(2) - torch.special.multigammaln(0.5 * nu, D)


def wishart_expected_log_det(w_inv: torch.Tensor, nu: torch.Tensor) -> torch.Tensor:
    """E[log |Lambda|] under W(W, nu): sum_i psi((nu + 1 - i) / 2) + D log 2 + log |W| (Bishop 2006, eq. 10.65)."""
    D = w_inv.shape[-1]
    i = torch.arange(D, dtype=w_inv.dtype)
    return torch.digamma(0.5 * (nu.unsqueeze(-1) - i)).sum(-1) + D * math.log(2) - torch.logdet(w_inv)


def kl_normal_wishart(m, beta, w_inv, nu, m0, beta0, w0_inv, nu0) -> torch.Tensor:
    """KL(NW(m, beta, W, nu) || NW(m0, beta0, W0, nu0)) per component, NW(mu, Lambda) = N(mu | m, (beta Lambda)^-1)
    W(Lambda | W, nu): the Gaussian part in expectation over Lambda (E[Lambda] = nu W),
    1/2 [D beta0 / beta - D + D log(beta / beta0) + beta0 nu (m - m0)^T W (m - m0)], plus the Wishart part
    log B(W, nu) - log B(W0, nu0) + (nu - nu0)/2 E[log |Lambda|] - nu D / 2 + nu/2 tr(W0^-1 W)."""
    D = m.shape[-1]
    w = torch.linalg.inv(w_inv)
    d = m - m0
    maha = torch.einsum("...i,...ij,...j->...", d, w, d)
    gauss = 0.5 * (D * beta0 / beta - D + D * torch.log(beta / beta0) + beta0 * nu * maha)
    trace = torch.einsum("...ij,...ji->...", w0_inv.expand_as(w), w)
    wish = (wishart_log_norm(w_inv, nu) - wishart_log_norm(w0_inv, torch.as_tensor(nu0, dtype=nu.dtype))
            + 0.5 * (nu - nu0) * wishart_expected_log_det(w_inv, nu) - 0.5 * nu * D + 0.5 * nu * trace)
    return gauss + wish


def natural_step(lam: dict, lam_hat: dict, rho: float) -> dict:
    """lam + rho (lam_hat - lam): a step of size rho along the natural gradient lam_hat - lam of the ELBO
    (Hoffman et al. 2013, eq. 32). The coordinates are the natural parameters (or linear in them), whose set is
    convex, so every step with rho in (0, 1] stays a valid distribution."""
    return {k: (1 - rho) * v + rho * lam_hat[k] for k, v in lam.items()}


# -- the result ---------------------------------------------------------------------------------------------------
@dataclass
class ConjugateFit(Result):
    """The result of :func:`fit_conjugate` (``method`` "cavi") or :func:`ppvae.fit_svi_natural`
    ("svi_natural"): q's global parameters ``params`` (the model's ``lam``), the ELBO trace and timing.

    Implements :class:`ppvae.Result`: ``global_values`` is the posterior mean under q (``model.ce_values``),
    ``latent_draws`` draws the globals from q (``model.ce_draws``), and ``predict`` draws the discrete locals
    from their exact conditional given each draw; ``history`` is ``{"elbo": trace}``."""

    model: object
    params: dict
    trace: list[float]
    converged: bool
    time_s: float = 0.0
    method: str = "cavi"
    config: dict = field(default_factory=dict)
    data_info: dict = field(default_factory=dict)
    trace_steps: list[int] = field(default_factory=list)  # the iteration (step) of each trace entry

    history_key = "elbo"

    @property
    def history(self) -> dict:
        return {"elbo": list(self.trace), "step": list(self.trace_steps)}

    @property
    def elbo(self) -> float:
        return self.trace[-1]

    @property
    def num_iterations(self) -> int:
        return self.trace_steps[-1] if self.trace_steps else len(self.trace) - 1

    alpha = None  # the CLI's CAVI metrics record an LDA fit's alpha; none here

    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        return {k: v.to(torch.get_default_dtype()) for k, v in self.model.ce_values(self.params).items()}

    def latent_draws(self, data, num_draws: int | None = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        S = check_int("num_draws", num_draws or 1000, low=1)
        return {k: v.to(torch.get_default_dtype()) for k, v in self.model.ce_draws(self.params, S).items()}

    def __repr__(self) -> str:
        return (f"ConjugateFit(model={getattr(self.model, 'name', type(self.model).__name__)}, method={self.method!r}, "
                f"elbo={self.elbo:.6f}, iterations={self.num_iterations}, converged={self.converged})")

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write a run directory of kind ``conjugate`` (:mod:`ppvae.runs`): ``params`` and the model's buffers in
        ``params.pt``, the ELBO trace in ``history.json``, the method and settings in ``config.json``.
        Another ppvae run at ``path`` is replaced whole only with ``overwrite=True`` (``runs.save_run``)."""
        runs.save_run(self, path, self._write, overwrite)

    def _write(self, path: str) -> None:
        config = runs.make_config("conjugate", self.model, self.data_info, method=self.method, converged=self.converged,
                                  time_s=self.time_s, cavi=self.config, trace_steps=self.trace_steps)
        runs.write_tensors(path, runs.PARAMS, {"params": self.params, "model": self.model.state_dict()})
        runs.write_json(path, runs.HISTORY, self.trace, indent=None)
        runs.write_config(path, config)

    @classmethod
    def load(cls, path: str) -> "ConjugateFit":
        """Read a run directory written by :meth:`save` (tensors only, version checked; no code runs)."""
        config = runs.read_config(path, "conjugate")
        state = runs.read_tensors(path, runs.PARAMS, ("params", "model"))
        trace = runs.read_json(path, runs.HISTORY)
        model = runs.run_model(config, path)
        try:
            model.setup(runs.stub_dataset(config["data"]))
            model.load_state_dict(state["model"])
            return cls(model, dict(state["params"]), trace, bool(config["converged"]), float(config["time_s"]),
                       str(config["method"]), dict(config["cavi"]), config["data"], list(config["trace_steps"]))
        except (KeyError, TypeError, RuntimeError) as exc:
            raise PPVAEError(f"load: {path} is not a complete ppvae conjugate-VI run ({exc})") from None


def prepare(model, data, what: str) -> tuple[Dataset, torch.Tensor]:
    """Check the capability, set the model up on ``data`` and return (Dataset, float64 x)."""
    require(model, ConjugateExponential, what)
    if not isinstance(data, Dataset):
        data = Dataset(data)
    model.setup(data)
    return data, data.x.to(torch.float64)


def cavi_sweep(model, x: torch.Tensor, lam: dict) -> dict:
    """One CAVI iteration: the local factors (inside ``ce_local``), then each global block in ``ce_blocks`` order,
    each from the blocks already updated (Gauss-Seidel: every update maximizes the ELBO in its block)."""
    stats = model.ce_local(x, lam)
    blocks = model.ce_blocks or (tuple(lam),)
    for block in blocks:
        lam_hat = model.ce_global(stats, lam)
        lam = {**lam, **{k: lam_hat[k] for k in block}}
    return lam


def fit_conjugate(model, data, *, max_iter: int = 1000, rel_tol: float = 1e-12, init: dict | None = None,
                  seed: int = 0) -> ConjugateFit:
    """Batch CAVI for a model declaring :class:`ppvae.ConjugateExponential` on all of ``data`` (float64).

    Iterates :func:`cavi_sweep` from ``model.ce_init`` until an iteration raises the ELBO by less than
    ``rel_tol`` x ``|ELBO|``; ``history["elbo"][0]`` is the ELBO at the start and no later entry is below the one
    before (up to round-off). ``init``: passed to ``ce_init`` (e.g. a mixture's starting responsibilities)."""
    data, x = prepare(model, data, "fit_conjugate")
    max_iter = check_int("max_iter", max_iter, low=1)
    rel_tol = check_float("rel_tol", rel_tol, low=0.0)
    gen = torch.Generator().manual_seed(check_int("seed", seed, low=0))
    start = time.perf_counter()
    lam = model.ce_init(x, gen, init)
    trace, converged = [model.ce_elbo(x, lam)], False
    for _ in range(max_iter):
        lam = cavi_sweep(model, x, lam)
        trace.append(model.ce_elbo(x, lam))
        if not math.isfinite(trace[-1]):
            raise PPVAEError(f"cavi: the ELBO became {trace[-1]} at iteration {len(trace) - 1}")
        if trace[-1] - trace[-2] <= rel_tol * abs(trace[-1]):
            converged = True
            break
    return ConjugateFit(model, lam, trace, converged, time.perf_counter() - start, "cavi",
                        {"max_iter": max_iter, "rel_tol": rel_tol, "seed": seed}, runs.data_info(data),
                        list(range(len(trace))))


register_kind("conjugate", ConjugateFit.load, "a mean-field posterior of a conjugate-exponential model by CAVI or "
              "natural-gradient SVI (ppvae cavi [--method natural])")
