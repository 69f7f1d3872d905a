"""What each command writes into its run directory beyond the result itself (format: ppvae/runs.py):
``metrics.json`` and the figures. Each ``write_*`` saves the result, writes its metrics and draws its
figures into ``directory`` (the command's temporary run directory) and returns (metrics, figures), the
:class:`ppvae.plots.figures.FigureGuard` that names any figure that failed."""

from __future__ import annotations

import os

import torch

from ppvae._util.validation import PPVAEError
from ppvae.model.base import ClosedFormEM, Mixture, Reports, model_import_path
from ppvae.model.mixture_check import warn_empty_components
from ppvae.plots import figures as plots
from ppvae.plots import mixture as mixture_figure
from ppvae.plots.mcmc import plot_mcmc_rank, plot_mcmc_trace
from ppvae.runs import directory as runs

__all__ = ["write_fit", "write_em", "write_mcmc", "write_cavi"]


def _figures():
    return plots.FigureGuard()


def _write_metrics(directory: str, metrics: dict, model) -> None:
    """metrics.json, with where a user's model class comes from (``model_import``; None for the zoo)."""
    metrics.setdefault("model_import", model_import_path(type(model)))
    runs.write_json(directory, runs.METRICS, metrics)


def _mixture_plot(model, values, data, resp, path, title):
    components = model.mixture_components(values) if isinstance(model, Mixture) else None
    if data.x.shape[1] != 2 or components is None or resp is None:
        return
    w, locs, covs = components
    mixture_figure.plot_mixture_2d(data.x.cpu(), resp.cpu(), w.cpu(), locs.cpu(), covs.cpu(), path,
                    columns=data.meta.get("columns"), title=title, meta=data.meta)


def _fit_mixture_plot(name, result, data, directory, resp):
    _mixture_plot(result.model, result.global_values(data), data, resp, os.path.join(directory, "mixture.png"),
                  f"{name} by {result.method}")


def _empty_components(name, model, values, resp, metrics) -> None:
    """metrics["empty_components"] and a warning naming each mixture component that holds no point."""
    if not isinstance(model, Mixture) or resp is None:
        return
    parts = model.mixture_components(values) if values is not None else None  # None: no closed-form weights
    weights = parts[0] if parts is not None else None
    metrics["empty_components"] = warn_empty_components(name, resp.cpu(), None if weights is None else weights.cpu())


def write_fit(directory: str, name: str, result, data):
    """An SVI fit: the run, metrics (final loss; the exact log-likelihood when the model's only local latents
    are discrete), loss.png, mixture.png (2-D mixtures) and the model's own report figures and metrics."""
    model = result.model
    result.save(directory)
    ll, exact = None, False
    try:
        ll, exact = float(result.log_likelihood(data).double().sum()), True
    except PPVAEError:
        pass  # continuous local latents: the evaluation layer estimates log p(x)
    metrics = {
        "model": name, "method": result.method, "elbo": result.elbo_name, "num_data": len(data),
        "data": data.name, "time_s": result.history["time_s"], "steps": result.history["steps"],
        "loss_final": result.history["loss"][-1], "log_likelihood": ll, "log_likelihood_exact": exact,
        "svi_path": result.history.get("svi_path"), "svi_compile": result.history.get("svi_compile"),
        "config": {"hparams": model.hparams, "train": vars(result.config)},
    }
    _write_metrics(directory, metrics, model)
    figures = _figures()  # a figure that fails is named after the run is written; it never costs the fit
    figures.draw("loss.png", plots.plot_loss, result.history["loss"], os.path.join(directory, "loss.png"))
    if ll is not None and model.discrete_latent_sites(data.batch()):
        with torch.no_grad():
            resp = next(iter(result.discrete_posterior(data).values()))
        _empty_components(name, model, result.global_values(data), resp, metrics)
        _write_metrics(directory, metrics, model)
        figures.draw("mixture.png", _fit_mixture_plot, name, result, data, directory, resp)
    if isinstance(model, Reports):  # model-specific figures (e.g. the VAE's reconstructions)
        extra = figures.draw(f"{name}'s report figures", model.report, result, data, directory)
        if isinstance(extra, dict):  # model-specific metrics (e.g. topic coherence) join metrics.json
            metrics.update(extra)
            _write_metrics(directory, metrics, model)
    return metrics, figures


