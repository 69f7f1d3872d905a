"""``ppvae evidence``: every evidence estimate a saved directory allows, and whether they agree.

A run directory of ``ppvae fit`` gives importance sampling over the globals (when the model's local
latents are all discrete) and AIS over all latents from the fitted guide; an MCMC directory of
``ppvae mcmc`` gives bridge sampling from its draws and AIS from a Gaussian fitted to them; a run
directory with ``--mcmc DIR`` gives all three. Two estimates a and b agree when
|a - b| <= AGREE_Z sqrt(se_a^2 + se_b^2). The result joins the directory's ``metrics.json`` as the
``evidence`` object (written atomically, other keys kept).
"""

from __future__ import annotations

import itertools
import math
import os

from ppvae._util.validation import PPVAEError, renamed
from ppvae.evaluate.marginal import log_evidence
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.infer.svi.fit import Fit
from ppvae.model.capabilities import check_mask_support
from ppvae.results.kinds import kind_of, load
from ppvae.runs import directory as runs

__all__ = ["evidence_run", "load_mcmc_dir", "agreement", "AGREE_Z"]

AGREE_Z = 3.0  # the 3-standard-error band used by ppvae's own tests against closed forms


def _kind(directory: str) -> str | None:
    return kind_of(directory).name if os.path.exists(os.path.join(directory, runs.CONFIG)) else None


def load_mcmc_dir(directory: str, data: str | None = None, standardize: bool = False):
    """(MCMCResult, Dataset) from a directory of ``ppvae mcmc`` (:meth:`MCMCResult.load`); the data is the
    run's own (or ``data``) with the run's standardization constants applied (``standardize`` must agree)."""
    kind = _kind(directory)
    result = load(directory) if kind else None
    if not isinstance(result, MCMCResult):
        held = f"holds a run of kind '{kind}'" if kind else "has no config.json"
        raise PPVAEError(f"--mcmc: expected a directory written by `ppvae mcmc`; {directory} {held}")
    if standardize and not result.data_info.get("meta", {}).get("standardized"):
        raise PPVAEError(f"--standardize: the chains in {directory} ran on unstandardized data; drop --standardize")
    ds = runs.run_dataset(result.data_info, data)
    if len(ds) != result.data_info["num_data"]:
        raise PPVAEError(f"--data: the chains ran on {result.data_info['num_data']} points; got {len(ds)} points "
                         f"of '{ds.name}'")
    return result, ds


def agreement(estimates: list[dict]) -> dict:
    """Pairwise z = |a - b| / sqrt(se_a^2 + se_b^2) of the finite estimates; they agree when every z <= AGREE_Z."""
    ok = [e for e in estimates if e.get("value") is not None and e.get("stderr") is not None]
    pairs = []
    for a, b in itertools.combinations(ok, 2):
        se = math.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)
        z = abs(a["value"] - b["value"]) / se if se > 0 else (0.0 if a["value"] == b["value"] else math.inf)
        pairs.append({"methods": [a["method"], b["method"]], "difference": a["value"] - b["value"], "z": z})
    agree = all(p["z"] <= AGREE_Z for p in pairs) if pairs else None
    return {"pairs": pairs, "agree": agree, "threshold_z": AGREE_Z}


def _estimate(method: str, fn) -> dict:
    """One estimate as a dict, or the one-line reason it cannot be computed."""
    try:
        return fn().to_dict()
    except PPVAEError as exc:
        return {"method": method, "value": None, "stderr": None, "skipped": str(exc)}


@renamed(num_samples="num_particles")
def evidence_run(directory: str, data: str | None = None, *, mcmc_dir: str | None = None,
                 standardize: bool = False, num_particles: int = 1000, num_steps: int = 200, num_chains: int = 64,
                 seed: int = 0, progress: bool | None = None) -> dict:
    """Every estimate of log p(X) for ``directory`` (module docstring); returns the ``evidence`` object."""
    if not os.path.isdir(directory):
        raise PPVAEError(f"run_dir: expected a directory written by `ppvae fit` or `ppvae mcmc`; got {directory}")
    ais = {"num_steps": num_steps, "num_chains": num_chains, "progress": progress}
    estimates = []
    fit = load(directory) if _kind(directory) else None
    if isinstance(fit, Fit):
        ds = runs.run_dataset(fit.data_info, data)
        check_mask_support(fit.model, ds)
        estimates.append(_estimate("is", lambda: log_evidence(fit, ds, num_particles=num_particles, seed=seed)))
        estimates.append(_estimate("ais", lambda: log_evidence(fit, ds, method="ais", seed=seed, **ais)))
        if mcmc_dir is not None:
            mcmc, _ = load_mcmc_dir(mcmc_dir, data if data is not None else ds.name, standardize)
            estimates.append(_estimate("bridge", lambda: log_evidence(mcmc, ds, method="bridge", seed=seed)))
    else:
        if mcmc_dir is not None:
            raise PPVAEError(f"--mcmc: {directory} is itself not a `ppvae fit` run; pass the MCMC directory alone")
        mcmc, ds = load_mcmc_dir(directory, data, standardize)
        check_mask_support(mcmc.model, ds)
        estimates.append(_estimate("bridge", lambda: log_evidence(mcmc, ds, method="bridge", seed=seed)))
        estimates.append(_estimate("ais", lambda: log_evidence(mcmc, ds, method="ais", seed=seed, **ais)))
    entry = {"data": ds.name, "num_data": len(ds), "seed": seed, "estimates": estimates, **agreement(estimates)}
    if mcmc_dir is not None:
        entry["mcmc_dir"] = os.path.abspath(mcmc_dir)
    runs.update_metrics(directory, "evidence", entry)
    return entry
