"""One model, one data set, several inference methods, one table.

:func:`compare` splits the data (``Dataset.split``), runs every method on the training part and
reports per method (one record each):

* ``train_loglik`` / ``test_loglik``: the log predictive density sum_i log (1/S) sum_s p(x_i | theta_s)
  over posterior draws theta_s (Gelman, Hwang & Vehtari 2014, eq. 3, "lppd"); for point estimates
  (EM, ``svi:auto_delta``) it is log p(x_i | theta-hat). Discrete locals are summed exactly, so the
  numbers are exact given the draws; for a model with continuous locals they are importance-sampling
  estimates by ``ppvae.log_marginal`` (``num_particles`` per point) and LOO is left out.
* ``elpd_loo`` with its standard error, ``p_loo`` and the Pareto k-hat diagnostics from
  ``arviz.loo`` on the method's InferenceData (PSIS-LOO, Vehtari, Gelman & Gabry 2017); for an SVI guide
  the LOO corrected for the approximation (:mod:`ppvae.comparison.psis_loo`, Magnusson et al. 2019), the guide's
  k-hat over the globals (``guide_khat``, Yao et al. 2018) and PSIS-weighted posterior means and sds;
* posterior mean and standard deviation of every global parameter (mixture labels aligned by one
  location coordinate, see :mod:`ppvae.comparison.inference_data`);
* wall time, and for MCMC the bulk ESS per second (minimum over parameters) and the largest R-hat.

Method names: ``em``, ``svi:<guide>`` (any registered guide), ``nuts``, ``hmc``, and ``exact`` for a
model with a closed-form posterior sampler (``posterior_guide(x, y=None)``, e.g. Normal-Gamma). For models with
at most six scalar global parameters the records also hold every pair's posterior correlation and the
rank correlation of one's distance from its median with the other, corr_rank(|a - med a|, b), which
sees dependence that a linear correlation misses (Normal-Gamma: corr(mu, tau) = 0 exactly, yet the spread
of mu shrinks as tau grows; a mean-field guide sets both measures to 0). A method that fails
(an exception, or more divergent transitions than ``max_divergence_fraction`` of the draws) is
recorded with ``status="failed"`` and its error; the other methods still run and are written.
"""

from __future__ import annotations

import copy
import math
import time

import numpy as np
import torch

from ppvae._util.scalars import scalar_series
from ppvae._util.validation import PPVAEError, check_float, check_int, renamed
from ppvae.comparison.guide_diagnostics import guide_diagnostic
from ppvae.comparison.held_out import held_out, loo_applies
from ppvae.comparison.inference_data import GuidePosterior, pointwise_log_likelihood, to_inference_data
from ppvae.comparison.psis_loo import LOG_WEIGHT, loo_record, weighted_summary
from ppvae.comparison.report import Comparison, _float
from ppvae.comparison.vi_verdict import converged, reference_stats, verdict, verdict_line
from ppvae.data.loaders import Dataset
from ppvae.evaluate.marginal import log_marginal
from ppvae.infer.em import fit_em
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.infer.svi.guides import list_guides
from ppvae.infer.svi.train import fit
from ppvae.model.base import ClosedFormEM, ExactPosterior, Model, build_model, latent_sites, require
from ppvae.model.labels import align_labels, component_sites, location_site, single_trace

__all__ = ["compare", "Comparison", "parse_methods"]

MCMC_KERNELS = ("nuts", "hmc")