def write_em(directory: str, name: str, result, data):
    """An EM fit: the run, metrics (the exact log-likelihood and parameters), em_trace.png, mixture.png."""
    model = result.model
    result.save(directory)
    metrics = {
        "model": name, "method": "em", "num_data": len(data), "data": data.name, "time_s": result.time_s,
        "iterations": result.num_iterations, "converged": result.converged,
        "log_likelihood": result.log_likelihood_total, "log_likelihood_exact": True,
        "params": {k: v.tolist() for k, v in result.params.items()},
        "config": {"hparams": model.hparams, **result.config},
    }
    _write_metrics(directory, metrics, model)
    figures = _figures()
    figures.draw("em_trace.png", plots.plot_em_trace, result.traces, os.path.join(directory, "em_trace.png"),
                 best=result.best_restart, title=f"{name} by EM: {len(result.traces)} restarts")
    if isinstance(model, Mixture) and isinstance(model, ClosedFormEM):
        with torch.no_grad():
            values = model.em_to_sites(result.params)
            resp = model.em_responsibilities(data.x.double(), result.params)
        _empty_components(name, model, values, resp, metrics)
        _write_metrics(directory, metrics, model)
        figures.draw("mixture.png", _mixture_plot, model, values, data, resp, os.path.join(directory, "mixture.png"),
                     f"{name} by EM")
    return metrics, figures


def write_mcmc(directory: str, name: str, result, data, table, idata):
    """An MCMC run: the run (samples.pt), summary.csv (the ``table`` of ``ppvae.comparison.inference_data.summary``) and
    metrics (time, divergences, min bulk ESS, max R-hat with two or more chains, label alignment)."""
    result.save(directory)
    runs.atomic_write(os.path.join(directory, "summary.csv"), lambda fh: table.to_csv(fh))
    metrics = {"model": name, "method": result.method, "data": data.name, "num_data": len(data),
               "time_s": result.time_s, "num_divergences": result.num_divergences,
               "ess_bulk_min": float(table["ess_bulk"].min()),
               "rhat_max": float(table["r_hat"].max()) if result.num_chains >= 2 else None,
               "label_alignment": idata.posterior.attrs.get("label_alignment"),
               "config": {"hparams": result.model.hparams, **result.config}}
    _write_metrics(directory, metrics, result.model)
    figures = _figures()  # beside the samples; a figure that fails never costs the run
    title = f"{name} by {result.method}"
    figures.draw("trace.png", plot_mcmc_trace, idata.posterior, os.path.join(directory, "trace.png"), title)
    figures.draw("rank.png", plot_mcmc_rank, idata.posterior, os.path.join(directory, "rank.png"), title)
    return metrics, figures


def write_cavi(directory: str, name: str, result, data):
    """A CAVI fit: the run, metrics (ELBO, alpha, the model's report metrics), elbo_trace.png and the report figures."""
    model = result.model
    result.save(directory)
    metrics = {"model": name, "method": getattr(result, "method", "cavi"), "num_data": len(data), "data": data.name,
               "time_s": result.time_s, "iterations": result.num_iterations, "converged": result.converged,
               "elbo": result.elbo, "alpha": result.alpha, "log_likelihood": None,
               "config": {"hparams": model.hparams, **result.config}}
    figures = _figures()
    if isinstance(model, Reports):
        metrics.update(figures.draw(f"{name}'s report figures", model.report, result, data, directory) or {})
    _write_metrics(directory, metrics, model)
    figures.draw("elbo_trace.png", plots.plot_em_trace, [result.trace], os.path.join(directory, "elbo_trace.png"),
                 title=f"{name} by CAVI: ELBO per iteration", xlabel="CAVI iteration",
                 ylabel="ELBO (nats, corpus total)", curve="CAVI run")
    return metrics, figures
