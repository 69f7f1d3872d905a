"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, "Validating Bayesian inference
algorithms with simulation-based calibration", algorithm 1) for every inference method of ppvae.

For s = 1..S: draw the global latents theta* ~ p(theta) and data X* ~ p(X | theta*) from the model at the shape of
the given data (a regression's covariates kept, its response simulated; discrete locals drawn with the rest), fit
the method to X*, take L posterior draws theta_1..L and record the rank of theta* among them, per scalar global
parameter: r = #{l : theta_l < theta*} (ties broken uniformly at random). If the method samples the posterior,
r is uniform on {0..L}. Mixture labels are aligned by ordering one location coordinate in the truth and every draw
alike (:func:`ppvae._labels.align_labels`). Methods: ``exact`` (a model's ``posterior_guide``), ``svi:<guide>``,
``nuts``/``hmc`` (one chain), ``em`` (a point estimate: L copies of it, so its ranks pile up at 0 and L), or a
callable ``f(model, data, num_draws, seed) -> {site: (L, ...)}``. Run with L and the guide's draws independent of
the fit this is VSBC's rank version for a guide (Yao et al. 2018, sec. 4).

The verdict per parameter is the simultaneous 1 - ``level`` band of the rank ECDF (Säilynoja, Bürkner & Vehtari
2022, "Graphical test for discrete uniformity and its applications in goodness-of-fit evaluation and multiple sample
comparison", sec. 2.2: the band's pointwise level gamma is found by simulation so that uniform ranks leave it with
probability ``level`` anywhere): "calibrated" when the ECDF stays inside, else what the ranks say (too narrow:
U-shaped; too wide: central; biased: shifted). Simulations run in parallel (:func:`ppvae._parallel.parallel_map`)
and, with ``out``, each is written as it ends so a rerun resumes.
"""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pyro
import torch
from pyro import poutine

from ppvae._util.io import atomic_write
from ppvae._util.parallel import parallel_map
from ppvae._util.validation import PPVAEError, check_float, check_int
from ppvae.comparison.inference_data import guide_draws
from ppvae.data.loaders import Dataset
from ppvae.infer.em import fit_em
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.infer.svi.guides import list_guides
from ppvae.infer.svi.train import fit
from ppvae.model.base import ClosedFormEM, ExactPosterior, build_model, require
from ppvae.model.labels import align_labels, single_trace
from ppvae.model.structure import structure_of
from ppvae.plots.sbc import plot_ecdf_differences, plot_rank_histograms

__all__ = ["sbc", "SBCResult", "simulate", "ecdf_band", "rank_verdict"]


def simulate(model, data: Dataset, seed: int) -> tuple[dict, Dataset]:
    """(theta*, X*): the global latents drawn from the prior and data from the model given them, at ``data``'s shape
    (the response simulated for a regression, x otherwise; exactly one observed site)."""
    batch = data.batch()
    with torch.random.fork_rng(devices=[]), torch.no_grad(), pyro.validation_enabled(False):
        torch.manual_seed(seed)
        tr = poutine.trace(poutine.uncondition(model)).get_trace(batch)
    names = list(structure_of(model, batch).global_sites)
    observed = [n for n, s in single_trace(model, batch).nodes.items() if s["type"] == "sample" and s["is_observed"]]
    if len(observed) != 1:
        raise PPVAEError(f"model: sbc simulates one observed site; the model has {len(observed)} "
                         f"({', '.join(observed) or 'none'})")
    new = tr.nodes[observed[0]]["value"].detach().to(data.x.dtype)
    sim = Dataset(data.x, new.reshape(data.y.shape), name="sbc") if data.y is not None else Dataset(
        new.reshape(data.x.shape), name="sbc")
    return {n: tr.nodes[n]["value"].detach() for n in names}, sim


def _draws(method, model, data: Dataset, opts: dict, seed: int) -> dict:
    """L posterior draws (site -> (L, ...)) of the global latents by ``method`` on ``data``."""
    L = opts["num_draws"]
    if callable(method):
        return method(model, data, L, seed)
    if method == "exact":
        require(model, ExactPosterior, "sbc: method 'exact'")
        return guide_draws(model, model.posterior_guide(data.x, data.y), data, L, seed)
    if method.startswith("svi:"):
        f = fit(model, data, guide=method[4:], steps=opts["svi_steps"], lr=opts["svi_lr"], seed=seed,
                progress=False, check_convergence=False)
        return guide_draws(f.model, f.guide, data, L, seed)
    if method == "em":
        require(model, ClosedFormEM, "sbc: method 'em'")
        values = model.em_to_sites(fit_em(model, data, restarts=opts["em_restarts"], seed=seed).params)
        return {k: v.to(data.x.dtype).expand((L,) + tuple(v.shape)) for k, v in values.items()}
    result = run_mcmc(model, data, kernel=method, num_draws=L, warmup=opts["warmup"], num_chains=1, seed=seed,
                      progress=False, cores=1)
    return {k: torch.as_tensor(v)[0] for k, v in result.samples.items()}


def _ranks(truth: dict, draws: dict, model, data, rng) -> dict:
    """{"site[i,j]": rank of the truth among the draws} after aligning labels in both alike."""
    joint = {k: torch.cat([truth[k].reshape((1,) + tuple(draws[k].shape[1:])).to(draws[k].dtype), draws[k]])[None]
             for k in draws if k in truth}
    joint, _ = align_labels(joint, model, data)
    out = {}
    for name, value in joint.items():
        v = torch.as_tensor(value)[0].double()
        flat = v.reshape(v.shape[0], -1).numpy()
        shape = tuple(v.shape[1:])
        for j in range(flat.shape[1]):
            idx = np.unravel_index(j, shape) if shape else ()
            key = name + (f"[{','.join(str(int(i)) for i in idx)}]" if idx else "")
            t, d = flat[0, j], flat[1:, j]
            out[key] = int((d < t).sum() + rng.integers(0, (d == t).sum() + 1))
    return out


def _one_sim(task) -> dict:
    """One simulation: the ranks per method ({"sim", "ranks": {method: {key: rank}}, "errors": {method: text}})."""
    model, data, methods, opts, index = task
    seed = opts["seed"] * 100_003 + index
    truth, sim = simulate(model, data, seed)
    rng = np.random.default_rng(seed)
    out = {"sim": index, "ranks": {}, "errors": {}}
    for m in methods:
        name = m if isinstance(m, str) else getattr(m, "__name__", "method")
        try:
            out["ranks"][name] = _ranks(truth, _draws(m, copy.deepcopy(model), sim, opts, seed), model, sim, rng)
        except Exception as exc:  # one failed fit is recorded; the others count
            out["errors"][name] = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]
    return out


def ecdf_band(num_sims: int, num_draws: int, level: float = 0.05, num_trials: int = 2000, seed: int = 0):
    """(z, lower, upper): the simultaneous 1 - ``level`` band for the counts N F(z_i) of ranks below i,
    z_i = i / (L + 1), i = 1..L, under uniform ranks on {0..L} (Säilynoja et al. 2022, sec. 2.2, by simulation)."""
    from scipy.stats import binom  # scipy comes with scikit-learn and arviz

    n, z = num_sims, np.arange(1, num_draws + 1) / (num_draws + 1)
    rng = np.random.default_rng(seed)
    ranks = rng.integers(0, num_draws + 1, size=(num_trials, n))
    counts = (ranks[:, :, None] < np.arange(1, num_draws + 1)).sum(1)
    tail = np.minimum(binom.cdf(counts, n, z), binom.sf(counts - 1, n, z))
    gamma = float(np.quantile(2 * tail.min(1), level))
    return z, binom.ppf(gamma / 2, n, z), binom.ppf(1 - gamma / 2, n, z)


def rank_verdict(ranks: np.ndarray, num_draws: int, band) -> str:
    """'calibrated', or the shape of the miscalibration when the rank ECDF leaves ``band``."""
    z, lower, upper = band
    counts = (np.asarray(ranks)[:, None] < np.arange(1, num_draws + 1)).sum(0)
    if ((counts >= lower) & (counts <= upper)).all():
        return "calibrated"
    u = (np.asarray(ranks) + 0.5) / (num_draws + 1)
    if abs(u.mean() - 0.5) > 2 * np.sqrt(1 / 12 / len(u)) and abs(u.mean() - 0.5) > abs(u.var() - 1 / 12):
        return "biased: " + ("posterior too high (truth ranks low)" if u.mean() < 0.5 else
                             "posterior too low (truth ranks high)")
    return "too narrow (ranks U-shaped)" if u.var() > 1 / 12 else "too wide (ranks central)"


class SBCResult:
    """Ranks per method and scalar parameter (``ranks[method][key]``: an int array over simulations, 0..L), the
    verdicts at ``level`` and the failed fits."""

    def __init__(self, sims: list[dict], num_draws: int, level: float, settings: dict):
        self.sims, self.num_draws, self.level, self.settings = sims, num_draws, level, settings
        self.ranks: dict = {}
        for s in sims:
            for m, per_key in s["ranks"].items():
                for k, r in per_key.items():
                    self.ranks.setdefault(m, {}).setdefault(k, []).append(r)
        self.ranks = {m: {k: np.asarray(v) for k, v in d.items()} for m, d in self.ranks.items()}
        self.errors = {m: sum(m in s["errors"] for s in sims) for m in settings.get("methods", [])}
        self.verdicts = {m: {k: rank_verdict(r, num_draws, ecdf_band(len(r), num_draws, level)) for k, r in d.items()}
                         for m, d in self.ranks.items()}

    def to_markdown(self) -> str:
        lines = [f"# Simulation-based calibration: {self.settings.get('model')} ({len(self.sims)} simulations, "
                 f"{self.num_draws} draws each; simultaneous ECDF band at level {self.level})", "",
                 "| method | parameter | verdict | mean rank / L |", "|---|---|---|---|"]
        for m, per_key in self.verdicts.items():
            for k, v in per_key.items():
                lines.append(f"| {m} | {k} | {v} | {self.ranks[m][k].mean() / self.num_draws:.3f} |")
        for m, n in self.errors.items():
            if n:
                lines.append(f"\n{m}: {n} of {len(self.sims)} fits failed and are left out")
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        return {"settings": self.settings, "num_draws": self.num_draws, "level": self.level,
                "verdicts": self.verdicts, "ranks": {m: {k: v.tolist() for k, v in d.items()}
                                                     for m, d in self.ranks.items()}}

    def save(self, directory: str) -> dict:
        """Write sbc.md, sbc.json, sbc_ecdf.png (ECDF differences with the band) and sbc_ranks.png (histograms)."""
        os.makedirs(directory, exist_ok=True)
        paths = {"md": os.path.join(directory, "sbc.md"), "json": os.path.join(directory, "sbc.json"),
                 "ecdf": os.path.join(directory, "sbc_ecdf.png"), "ranks": os.path.join(directory, "sbc_ranks.png")}
        atomic_write(paths["md"], lambda fh: fh.write(self.to_markdown()))
        atomic_write(paths["json"], lambda fh: json.dump(self.to_dict(), fh, indent=1))
        plot_ecdf_differences(self.ranks, self.num_draws, self.verdicts, paths["ecdf"],
                              band=lambda n: ecdf_band(n, self.num_draws, self.level))
        plot_rank_histograms(self.ranks, self.num_draws, paths["ranks"])
        return paths


def _check_methods(methods, model) -> list:
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(methods)
    if not methods:
        raise PPVAEError("methods: expected at least one method (exact, svi:<guide>, nuts, hmc, em); got none")
    guides = list_guides()
    for m in methods:
        if callable(m):
            continue
        if not (m in ("exact", "em", "nuts", "hmc") or (m.startswith("svi:") and m[4:] in guides)):
            raise PPVAEError(f"methods: expected exact, em, nuts, hmc or svi:<guide> with a guide among "
                             f"{', '.join(sorted(guides))}; got '{m}'")
        if m == "exact":
            require(model, ExactPosterior, "methods: 'exact'")
        if m == "em":
            require(model, ClosedFormEM, "methods: 'em'")
    return methods


def sbc(model, data, methods, *, num_sims: int = 100, num_draws: int = 99, level: float = 0.05, seed: int = 0,
        hparams: dict | None = None, svi_steps: int = 1000, svi_lr: float = 0.02, warmup: int = 300,
        em_restarts: int = 3, cores: int | None = 1, out: str | None = None, progress: bool | None = False
        ) -> SBCResult:
    """Simulation-based calibration of ``methods`` for ``model`` at the shape of ``data`` (module docstring).

    ``num_sims`` simulations, ``num_draws`` = L posterior draws each (ranks 0..L; L + 1 = 100 divides into
    bins evenly), verdicts at ``level``. ``cores``: simulations in parallel (None: every core). ``out``: a
    directory where each simulation is written as it ends (``sims/``); a rerun with the same ``out`` reads those
    and runs only the missing ones, then writes the report files (:meth:`SBCResult.save`)."""
    base = build_model(model, **(hparams or {})) if isinstance(model, str) else model
    data = data if isinstance(data, Dataset) else Dataset(data)
    base.setup(data)
    methods = _check_methods(methods, base)
    opts = {"num_draws": check_int("num_draws", num_draws, low=1), "seed": check_int("seed", seed),
            "svi_steps": check_int("svi_steps", svi_steps, low=1), "svi_lr": check_float("svi_lr", svi_lr, low=0.0,
                                                                                         strict=True),
            "warmup": check_int("warmup", warmup, low=0), "em_restarts": check_int("em_restarts", em_restarts, low=1)}
    num_sims = check_int("num_sims", num_sims, low=1)
    level = check_float("level", level, low=0.0, high=1.0, strict=True)
    names = [m if isinstance(m, str) else getattr(m, "__name__", "method") for m in methods]
    settings = {"model": model if isinstance(model, str) else (base.name or type(base).__name__),
                "methods": names, "num_sims": num_sims, **opts}
    done = _load_done(out, settings)
    todo = [(base, data, methods, opts, i) for i in range(num_sims) if i not in done]
    writer = _writer(out)
    for result in parallel_map(_run_and_write, [(t, writer) for t in todo], workers=cores, progress=progress,
                               desc="sbc", part_name="simulation"):
        done[result["sim"]] = result
    res = SBCResult([done[i] for i in sorted(done)], opts["num_draws"], level, settings)
    if out:
        res.save(out)
    return res


def _writer(out):
    return None if out is None else os.path.join(out, "sims")


def _run_and_write(task_and_dir) -> dict:
    task, directory = task_and_dir
    result = _one_sim(task)
    if directory is not None:
        path = os.path.join(directory, f"sim_{result['sim']:05d}.json")
        atomic_write(path, lambda fh: json.dump(result, fh))
    return result


def _load_done(out, settings) -> dict:
    """Simulations already written under ``out`` (a resumed run); refuses a directory of other settings."""
    if out is None:
        return {}
    os.makedirs(os.path.join(out, "sims"), exist_ok=True)
    meta = os.path.join(out, "sims", "settings.json")
    if os.path.exists(meta):
        with open(meta) as fh:
            old = json.load(fh)
        if {k: v for k, v in old.items() if k != "num_sims"} != {k: v for k, v in settings.items() if k != "num_sims"}:
            raise PPVAEError(f"out: {out} holds simulations of other settings ({old}); use another directory")
    atomic_write(meta, lambda fh: json.dump(settings, fh))
    done = {}
    for name in sorted(os.listdir(os.path.join(out, "sims"))):
        if name.startswith("sim_") and name.endswith(".json"):
            with open(os.path.join(out, "sims", name)) as fh:
                rec = json.load(fh)
            if rec["sim"] < settings["num_sims"]:
                done[rec["sim"]] = rec
    return done