def parse_methods(methods) -> list[str]:
    """Validate method names (a comma-separated string or a list) before anything runs."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    if not methods:
        raise PPVAEError("methods: expected at least one method (em, svi:<guide>, nuts, hmc); got none")
    guides = list_guides()
    for m in methods:
        ok = m in ("em", "exact") or m in MCMC_KERNELS or (m.startswith("svi:") and m[4:] in guides)
        if not ok:
            raise PPVAEError(f"methods: expected em, exact, nuts, hmc or svi:<guide> with a guide among "
                             f"{', '.join(sorted(guides))}; got '{m}'")
    if len(set(methods)) != len(methods):
        raise PPVAEError(f"methods: expected each method once; got {', '.join(methods)}")
    return list(methods)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _summarize_draws(draws: dict) -> dict:
    """{"site[i,j]": {"mean", "sd"}} over the draws (sd None for a single draw); labels, constants and
    correlations as every table shows them (:func:`ppvae._util.scalars.scalar_series`)."""
    out = {}
    numpy = {k: torch.as_tensor(v).double().numpy() for k, v in draws.items()}
    spread = any(np.ptp(v, axis=0).max() > 0 for v in numpy.values() if len(v) > 1)  # a point estimate repeats
    for key, col in scalar_series(numpy, 1, drop_constant=spread):
        out[key] = {"mean": float(col.mean()), "sd": float(col.std()) if len(col) > 1 else None}
    return out


def _ranks(v: torch.Tensor) -> torch.Tensor:
    return v.argsort().argsort().double()


def _corr(a: torch.Tensor, b: torch.Tensor):
    return _float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def _pair_stats(draws: dict, max_scalars: int = 6) -> dict | None:
    """{"a|b": {"corr": Pearson r, "scale_dep": rank correlation of |a - median a| with b (or of a with
    |b - median b|, whichever is larger in magnitude)}} for every pair of scalar parameters."""
    numpy = {k: torch.as_tensor(v).double().numpy() for k, v in draws.items()}
    cols = {key: torch.from_numpy(col) for key, col in scalar_series(numpy, 1)}
    if len(cols) < 2 or len(cols) > max_scalars or len(next(iter(cols.values()))) < 3:
        return None
    keys, out = sorted(cols), {}
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            x, y = cols[a], cols[b]
            dep = [_corr(_ranks((x - x.median()).abs()), _ranks(y)), _corr(_ranks(x), _ranks((y - y.median()).abs()))]
            dep = [d for d in dep if d is not None]
            out[f"{a}|{b}"] = {"corr": _corr(x, y), "scale_dep": max(dep, key=abs) if dep else None}
    return out


def _lpd(ll: torch.Tensor) -> float:
    """sum_i log (1/S) sum_s exp ll[s, i]."""
    ll = torch.as_tensor(ll).double().reshape(-1, ll.shape[-1])
    return float((torch.logsumexp(ll, 0) - math.log(ll.shape[0])).sum())


def _draws_from(idata) -> dict[str, torch.Tensor]:
    post = idata.posterior
    return {k: torch.as_tensor(post[k].values).reshape((-1,) + post[k].values.shape[2:]) for k in post.data_vars}


def _bayes_record(model, idata, test, state, point: bool = False) -> tuple[dict, dict]:
    draws = _draws_from(idata)
    ll_name = next(iter(idata.log_likelihood.data_vars))
    test_ll = None if test is None else _lpd(pointwise_log_likelihood(
        model, test, {k: v.float() for k, v in draws.items()}, chunk_size=250))
    rec = {"train_loglik": _lpd(torch.as_tensor(idata.log_likelihood[ll_name].values)), "test_loglik": test_ll,
           "loglik_exact": True, **({} if point or not loo_applies(model) else loo_record(idata)),
           "posterior": _summarize_draws(draws),
           "num_draws": int(next(iter(draws.values())).shape[0]), "pairs": None if point else _pair_stats(draws)}
    note = idata.posterior.attrs.get("label_alignment")
    if note:
        state.setdefault("notes", set()).add(note.split(" (")[0])
    return rec, draws


def _run_em(model, train, test, opts, state):
    result = fit_em(model, train, restarts=opts["em_restarts"], seed=opts["seed"])
    values = {k: v.to(torch.get_default_dtype()) for k, v in model.em_to_sites(result.params).items()}
    aligned, _ = align_labels({k: v[None, None] for k, v in values.items()}, model, train, column=state.get("column"))
    draws = {k: v[0] for k, v in aligned.items()}
    state["em"] = result
    rec = {"train_loglik": _lpd(pointwise_log_likelihood(model, train, draws)),
           "test_loglik": None if test is None else _lpd(pointwise_log_likelihood(model, test, draws)),
           "loglik_exact": True,
           "posterior": _summarize_draws(draws), "point_estimate": True, "converged": result.converged}
    return rec, None


def _run_svi(model, guide, train, test, opts, state):
    f = fit(model, train, guide=guide, steps=opts["svi_steps"], lr=opts["svi_lr"], seed=opts["seed"],
            progress=opts["progress"])
    if _continuous_locals(model, train):
        return _estimated_record(f, train, test, opts, state), None
    idata = to_inference_data(f, train, num_draws=opts["num_draws"], seed=opts["seed"],
                              align_column=state.get("column"))
    _remember_column(idata, state)
    point = guide == "auto_delta"
    rec, draws = _bayes_record(model, idata, test, state, point=point)
    _guide_quality(idata, rec, draws, state)
    if point:
        state.setdefault("notes", set()).add("PSIS-LOO is left out for point estimates (em, svi:auto_delta): "
                                             "with no posterior spread every k-hat is infinite")
    rec["point_estimate"] = point
    rec["final_loss"] = f.history["loss"][-1]
    return rec, None if guide == "auto_delta" else draws


def _guide_quality(idata, rec: dict, draws: dict, state) -> None:
    """The guide's k-hat over the globals and its PSIS-weighted posterior mean and sd
    (:mod:`ppvae.comparison.psis_loo`)."""
    stats = getattr(idata, "sample_stats", None)
    if stats is None or LOG_WEIGHT not in stats:
        return
    lw = np.asarray(stats[LOG_WEIGHT].values).reshape(-1)
    rec["guide_khat"] = _float(idata.posterior.attrs["guide_khat"])
    rec["guide_khat_reading"] = idata.posterior.attrs["guide_khat_reading"]
    rec["posterior_weighted"] = weighted_summary(draws, lw)
    state.setdefault("notes", set()).add(
        "SVI rows: elpd_loo is PSIS-LOO corrected for the guide (weights log p - log q, Magnusson et al. 2019); "
        "guide_khat is the Pareto k-hat of those weights over the globals (Yao et al. 2018: < 0.5 good, "
        "0.5-0.7 usable, > 0.7 do not trust the guide's draws, nor its corrected LOO)")


def _continuous_locals(model, data) -> list[str]:
    return list(model.structure(data.batch()).continuous_local_sites)


def _estimated_record(f, train, test, opts, state) -> dict:
    """A model with continuous local latents: log p(x_i) by importance sampling (``ppvae.log_marginal``
    with the guide as proposal); PSIS-LOO needs p(x_i | theta) in closed form and is left out."""
    train_lm = log_marginal(f, train, num_particles=opts["num_particles"], seed=opts["seed"])
    test_lm = None if test is None else log_marginal(f, test, num_particles=opts["num_particles"], seed=opts["seed"])
    state.setdefault("notes", set()).add(
        "models with continuous local latents: log-likelihoods are importance-sampling estimates "
        "(ppvae.log_marginal, guide as proposal) and PSIS-LOO is left out")
    rec = {"train_loglik": train_lm.total, "test_loglik": None if test is None else test_lm.total,
           "loglik_exact": False,
           "log_marginal_khat_max": train_lm.khat_max, "final_loss": f.history["loss"][-1]}
    if f.global_sites(train) and not f.point_estimate:  # the guide's k-hat over its globals, locals integrated
        try:
            d = guide_diagnostic(f, train, num_draws=100, num_particles=100, seed=opts["seed"])
            rec.update({"guide_khat": _float(d.khat), "guide_khat_reading": d.reading})
        except PPVAEError as exc:  # a guide that couples globals and locals has no q(globals) to weigh
            rec["guide_khat_reading"] = f"n/a ({exc})"[:200]
    return rec


def _run_exact(model, train, test, opts, state):
    require(model, ExactPosterior, "exact")
    post = GuidePosterior(model, model.posterior_guide(train.x, train.y), "exact")
    idata = to_inference_data(post, train, num_draws=opts["num_draws"], seed=opts["seed"],
                              align_column=state.get("column"))
    return _bayes_record(model, idata, test, state)


def _run_mcmc(model, kernel, train, test, opts, state):
    import arviz as az  # heavy: loaded only when ArviZ summaries are needed


    # from the EM fit the chains stay in one labelling and the draws are aligned afterwards (measured in
    # benchmarks/bench_nuts.py: the ordering transform lengthens trajectories); without it, order the locations
    order = None if state.get("em") is not None else _auto_order(model, train, state)
    limit = int(opts["max_divergence_fraction"] * opts["num_chains"] * opts["num_mcmc_draws"])
    result = run_mcmc(model, train, kernel=kernel, num_draws=opts["num_mcmc_draws"], warmup=opts["warmup"],
                      num_chains=opts["num_chains"], init=state.get("em"), order=order, jit=opts["jit"],
                      seed=opts["seed"], progress=opts["progress"], max_divergences=limit, cores=opts["cores"])
    idata = to_inference_data(result, train, align_column=state.get("column"))
    _remember_column(idata, state)
    rec, draws = _bayes_record(model, idata, test, state)
    ess = az.ess(idata, method="bulk")
    post = idata.posterior  # constant entries (a Cholesky factor's fixed 1s and 0s) have no ESS to report
    ess_min = min(float(ess[v].where(post[v].std(("chain", "draw")) > 0).min()) for v in ess.data_vars)
    rec.update({"ess_bulk_min": ess_min, "ess_per_s": ess_min / result.time_s,
                "num_divergences": result.num_divergences,
                "rhat_max": None, "mcmc_time_s": result.time_s, "order": list(order) if order else None,
                "init": "em" if state.get("em") is not None else "model"})
    if result.num_chains >= 2:
        rhat = az.rhat(idata)
        rec["rhat_max"] = max(float(rhat[v].max()) for v in rhat.data_vars)
    else:
        state.setdefault("notes", set()).add("R-hat needs two or more chains; run with more chains to get it")
    reference = reference_stats(idata)
    rec["mcmc_converged"], rec["convergence_problem"] = converged(reference, result.num_chains)
    state.setdefault("references", {})[kernel] = reference
    return rec, draws


def _verdicts(records: dict, draws: dict, state) -> None:
    """Every non-MCMC posterior against the first MCMC method that ran (:mod:`ppvae.comparison.vi_verdict`)."""
    refs = state.get("references", {})
    if not refs:
        return
    kernel, reference = next(iter(refs.items()))
    for m, rec in records.items():
        if m in MCMC_KERNELS or rec["status"] != "ok":
            continue
        if rec.get("point_estimate") or m not in draws:
            rec["vs_mcmc"] = "point estimate"
            continue
        rec["verdict"] = verdict(draws[m], reference)
        rec["vs_mcmc"] = verdict_line(rec["verdict"])
    problem = records[kernel].get("convergence_problem")
    state.setdefault("notes", set()).add(
        f"vs_mcmc: each posterior against {kernel}; a difference is real when the means differ by more than "
        "3 Monte Carlo standard errors, the sd ratio's 95% interval excludes 1, or the 1-D Wasserstein distance "
        f"exceeds twice that between the two halves of the {kernel} chains"
        + (f". {kernel} is NOT converged ({problem}): no verdict against it can be trusted" if problem else ""))


def _auto_order(model, train, state):
    """Order the mixture's location site along the alignment coordinate (0 until one is chosen)."""
    with torch.no_grad():
        sites = latent_sites(single_trace(model, train.batch()))
    values = {n: s["value"] for n, s in sites.items() if not s["fn"].support.is_discrete}
    comp = component_sites(model, values)
    loc = location_site(model, comp, {n: s["fn"].support for n, s in sites.items()}) if comp else None
    if loc is None or values[loc].dim() != 2:
        return None
    return (loc, state.get("column") or 0)


