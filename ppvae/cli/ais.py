"""AIS and BDMC on a saved run (the ``ppvae evaluate --method ais`` and ``ppvae bdmc`` commands):
results go into ``RUN_DIR/metrics.json`` (written atomically, other keys kept) with their figures."""

from __future__ import annotations

import math
import warnings

from ppvae._util.validation import PPVAEError, check_choice, renamed
from ppvae.cli.evaluate import evaluate_saved
from ppvae.evaluate.bdmc_bounds import bdmc
from ppvae.evaluate.estimate import ImportanceWarning
from ppvae.evaluate.marginal import log_marginal
from ppvae.infer.svi.fit import Fit
from ppvae.plots.evaluation import min_weights_for_khat, plot_ais_vs_is, plot_bdmc, plot_log_marginal
from ppvae.results.kinds import kind_of
from ppvae.runs.directory import run_dataset, update_metrics, write_figure

__all__ = ["evaluate_run", "evaluate_run_ais", "bdmc_run"]


def evaluate_run_ais(run_dir: str, data: str | None = None, *, num_particles: int = 1000, proposal: str = "guide",
                     chunk_size: int | None = None, seed: int = 0, progress: bool | None = None, **ais) -> tuple:
    """Per-point AIS (``ais``: num_steps, num_chains, schedule, num_leapfrog, ...) on a run, beside
    importance sampling at K = ``num_particles`` for comparison: metrics.json's ``log_marginal`` (the AIS
    result, with ``is`` holding the importance-sampling summary), ``log_marginal.png`` and
    ``ais_vs_is.png`` (per-point AIS against IS, coloured by IS k-hat)."""
    fit = Fit.load(run_dir)
    ds = run_dataset(fit.data_info, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImportanceWarning)
        result = log_marginal(fit, ds, method="ais", proposal=proposal, chunk_size=chunk_size, seed=seed,
                              progress=progress, **ais)
        is_ = log_marginal(fit, ds, num_particles=num_particles, proposal=proposal, chunk_size=chunk_size, seed=seed,
                           warn=False)
    is_summary = {k: v for k, v in is_.to_dict().items() if k in (
        "mean", "stderr", "num_particles", "ess_mean", "khat_max", "num_khat_over_0_7", "mc_stderr")}
    diff = result.values - is_.values
    entry = {**result.to_dict(), "data": ds.name, "seed": seed, "is": is_summary,
             "ais_minus_is_mean": float(diff.mean()), "ais_above_is": int((diff > 0).sum()),
             "warnings": [str(w.message) for w in caught if issubclass(w.category, ImportanceWarning)]}
    update_metrics(run_dir, "log_marginal", entry)
    s = result.settings
    what = f"AIS, T={s['num_steps']}, C={s['num_chains']}, L={s['num_leapfrog']}, {result.proposal} proposal"
    note = (f"no k-hat: its Pareto tail fit needs at least {min_weights_for_khat()} weights per point; "
            f"AIS here has C = {s['num_chains']} chains per point (raise num_chains)")
    write_figure(run_dir, "log_marginal.png", lambda p: plot_log_marginal(
        result.values.numpy(), result.khat.numpy(), p, f"{fit.model.name}: log p(x) by {what}", khat_note=note))
    write_figure(run_dir, "ais_vs_is.png", lambda p: plot_ais_vs_is(
        is_.values.numpy(), result.values.numpy(), is_.khat.numpy(), p,
        f"{fit.model.name}: {what} vs IS K={num_particles}"))
    return result, entry


def bdmc_run(run_dir: str, data: str | None = None, *, seed: int = 0, **options) -> tuple:
    """:func:`ppvae.evaluate.bdmc_bounds` on a run (points simulated from it; ``data`` only supplies the globals and
    the point shape): metrics.json's ``bdmc`` object and ``bdmc.png`` (the bounds against T)."""
    fit = Fit.load(run_dir)
    ds = run_dataset(fit.data_info, data)
    result = bdmc(fit, ds, seed=seed, **options)
    entry = {**result.to_dict(), "seed": seed}
    update_metrics(run_dir, "bdmc", entry)
    write_figure(run_dir, "bdmc.png", lambda p: plot_bdmc(
        result.num_steps, result.mean_lower, result.mean_upper, p,
        f"{fit.model.name}: BDMC on {result.lower.shape[-1]} simulated points, C={result.num_chains}"))
    return result, entry


@renamed(num_samples="num_particles")
def evaluate_run(run_dir: str, data: str | None = None, *, num_particles: int = 1000, proposal: str = "guide",
                 chunk_size: int | None = None, seed: int = 0, method: str = "is", num_draws: int | None = None,
                 **ais) -> tuple:
    """Evaluate a saved run on ``data`` (default: its own) and add a ``log_marginal`` object to
    ``RUN_DIR/metrics.json`` (other keys kept) and ``log_marginal.png``, both written atomically.

    An SVI run (:meth:`Fit.load`): per-point log p(x_i | G) by importance sampling
    (:func:`ppvae.log_marginal`; ``num_draws``: averaged over that many draws of the globals from the guide) or,
    with ``method="ais"`` (options ``ais`` as :func:`log_marginal`'s),
    :func:`evaluate_run_ais`. EM, MCMC and CAVI runs: :func:`ppvae.cli.evaluate.evaluate_saved` (exact
    per-point log-likelihood, log pointwise predictive density beside PSIS-LOO, per-document ELBO).
    Returns (the estimate, entry)."""
    spec = kind_of(run_dir)
    check_choice("method", method, ("is", "ais"))
    if spec.evaluator is not None:  # per-point numbers that need no sampler (EM, MCMC, CAVI, ...)
        if method != "is":
            raise PPVAEError(f"--method: '{method}' estimates log p(x) for SVI runs; {run_dir} holds a run of "
                             f"kind '{spec.name}', whose per-point numbers need no sampler (omit --method)")
        return evaluate_saved(run_dir, data, seed=seed)
    if method == "ais" or (num_draws is not None and spec.evaluator is not None):
        if num_draws is not None:
            raise PPVAEError("--num-draws: averages importance sampling over the guide's globals (SVI runs, "
                             "--method is)")
        return evaluate_run_ais(run_dir, data, num_particles=num_particles, proposal=proposal, chunk_size=chunk_size,
                                seed=seed, **ais)
    fit = Fit.load(run_dir)
    ds = run_dataset(fit.data_info, data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ImportanceWarning)
        result = log_marginal(fit, ds, num_particles=num_particles, proposal=proposal, chunk_size=chunk_size, seed=seed,
                              num_draws=num_draws)
    entry = {**result.to_dict(), "data": ds.name, "seed": seed,
             "warnings": [str(w.message) for w in caught if issubclass(w.category, ImportanceWarning)]}
    update_metrics(run_dir, "log_marginal", entry)
    exact = bool((result.khat == -math.inf).all())  # only discrete locals: summed exactly, no weights to sample
    how = ("exact (discrete local latents summed by enumeration, no sampling)" if exact else
           f"by importance sampling, K={num_particles}, {result.proposal} proposal")
    write_figure(run_dir, "log_marginal.png", lambda path: plot_log_marginal(
        result.values.numpy(), result.khat.numpy(), path, f"{fit.model.name}: log p(x) {how}",
        xlabel="log p(x_i | fitted globals) (nats)" if exact else "log p(x_i) estimate (nats)"))
    return result, entry
