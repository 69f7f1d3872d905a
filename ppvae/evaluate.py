"""Per-datapoint log p(x) by importance sampling, with diagnostics.

For every data point, with the global latents G fixed at the fit's point estimate and K draws of the
local continuous latents c_ik from a proposal q (the fitted guide, the prior, or a user's guide)::

    log p(x_i | G) ~ log (1/K) sum_k w_ik,     w_ik = sum_{z_i} p(x_i, z_i, c_ik | G) / q(c_ik | x_i)

(Burda et al. 2015, eq. 8; discrete locals z_i are summed out exactly inside each weight). The
estimate is a lower bound in expectation that tightens with K (Burda et al. 2015, theorem 1); K = 1
is the ELBO. Per point it reports the effective sample size 1 / sum_k wbar_ik^2 of the normalized
weights (Kong 1992) and the Pareto k-hat of the weights (Yao et al. 2018, "Yes, but did it work?",
sec. 2; computed by ``arviz.psislw``): k-hat > 0.7 means the estimate is unreliable.

:func:`log_evidence` (in :mod:`ppvae.evidence`, importable from here) estimates log p(X) by importance
sampling over the globals, by AIS over all latents or by bridge sampling from NUTS draws.

Weights are computed vectorized over particles (:mod:`ppvae._importance`), batched over data points
in chunks whose size is given or chosen from free memory, halved on an out-of-memory error; the
log-sum-exp is taken in float64.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch
from pyro import poutine

from ._evaluate_kinds import evaluate_saved
from ._importance import (
    auto_chunk,
    autoguide_subsample,
    check_guide_is_factorized,
    check_log_weights,
    local_log_weights,
    run_chunks,
)
from ._validation import PPVAEError, check_choice, check_int, one_line
from .data import Batch, Dataset
from .evidence import LogEvidence, log_evidence  # noqa: F401 -- re-exported (moved to evidence.py)
from .model import is_local, latent_sites
from .runs import run_dataset, run_kind, update_metrics, write_figure

__all__ = ["LogMarginal", "LogEvidence", "ImportanceWarning", "log_marginal", "log_evidence", "psis_khat",
           "evaluate_run"]

KHAT_THRESHOLD = 0.7


class ImportanceWarning(UserWarning):
    """Pareto k-hat above 0.7: the importance-sampling estimate is unreliable for some points."""


def _finite(x: float):
    return float(x) if math.isfinite(x) else None


@dataclass
class LogMarginal:
    """Per-point estimates of log p(x_i | G) (float64 tensors of shape (N,)) and their summaries."""

    values: torch.Tensor
    ess: torch.Tensor
    khat: torch.Tensor
    elbo: torch.Tensor
    mc_stderr: torch.Tensor  # per point, delta method: sqrt((K / ESS - 1) / K)
    num_samples: int  # weights per point: K for importance sampling, the number of chains C for AIS
    proposal: str
    chunk_size: int
    method: str = "is"
    accept_rate: torch.Tensor | None = None  # AIS: per point, mean HMC acceptance over its chains and steps
    settings: dict = field(default_factory=dict)  # AIS: num_steps, num_chains, schedule, leapfrog, step size

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def stderr(self) -> float:
        """Standard error of the mean over data points: sd / sqrt(N)."""
        n = len(self.values)
        return float(self.values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")

    @property
    def mc_stderr_mean(self) -> float:
        """Monte Carlo standard error of ``mean`` given the data: sqrt(sum_i se_i^2) / N."""
        return float(self.mc_stderr.pow(2).sum().sqrt() / len(self.values))

    @property
    def total(self) -> float:
        return float(self.values.sum())

    @property
    def elbo_mean(self) -> float:
        return float(self.elbo.mean())

    @property
    def gap_mean(self) -> float:
        """Mean of log p(x_i) - ELBO_i, an estimate of KL(q(c_i | x_i) || p(c_i | x_i))."""
        return float((self.values - self.elbo).mean())

    @property
    def ess_mean(self) -> float:
        return float(self.ess.mean())

    @property
    def khat_max(self) -> float:
        k = self.khat[torch.isfinite(self.khat)]
        return float(k.max()) if len(k) else float("nan")

    @property
    def num_khat_over_0_7(self) -> int:
        return int((self.khat > KHAT_THRESHOLD).sum())

    def to_dict(self) -> dict:
        """The ``log_marginal`` object of metrics.json (non-finite numbers as null)."""
        return {
            "mean": _finite(self.mean), "stderr": _finite(self.stderr), "total": _finite(self.total),
            "num_points": len(self.values), "num_samples": self.num_samples, "proposal": self.proposal,
            "ess_mean": _finite(self.ess_mean), "ess_min": _finite(float(self.ess.min())),
            "khat_max": _finite(self.khat_max), "num_khat_over_0_7": self.num_khat_over_0_7,
            "mc_stderr": _finite(self.mc_stderr_mean), "elbo_mean": _finite(self.elbo_mean),
            "gap_mean": _finite(self.gap_mean), "chunk_size": self.chunk_size, "method": self.method,
            **({"settings": self.settings} if self.settings else {}),
            **({} if self.accept_rate is None else {"accept_rate_mean": _finite(float(self.accept_rate.nanmean()))}),
        }


def psis_khat(log_weights: np.ndarray, flat_tol: float = 1e-12) -> np.ndarray:
    """Pareto k-hat per row of ``log_weights`` (rows x samples) by ``arviz.psislw`` (Vehtari et al.
    2024). Rows whose weights are all equal (spread <= flat_tol (1 + |max|)) get -inf (no tail: the
    estimate is exact); with too few samples for the tail fit (fewer than 5 in the tail, i.e. about
    K < 25) every row gets NaN."""
    log_weights = np.asarray(log_weights, dtype=np.float64)
    rows, num = log_weights.shape
    khat = np.full(rows, np.nan)
    spread = log_weights.max(1) - log_weights.min(1)
    flat = (spread <= flat_tol * (1 + np.abs(log_weights.max(1)))) & (num > 1)
    khat[flat] = -np.inf
    tail = math.ceil(min(0.2 * num, 3 * math.sqrt(num)))
    todo = ~flat
    if tail >= 5 and todo.any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import arviz

            khat[todo] = np.asarray(arviz.psislw(log_weights[todo])[1], dtype=np.float64)
    return khat


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Draw from torch's generator seeded with ``seed``, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


# -- inputs -------------------------------------------------------------------------------------------
def _resolve(obj):
    """(model, guide, fit) from a Fit, a (model, guide) pair or a model."""
    from .results import Fit

    if isinstance(obj, Fit):
        return obj.model, obj.guide, obj
    if isinstance(obj, tuple) and len(obj) == 2 and callable(obj[0]) and (obj[1] is None or callable(obj[1])):
        return obj[0], obj[1], None
    if isinstance(obj, torch.nn.Module) and callable(obj):
        return obj, None, None
    raise PPVAEError(f"fit_or_model_guide: expected a ppvae.Fit or a (model, guide) pair; got {type(obj).__name__}")


def _param_of(*modules):
    for m in modules:
        if isinstance(m, torch.nn.Module):
            for t in list(m.parameters()) + list(m.buffers()):
                if t.is_floating_point():
                    return t
    return None


def _dataset(data, fit, model, guide) -> tuple[Dataset, torch.device]:
    if isinstance(data, Dataset):
        ds = data
    elif isinstance(data, Batch):
        ds = Dataset(data.x)
    else:
        ds = Dataset(data, name="data")
    if fit is not None:
        expected = tuple(fit.data_info["x_shape"][1:])
        if tuple(ds.x.shape[1:]) != expected:
            raise PPVAEError(
                f"data: the model was fitted on points of shape {expected}; got points of shape {tuple(ds.x.shape[1:])}"
            )
    ref = _param_of(model, guide)
    device = ref.device if ref is not None else (fit.device if fit is not None else torch.device("cpu"))
    x = ds.x.to(device, dtype=ref.dtype if ref is not None else ds.x.dtype)
    return Dataset(x, name=ds.name, kind=ds.kind, meta=ds.meta), device


def _proposal(proposal, guide):
    if isinstance(proposal, str):
        if proposal == "prior":
            return None, "prior"
        if proposal == "guide":
            if guide is None:
                raise PPVAEError("proposal: 'guide' needs a fitted guide; pass a Fit or a (model, guide) pair, "
                                 "or use 'prior'")
            return guide, "guide"
        raise PPVAEError(f"proposal: expected guide, prior or a guide callable; got '{proposal}'")
    if callable(proposal):
        return proposal, getattr(proposal, "__name__", type(proposal).__name__)
    raise PPVAEError(f"proposal: expected guide, prior or a guide callable; got {type(proposal).__name__}")


def _structure(model, ds: Dataset):
    """(max_plate_nesting, global latent names, local continuous latent names) of the model."""
    probe = Batch(ds.x[:1], None, torch.zeros(1, dtype=torch.long, device=ds.x.device), len(ds))
    try:
        with poutine.block(), pyro.validation_enabled(False):
            tr = poutine.trace(model).get_trace(probe)
    except PPVAEError:
        raise
    except Exception as exc:  # the model's own code failed, not the data's shape: name its exception
        name = getattr(model, "name", None) or type(model).__name__
        raise PPVAEError(f"model '{name}': its forward raised {one_line(exc)} on one point of shape "
                         f"{tuple(ds.x.shape[1:])}") from None
    mpn = 0
    for site in tr.nodes.values():
        if site["type"] == "sample":
            mpn = max([mpn] + [-f.dim for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None])
    sites = latent_sites(tr)
    globals_ = [n for n, s in sites.items() if not is_local(s)]
    local_cont = [n for n, s in sites.items() if is_local(s) and not s["fn"].support.is_discrete]
    return mpn, globals_, local_cont


def _global_values(fit, model, guide, ds, names, given):
    if given is not None:
        missing = sorted(set(names) - set(given))
        if missing:
            raise PPVAEError(f"global_values: expected values for every global latent; missing {', '.join(missing)}")
        return {k: torch.as_tensor(v, device=ds.x.device) for k, v in given.items()}
    if not names:
        return {}
    if fit is not None:
        return fit.global_values(ds)
    if guide is None:
        raise PPVAEError(f"global_values: the model has global latents ({', '.join(names)}); "
                         "pass a guide or global_values")
    from .results import _guide_median

    with torch.no_grad(), pyro.validation_enabled(False):
        values = _guide_median(guide, ds.batch())
    return {k: v.detach() for k, v in values.items() if k in names}


# -- the API ------------------------------------------------------------------------------------------
def log_marginal(fit_or_model_guide, data, *, num_samples: int = 1000, proposal="guide", chunk_size: int | None = None,
                 seed: int = 0, global_values: dict | None = None, warn: bool = True, method: str = "is",
                 num_steps: int = 500, num_chains: int = 16, schedule="sigmoid", num_leapfrog: int = 5,
                 step_size: float = 0.1, target_accept: float = 0.65, progress: bool | None = None) -> LogMarginal:
    """Per-point log p(x_i | G) by importance sampling (see the module docstring) or, with
    ``method="ais"``, by annealed importance sampling (:mod:`ppvae._local_ais`; Neal 2001, Wu et al.
    2017 sec. 3-4): ``num_chains`` chains per point annealed from the proposal to the posterior over
    ``num_steps`` steps of ``schedule`` ('sigmoid', 'linear', a callable or betas; :mod:`ppvae.ais`)
    with HMC transitions of ``num_leapfrog`` leapfrog steps, the step size (from ``step_size``)
    adapted per point toward ``target_accept``. ``num_samples`` is for importance sampling only.

    ``fit_or_model_guide``: a :class:`ppvae.Fit` or a ``(model, guide)`` pair. ``proposal``:
    ``"guide"`` (the fitted guide's local sites), ``"prior"``, or a guide callable. ``chunk_size``:
    data points per vectorized pass (default: chosen from free memory). The globals G are the fit's
    point estimate (:meth:`Fit.global_values`), the guide's median for a pair, or ``global_values``.
    A model whose only local latents are discrete has exact weights: log p(x_i | G) is computed once
    by enumeration, every one of the K weights equals it (ESS = K, k-hat = -inf).
    """
    if check_choice("method", method, ("is", "ais")) == "ais":
        from ._local_ais import ais_log_marginal, check_ais_options

        settings, betas = check_ais_options(num_steps, num_chains, schedule, num_leapfrog, step_size, target_accept)
        num_samples = settings["num_chains"]
    prepared = _prepare(fit_or_model_guide, data, proposal, num_samples, chunk_size, seed)
    num, chunk_size, seed, model, guide, fit, ds, device, q, qname, mpn, global_names, local_cont = prepared
    if q is not None:
        check_guide_is_factorized(q, bool(local_cont))
    if method == "ais":
        out, accept, steps, chunk = ais_log_marginal(prepared, settings, betas, global_values, progress)
        result = LogMarginal(num_samples=num, proposal=qname, chunk_size=chunk, method="ais", accept_rate=accept,
                             settings={**settings, "final_step_size_median": _finite(float(steps.nanmedian()))},
                             **out)
        return _warn_khat(result, warn)
    n = len(ds)
    out = {k: torch.empty(n, dtype=torch.float64) for k in ("values", "ess", "khat", "elbo", "mc_stderr")}
    draws = num if local_cont else 1
    with torch.no_grad(), pyro.validation_enabled(False), _seeded(seed, device):
        globals_ = _global_values(fit, model, guide, ds, global_names, global_values)

        def run(start: int, m: int) -> int:
            idx = torch.arange(start, start + m, device=device)
            batch = Batch(ds.x[start:start + m], None, idx, n)
            with autoguide_subsample(q, n) if q is not None else contextlib.nullcontext():
                log_w, traces = local_log_weights(model, q, batch, draws, mpn, globals_, check=start == 0)
            check_log_weights(log_w, traces)
            _summarize(log_w, num, out, slice(start, start + m))
            return auto_chunk(traces, m, n, device)

        chunk = run_chunks(n, chunk_size, run, probe=max(2, min(16, 100_000 // draws)))
    return _warn_khat(LogMarginal(num_samples=num, proposal=qname, chunk_size=chunk, **out), warn)


def _warn_khat(result: LogMarginal, warn: bool) -> LogMarginal:
    if warn and result.num_khat_over_0_7:
        advice = ("more chains or steps" if result.method == "ais" else
                  "a better proposal, more samples, or method='ais'")
        warnings.warn(
            f"log_marginal: Pareto k-hat > {KHAT_THRESHOLD} for {result.num_khat_over_0_7} of {len(result.values)} "
            f"points (max {result.khat_max:.2f}): the estimate for those points is unreliable (Yao et al. 2018); "
            f"use {advice}", ImportanceWarning, stacklevel=3,
        )
    return result


def _prepare(fit_or_model_guide, data, proposal, num_samples, chunk_size, seed) -> tuple:
    """The checked arguments and the pieces both estimators start from: (num_samples, chunk_size,
    seed, model, guide, fit, dataset, device, proposal, proposal name, max plate nesting, global
    site names, continuous local site names)."""
    num = check_int("num_samples", num_samples, low=1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)
    seed = check_int("seed", seed)
    model, guide, fit = _resolve(fit_or_model_guide)
    ds, device = _dataset(data, fit, model, guide)
    q, qname = _proposal(proposal, guide)
    return (num, chunk_size, seed, model, guide, fit, ds, device, q, qname, *_structure(model, ds))


def _summarize(lw: torch.Tensor, num: int, out: dict, where: slice) -> None:
    """Per-point log-mean-exp, ELBO, ESS and k-hat of log-weights ``lw`` (draws, m) in float64;
    weights equal to within 64 ulps of the dtype they were computed in count as exactly equal."""
    flat_tol = 64 * torch.finfo(lw.dtype).eps
    lw = lw.double()
    out["mc_stderr"][where] = 0.0
    if lw.shape[0] == 1 and num > 1:  # exact weights, all equal
        out["values"][where] = lw[0].cpu()
        out["elbo"][where] = lw[0].cpu()
        out["ess"][where] = float(num)
        out["khat"][where] = -math.inf
        return
    lse = torch.logsumexp(lw, dim=0)
    out["values"][where] = (lse - math.log(num)).cpu()
    out["elbo"][where] = lw.mean(0).cpu()
    out["ess"][where] = (1.0 / torch.exp(2 * (lw - lse)).sum(0)).cpu()
    out["khat"][where] = torch.from_numpy(psis_khat(lw.T.cpu().numpy(), flat_tol))
    out["mc_stderr"][where] = ((num / out["ess"][where] - 1).clamp_min(0) / num).sqrt()


# -- a saved run (the ``ppvae evaluate`` command) -----------------------------------------------------
def _run_data(fit, data: str | None) -> Dataset:
    """The data set to evaluate a fit on (:func:`ppvae.runs.run_dataset` of its recorded data)."""
    return run_dataset(fit.data_info, data)


def evaluate_run(run_dir: str, data: str | None = None, *, num_samples: int = 1000, proposal: str = "guide",
                 chunk_size: int | None = None, seed: int = 0, method: str = "is", **ais) -> tuple[torch.Tensor, dict]:
    """Evaluate a saved run on ``data`` (default: its own) and add a ``log_marginal`` object to
    ``RUN_DIR/metrics.json`` (other keys kept) and ``log_marginal.png``, both written atomically.

    An SVI run (:meth:`Fit.load`): per-point log p(x_i | G) by importance sampling (this module) or,
    with ``method="ais"`` (options ``ais`` as :func:`log_marginal`'s), :func:`ppvae._ais_run.evaluate_run_ais`.
    EM, MCMC and CAVI runs: :func:`ppvae._evaluate_kinds.evaluate_saved` (exact per-point log-likelihood,
    log pointwise predictive density beside PSIS-LOO, per-document ELBO). Returns (per-point values, entry)."""
    from ._ais_run import evaluate_run_ais
    from .plots import plot_log_marginal
    from .results import Fit

    kind = run_kind(run_dir)
    if check_choice("method", method, ("is", "ais")) == "ais" and kind == "svi":
        return evaluate_run_ais(run_dir, data, num_samples=num_samples, proposal=proposal, chunk_size=chunk_size,
                                seed=seed, **ais)
    if kind != "svi":
        if method != "is":
            raise PPVAEError(f"--method: '{method}' estimates log p(x) for SVI runs; {run_dir} holds a run of "
                             f"kind '{kind}', whose per-point numbers need no sampler (omit --method)")
        return evaluate_saved(run_dir, data, seed=seed)
    fit = Fit.load(run_dir)
    ds = _run_data(fit, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImportanceWarning)
        result = log_marginal(fit, ds, num_samples=num_samples, proposal=proposal, chunk_size=chunk_size, seed=seed)
    entry = {**result.to_dict(), "data": ds.name, "seed": seed,
             "warnings": [str(w.message) for w in caught if issubclass(w.category, ImportanceWarning)]}
    update_metrics(run_dir, "log_marginal", entry)
    write_figure(run_dir, "log_marginal.png", lambda path: plot_log_marginal(
        result.values.numpy(), result.khat.numpy(), path,
        f"{fit.model.name}: log p(x) by importance sampling, K={num_samples}, {result.proposal} proposal"))
    return result, entry