def _remember_column(idata, state) -> None:
    column = idata.posterior.attrs.get("label_alignment_coordinate")
    if column is not None and state.get("column") is None:
        state["column"] = int(column)


def _not_applicable(model, method: str, train) -> str | None:
    """Why ``method`` cannot run on ``model`` (None: it can): EM and ``exact`` need their declared capability;
    MCMC runs over global latents only."""
    needs = {"em": (ClosedFormEM, "em_init, em_step, em_to_sites"), "exact": (ExactPosterior, "posterior_guide")}
    if method in needs and not isinstance(model, needs[method][0]):
        return (f"skipped: the model does not declare {needs[method][0].__name__} (needs {needs[method][1]}); "
                f"{method} does not apply")
    if method in MCMC_KERNELS and _continuous_locals(model, train):
        return (f"skipped: the model has continuous local latents ({', '.join(_continuous_locals(model, train))}); "
                "compare runs MCMC over global latents only (declare data_structure = 'groups' when the rows are "
                "groups whose effects these are, or integrate them out)")
    return None


def _options(**o) -> dict:
    o["test_fraction"] = check_float("test_fraction", o["test_fraction"], low=0.0, high=1.0, strict=True)
    for name in ("seed", "svi_steps", "num_draws", "num_mcmc_draws", "warmup", "num_chains", "em_restarts",
                 "num_particles"):
        o[name] = check_int(name, o[name], low=0 if name in ("seed", "warmup") else 1)
    o["svi_lr"] = check_float("svi_lr", o["svi_lr"], low=0.0, strict=True)
    o["max_divergence_fraction"] = check_float("max_divergence_fraction", o["max_divergence_fraction"],
                                               low=0.0, high=1.0)
    return o


