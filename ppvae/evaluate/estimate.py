"""What the log p(x) / log p(X) estimators share: their inputs checked and resolved, the Pareto k-hat, the
per-point summary of log-weights, and the :class:`LogEvidence` result (used by :mod:`ppvae.evaluate.marginal`,
:mod:`ppvae.evaluate.evidence`, :mod:`ppvae.evaluate.local_ais`, :mod:`ppvae.evaluate.evidence_ais`,
:mod:`ppvae.evaluate.bridge` and
:mod:`ppvae.evaluate.bdmc_bounds`, which sit above it)."""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyro
import torch

from ppvae._util.validation import PPVAEError, check_int, one_line
from ppvae.data.loaders import Batch, Dataset
from ppvae.infer.importance import check_particles_fit
from ppvae.infer.svi.fit import Fit, guide_median
from ppvae.model.capabilities import check_mask_support
from ppvae.model.structure import structure_of
from ppvae.runs.directory import run_dataset

__all__ = ["KHAT_THRESHOLD", "ImportanceWarning", "LogEvidence", "psis_khat"]


KHAT_THRESHOLD = 0.7


class ImportanceWarning(UserWarning):
    """Pareto k-hat above 0.7: the importance-sampling estimate is unreliable for some points."""


def _finite(x: float):
    return float(x) if math.isfinite(x) else None


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
            import arviz  # heavy: loaded only when a k-hat is computed

            khat[todo] = np.asarray(arviz.psislw(log_weights[todo])[1], dtype=np.float64)
    return khat


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Draw from torch's generator seeded with ``seed``, leaving the caller's RNG state untouched."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _resolve(obj):
    """(model, guide, fit) from a Fit, a (model, guide) pair or a model."""
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
        ds = Dataset(data.x, data.y, mask=data.mask)
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
    y = None if ds.y is None else ds.y.to(device, dtype=x.dtype if ds.y.is_floating_point() else ds.y.dtype)
    mask = None if ds.mask is None else ds.mask.to(device)
    return Dataset(x, y, name=ds.name, kind=ds.kind, meta=ds.meta, mask=mask), device


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
    """(max_plate_nesting, global latent names, local continuous latent names) of the model
    (:func:`ppvae.model.structure.structure_of`, on one point of the data set subsampled from all of it)."""
    y = None if ds.y is None else ds.y[:1]  # a regression's response rides with x
    probe = Batch(ds.x[:1], y, torch.zeros(1, dtype=torch.long, device=ds.x.device), len(ds))
    try:
        structure = structure_of(model, probe)
    except PPVAEError:
        raise
    except Exception as exc:  # the model's own code failed, not the data's shape: name its exception
        name = getattr(model, "name", None) or type(model).__name__
        raise PPVAEError(f"model '{name}': its forward raised {one_line(exc)} on one point of shape "
                         f"{tuple(ds.x.shape[1:])}") from None
    return structure.max_plate_nesting, list(structure.global_sites), list(structure.continuous_local_sites)


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

    with torch.no_grad(), pyro.validation_enabled(False):
        values = guide_median(guide, ds.batch())
    return {k: v.detach() for k, v in values.items() if k in names}


def _prepare(fit_or_model_guide, data, proposal, num_particles, chunk_size, seed) -> tuple:
    """The checked arguments and the pieces both estimators start from: (num_particles, chunk_size,
    seed, model, guide, fit, dataset, device, proposal, proposal name, max plate nesting, global
    site names, continuous local site names)."""
    num = check_int("num_particles", num_particles, low=1)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, low=1)
    seed = check_int("seed", seed)
    model, guide, fit = _resolve(fit_or_model_guide)
    ds, device = _dataset(data, fit, model, guide)
    q, qname = _proposal(proposal, guide)
    check_mask_support(model, ds)
    structure = _structure(model, ds)
    check_particles_fit(num, ds, device, structure[-1])
    return (num, chunk_size, seed, model, guide, fit, ds, device, q, qname, *structure)


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


def _run_data(fit, data: str | None) -> Dataset:
    """The data set to evaluate a fit on (:func:`ppvae.runs.directory.run_dataset` of its recorded data)."""
    return run_dataset(fit.data_info, data)


@dataclass
class LogEvidence:
    """log p(X) by one estimator: ``method`` "is" (importance sampling over the globals), "ais"
    (annealing over all latents, :mod:`ppvae.evaluate.evidence_ais`) or "bridge" (:mod:`ppvae.evaluate.bridge`).

    ``stderr``: the Monte Carlo standard error of ``value`` (delta method sqrt((S / ESS - 1) / S)
    for "is"/"ais" over S weights; Frühwirth-Schnatter's RE for "bridge"). ``khat`` and ``elbo`` (the
    mean log-weight) are NaN for "bridge". ``info``: the method's settings and diagnostics."""

    value: float
    stderr: float
    ess: float
    khat: float
    elbo: float
    num_particles: int
    proposal: str
    method: str = "is"
    info: dict = field(default_factory=dict)

    @property
    def gap(self) -> float:
        return self.value - self.elbo

    def to_dict(self) -> dict:
        info = {k: (_finite(v) if isinstance(v, float) else v) for k, v in self.info.items()}
        return {k: (_finite(v) if isinstance(v, float) else v) for k, v in
                {**self.__dict__, "gap": self.gap, "info": info}.items()}


# public names for the estimators outside this package (ppvae.comparison.guide_diagnostics)
prepare_inputs = _prepare
seeded = _seeded