@renamed(num_samples="num_mcmc_draws", num_ll_samples="num_particles")
def compare(model, data, methods, *, hparams: dict | None = None, test_fraction: float = 0.2, seed: int = 0,
            svi_steps: int = 2000, svi_lr: float = 0.01, num_draws: int = 1000, num_mcmc_draws: int = 500,
            warmup: int = 500, num_chains: int = 2, jit: bool = True, em_restarts: int = 5,
            max_divergence_fraction: float = 0.05, num_particles: int = 1000,
            progress: bool | None = False, cores: int | None = None) -> Comparison:
    """Run ``model`` on ``data`` with every method in ``methods`` and return a :class:`Comparison`.

    ``model``: a registered name (with ``hparams``) or a :class:`ppvae.Model` (copied per method).
    The data are split once (``test_fraction``, ``seed``); every method sees the same training part.
    NUTS/HMC start from the EM fit when ``em`` is among the methods (else they order the mixture's
    location coordinate) and fail when divergences exceed ``max_divergence_fraction`` of the draws.
    ``cores``: worker processes for the MCMC chains (see :func:`ppvae.infer.mcmc.sampler.run_mcmc`). The methods
    themselves run one after another: NUTS/HMC start from the EM fit and every method aligns mixture
    labels on the coordinate the first one chose, so they are not independent.

    Example (EM and MAP-by-SVI on a mixture, scored on the same 20% of held-out points):

    >>> import ppvae
    >>> from ppvae.models import GMM
    >>> data = ppvae.load_dataset("faithful", standardize=True)
    >>> table = ppvae.compare(GMM(K=2), data, "em,svi:auto_delta", svi_steps=200, svi_lr=0.05)
    >>> [(r["method"], r["status"], round(r["test_loglik"])) for r in table.records]
    [('em', 'ok', -79), ('svi:auto_delta', 'ok', -79)]
    """
    methods = parse_methods(methods)
    opts = _options(test_fraction=test_fraction, seed=seed, svi_steps=svi_steps, svi_lr=svi_lr, num_draws=num_draws,
                    num_mcmc_draws=num_mcmc_draws, warmup=warmup, num_chains=num_chains, jit=bool(jit),
                    em_restarts=em_restarts, max_divergence_fraction=max_divergence_fraction,
                    num_particles=num_particles, progress=progress)
    opts["cores"] = cores
    base = build_model(model, **(hparams or {})) if isinstance(model, str) else model
    if not isinstance(base, Model):
        raise PPVAEError(f"model: expected a model name or a ppvae.Model; got {type(model).__name__}")
    data = data if isinstance(data, Dataset) else Dataset(data)
    train, test, why = held_out(base, data, opts["test_fraction"], opts["seed"])
    base.setup(train)  # validate the data once, before any method runs
    ordered = sorted(methods, key=lambda m: m != "em")  # EM first: it initializes MCMC
    state: dict = {"notes": {why}} if why else {}
    records, draws = {}, {}
    for m in ordered:
        start = time.perf_counter()
        model_m = copy.deepcopy(base)
        skip = _not_applicable(model_m, m, train)
        if skip:  # a method that cannot apply to this model: its row says why, the others run
            records[m] = {"method": m, "status": "skipped", "error": skip, "time_s": 0.0}
            continue
        try:
            if m == "em":
                rec, d = _run_em(model_m, train, test, opts, state)
            elif m == "exact":
                rec, d = _run_exact(model_m, train, test, opts, state)
            elif m.startswith("svi:"):
                rec, d = _run_svi(model_m, m[4:], train, test, opts, state)
            else:
                rec, d = _run_mcmc(model_m, m, train, test, opts, state)
            rec = {"method": m, "status": "ok", "error": None, **rec}
        except Exception as exc:  # a failing method is recorded; the others still run
            rec, d = {"method": m, "status": "failed", "error": _one_line(exc)}, None
        rec["time_s"] = time.perf_counter() - start
        records[m] = rec
        if d is not None:
            draws[m] = d
    _verdicts(records, draws, state)
    settings = {**{k: v for k, v in opts.items() if k not in ("progress", "cores")}, "num_train": len(train),
                "num_test": 0 if test is None else len(test),
                "hparams": base.hparams, "notes": sorted(state.get("notes", set()))}
    name = model if isinstance(model, str) else (base.name or type(base).__name__)
    return Comparison(name, data.name, [records[m] for m in methods], draws, settings)
