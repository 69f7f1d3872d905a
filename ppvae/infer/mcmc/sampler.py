"""MCMC baselines: NUTS and HMC on any ppvae model, with discrete latents summed out exactly.

The sampler targets the posterior of the model's continuous latents theta with every discrete local
latent z_i marginalized,

    U(u) = -[ log p(theta) + sum_i log sum_{z_i} p(x_i, z_i | theta) + log |det J_T(u)| ],
    theta = T(u),

where T maps unconstrained coordinates onto each site's support (``torch.distributions.biject_to``)
and the sum over z_i is Pyro's tensor variable elimination (``ppvae.model.enumeration``, Obermeyer et al. 2019).
A model with a closed-form likelihood (a ppvae.ClosedFormPotential: ``pointwise_log_likelihood``, the GMM's
log sum_k w_k N(x_i | mu_k, Sigma_k)) skips the enumeration; one that also gives U and its gradient in
closed form (``closed_form_potential(x, order)``, e.g. the diagonal GMM's Fisher-identity gradient)
skips autograd too, after a check against autograd at the first chain's start. The sampler sees all
latents as one flat unconstrained vector (fewer Python loops per leapfrog step inside Pyro). The
potential is handed to Pyro's ``NUTS`` (Hoffman & Gelman 2014, Algorithm 6 with multinomial sampling,
Betancourt 2017) or ``HMC`` (Neal 2011, sec. 5.3.3) and optionally compiled with ``torch.jit.trace``.

Chains run in parallel, on ``cores`` processes with one intra-op thread each, this one and ``cores - 1``
workers (default every available core up to the number of chains; :mod:`ppvae._util.parallel` says why
Python's process pool and not Pyro's multiprocess sampler, and why ``forkserver``). Chain c has its own
seed and start, so its draws are the same bit for bit on 1 core or many.

Label switching: ``order=("locs", 0)`` samples the mixture in the region mu_1,c < ... < mu_K,c of
one location coordinate c (an ``OrderedTransform`` on that column; Jasra, Holmes & Stephens 2005,
sec. 4.1), which removes the K! symmetric copies of the posterior.

For amortized models, :func:`ppvae.local_posterior` (``_mcmc_local.py``) runs NUTS over one data point's
local latent z with the fitted globals and network weights held fixed: samples of p(z | x, theta-hat),
the gold standard the encoder is judged against.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_median, init_to_value
from pyro.infer.mcmc import HMC, MCMC, NUTS

from ppvae._util import display as _display
from ppvae._util.parallel import parallel_map, prestart_workers, report, resolve_workers
from ppvae._util.procs import raise_if_swallowed
from ppvae._util.progress import Progress
from ppvae._util.state import leaves_global_state
from ppvae._util.validation import PPVAEError, check_float, check_int, renamed
from ppvae.data.loaders import Dataset
from ppvae.infer.mcmc import io as _mcmc_io
from ppvae.infer.mcmc.checks import check_local_dimension
from ppvae.infer.mcmc.compiled import chain_value_and_grad, wants_compile
from ppvae.infer.mcmc.inputs import (
    check_broadcasts,
    check_init,
    check_loaded_samples,
    check_options,
    check_order,
    init_values,
    per_element,
    sort_components,
)
from ppvae.infer.mcmc.potential import Potential
from ppvae.infer.mcmc.vectorized import sample_chains
from ppvae.infer.pyro_adapter import chain_draws, divergences, mcmc_from_draws
from ppvae.model.base import Model
from ppvae.model.labels import align_labels
from ppvae.results.base import Result
from ppvae.results.kinds import register_kind
from ppvae.runs import directory as runs

__all__ = ["run_mcmc", "MCMCResult", "MCMCDivergenceError", "Potential"]


class MCMCDivergenceError(PPVAEError):
    """More divergent transitions than allowed: the posterior geometry defeated the sampler."""


# -- running the chains ------------------------------------------------------------------------------
@dataclass
class MCMCResult(Result):
    """Draws of an MCMC run: ``samples`` (site -> (chains, draws, ...) constrained) and the Pyro ``mcmc``
    (whose own samples are the flat unconstrained vector ``"_theta"`` its kernel moved; see ``Potential.energy``).

    Implements :class:`ppvae.Result`: ``predict`` conditions the model on each draw and draws the discrete
    locals by ``infer_discrete``; ``summary`` reports bulk ESS and split R-hat (labels aligned first);
    ``history`` is empty (no iterations to trace)."""

    model: Model | None
    mcmc: MCMC
    samples: dict
    method: str
    time_s: float
    num_divergences: int
    data_info: dict
    config: dict = field(default_factory=dict)

    @property
    def num_chains(self) -> int:
        return next(iter(self.samples.values())).shape[0]

    @property
    def num_draws(self) -> int:
        return next(iter(self.samples.values())).shape[1]

    @property
    def history(self) -> dict:
        return {}

    def latent_draws(self, data=None, num_draws: int | None = None, seed: int = 0) -> dict[str, torch.Tensor]:
        """The run's draws with chains concatenated, thinned evenly to ``num_draws`` (None: all of them)."""
        flat = self.flat_samples()
        total = len(next(iter(flat.values())))
        if num_draws is None:
            return flat
        num_draws = check_int("num_draws", num_draws, low=1, high=total)
        index = torch.linspace(0, total - 1, num_draws).round().long()
        return {k: v[index] for k, v in flat.items()}

    def _summary_draws(self, data, num_draws, seed) -> dict[str, torch.Tensor]:
        batch = self._data_batch(data)
        names = set(self._global_names(batch))
        samples = {k: v for k, v in self.samples.items() if k in names}
        samples, self._alignment = align_labels(samples, self.model, batch.x)
        return samples

    def _summary_notes(self) -> list[str]:
        info = getattr(self, "_alignment", None)
        return [info["note"]] if info else []

    def flat_samples(self) -> dict[str, torch.Tensor]:
        """Draws with chains concatenated: site -> (chains * draws, ...)."""
        return {k: v.reshape((-1,) + v.shape[2:]) for k, v in self.samples.items()}

    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        """Posterior means of the sampled sites (align mixture labels first: see ppvae.comparison.inference_data)."""
        return {k: v.mean(0) for k, v in self.flat_samples().items()}

    def rhat(self) -> dict[str, torch.Tensor]:
        """Rank-normalized split R-hat per site element (Vehtari et al. 2021, "Rank-normalization, folding, and
        localization", eq. 14; ``arviz.rhat``): the one R-hat ppvae prints or returns (``summary`` too, which
        aligns mixture labels first); needs two or more chains."""
        if self.num_chains < 2:
            raise PPVAEError(f"rhat: expected at least 2 chains to compare; got {self.num_chains} "
                             "(run with num_chains >= 2)")
        return per_element(self.samples, "rhat")

    def ess(self) -> dict[str, torch.Tensor]:
        """Bulk effective sample size per site element over all chains (Vehtari et al. 2021; ``arviz.ess``,
        as in ``summary``)."""
        return per_element(self.samples, "ess")

    def save(self, path: str, overwrite: bool = False) -> None:
        """Write a run directory of kind ``mcmc`` (samples.pt, params.pt, config.json; :mod:`ppvae.infer.mcmc.io`).
        Another ppvae run at ``path`` is replaced whole only with ``overwrite=True`` (``runs.save_run``)."""
        runs.save_run(self, path, lambda directory: _mcmc_io.save(self, directory), overwrite)

    @classmethod
    def load(cls, path: str) -> "MCMCResult":
        """Read a run directory written by :meth:`save` (tensors only, version checked); ``mcmc`` is None."""
        result = _mcmc_io.load(cls, path)
        check_loaded_samples(result, path)
        return result

    def __repr__(self) -> str:  # shapes and headline numbers; the draws themselves are 31,688 characters
        return _display.mcmc_repr(self)

    def _repr_html_(self) -> str:
        return _display.mcmc_html(self)


def _initial_params(potential: Potential, model, fn, batch, init, num_chains, seed, jitter) -> dict:
    """Unconstrained starting points, one per chain: ``init`` values (a dict, a Fit, an EMFit) or the
    model's ``init_values`` (drawn per chain), the prior median elsewhere, plus uniform(-jitter, jitter)."""
    gen = torch.Generator().manual_seed(seed)
    starts = []
    for chain in range(num_chains):
        values = init_values(model, batch, init, seed + chain)
        with poutine.block(), pyro.validation_enabled(False), \
                InitMessenger(init_to_value(values=values, fallback=init_to_median)):
            tr = poutine.trace(fn).get_trace(batch)
        values = {n: tr.nodes[n]["value"].detach() for n in potential.sites}
        if potential.order is not None and model is not None:
            values = sort_components(model, values, *potential.order)
        u = {n: potential.transforms[n](v) for n, v in values.items()}
        noise = {n: 2 * torch.rand(v.shape, generator=gen, dtype=v.dtype) - 1 for n, v in u.items()}
        starts.append({n: v + jitter * noise[n] for n, v in u.items()})
    return {n: torch.stack([s[n] for s in starts]) for n in starts[0]}


def _kernel(kind, potential, options):
    step = {} if options.get("step_size") is None else {"step_size": options["step_size"], "adapt_step_size": False}
    if kind == "nuts":
        return NUTS(potential_fn=potential, target_accept_prob=options["target_accept"],
                    max_tree_depth=options["max_tree_depth"], full_mass=options["full_mass"], **step)
    return HMC(potential_fn=potential, target_accept_prob=options["target_accept"],
               num_steps=options["num_leapfrog"], full_mass=options["full_mass"], **step)


_FLAT = "_theta"  # the one site the Pyro kernel samples: every latent, unconstrained, in one vector


def chain_seed(seed: int, chain: int) -> int:
    """The RNG seed of chain ``chain`` of a run seeded ``seed`` (NumPy's ``SeedSequence``: independent
    streams). Each chain has its own, so its draws do not depend on which process runs it or after what."""
    return int(np.random.SeedSequence([seed, chain]).generate_state(1)[0])


# the Potential of a parallel run in this process, keyed by the run: a worker builds it for its first chain and
# its later chains reuse it (and its compiled graph); the main process puts its own here before sampling
_WORKER_POTENTIAL: dict[str, "Potential"] = {}


def _run_chain(task: dict) -> tuple[torch.Tensor, dict]:
    """One chain: (draws of the flat unconstrained vector, shaped (num_samples, n); Pyro's diagnostics).

    ``task["potential"]`` is the :class:`Potential` (chains run one after another here) or the keyword
    arguments that build it (parallel chains: a traced JIT function cannot be pickled). A worker builds it
    once and caches it under ``task["potential_key"]``; in a parallel run the main process, which samples
    chains too, finds its own compiled Potential already cached under that key by :func:`_sample`. Run by
    :func:`ppvae._util.parallel.parallel_map`; progress goes through :func:`ppvae._util.parallel.report`."""

    potential = task["potential"]
    if not isinstance(potential, Potential):  # parallel: built once per process, not once per chain
        key = task.get("potential_key")
        if key not in _WORKER_POTENTIAL:
            _WORKER_POTENTIAL.clear()
            with pyro.validation_enabled(False):
                _WORKER_POTENTIAL[key] = Potential(**potential)
        potential = _WORKER_POTENTIAL[key]
    pyro.set_rng_seed(task["seed"])
    kernel = _kernel(task["kind"], lambda params: potential.energy(params[_FLAT]), task["options"])
    kernel.initial_params = {_FLAT: task["init"]}
    with pyro.validation_enabled(False):
        return chain_draws(kernel, task["warmup"], task["num_draws"], lambda: report(1))


def _sample(potential: Potential, kind: str, *, model, fn, batch, num_samples, warmup, num_chains, init,
            init_jitter, seed, progress, options, cores=1, rebuild: dict | None = None) -> tuple[MCMC, dict, float]:
    """Run ``num_chains`` chains on ``cores`` processes (this one and ``cores - 1`` workers; 1: here, one after
    another); return (mcmc, samples, seconds).

    Chain c is seeded :func:`chain_seed` (seed, c) and starts at its own point, so its draws are the same
    bit for bit whatever ``cores`` is (on CPU). ``rebuild``: the keyword arguments of :class:`Potential`
    for the workers (needed when ``cores`` > 1). ``samples`` are constrained, per site, shaped
    (chains, draws, ...); the Pyro ``mcmc`` holds the flat unconstrained vector (site ``"_theta"``)."""
    start = time.perf_counter()
    pyro.set_rng_seed(seed)
    inits = _initial_params(potential, model, fn, batch, init, num_chains, seed, init_jitter)
    potential.check_closed_form({k: v[0] for k, v in inits.items()})
    flat = potential.flatten(inits)  # (chains, n)
    if options.get("vectorized"):
        return _sample_vectorized(potential, kind, flat, num_samples, warmup, seed, options, start, progress)
    workers = resolve_workers(cores, num_chains)
    shared = potential if workers == 1 or rebuild is None else rebuild
    if workers > 1 and rebuild is None:
        workers = 1
    key = f"{os.getpid()}-{time.time_ns()}"  # one run: the workers' cached Potential is valid for it only
    tasks = [{"potential": shared, "potential_key": key, "kind": kind, "options": options, "warmup": warmup,
              "num_draws": num_samples,
              "init": flat[c].detach(), "seed": chain_seed(seed, c)} for c in range(num_chains)]
    if workers > 1:  # this process runs chains too (ppvae._util.parallel): with the Potential it has, compiled
        _WORKER_POTENTIAL.clear()
        _WORKER_POTENTIAL[key] = potential
    try:
        results = parallel_map(_run_chain, tasks, workers=workers, progress=_progress_flag(progress), desc=kind,
                               totals=[warmup + num_samples] * num_chains, part_name="chain")
    finally:
        _WORKER_POTENTIAL.pop(key, None)
    elapsed = time.perf_counter() - start
    draws = torch.stack([r[0] for r in results])  # (chains, draws, n), as MCMC.run leaves them
    mcmc = mcmc_from_draws(_kernel(kind, lambda params: potential.energy(params[_FLAT]), options), {_FLAT: draws},
                           [r[1] for r in results], warmup)
    unconstrained = potential.unflatten(draws.detach())
    samples = {n: t.inv(unconstrained[n]) for n, t in potential.transforms.items()}  # no Jacobians needed here
    return mcmc, samples, elapsed


def _sample_vectorized(potential: Potential, kind, flat, num_samples, warmup, seed, options, start, progress):
    """All chains in lockstep in this process (:func:`ppvae.infer.mcmc.vectorized.sample_chains`); ``progress`` as
    for chains run one by one, after a line saying the potential is compiled when it is (else the run looks stuck)."""
    show = _progress_flag(progress)
    if options["compile"] and show is not False:
        print(f"{kind}: compiling the potential and its gradient to C++ (TorchInductor: tens of seconds the first "
              "time, a few once its on-disk cache holds this model)", file=sys.stderr, flush=True)
    value_and_grad = chain_value_and_grad(potential, flat, options["compile"])
    num_chains = len(flat)
    with Progress(kind, [warmup + num_samples] * num_chains, enabled=show, part_name="chain") as bars:
        def iteration_done():
            raise_if_swallowed()  # a signal whose exception a C path discarded (ppvae._util.procs)
            for c in range(num_chains):
                bars.update(1, part=c)

        draws, diagnostics = sample_chains(value_and_grad, flat, warmup=warmup, num_draws=num_samples,
                                           seed=chain_seed(seed, 0), target_accept=options["target_accept"],
                                           max_tree_depth=options["max_tree_depth"], hook=iteration_done)
    mcmc = mcmc_from_draws(_kernel(kind, lambda params: potential.energy(params[_FLAT]), options), {_FLAT: draws},
                           diagnostics, warmup)
    unconstrained = potential.unflatten(draws)
    return mcmc, {n: t.inv(unconstrained[n]) for n, t in potential.transforms.items()}, time.perf_counter() - start


def _progress_flag(progress) -> bool | None:
    """None (the default): a bar on a terminal, plain lines elsewhere (ppvae._util.progress)."""
    return None if progress is None else bool(progress)


@renamed(num_samples="num_draws", num_steps="num_leapfrog")
@leaves_global_state  # seeds Pyro for the chains, then puts the caller's RNG states back
def run_mcmc(model: Model, data: Dataset | torch.Tensor, *, kernel: str = "nuts", num_draws: int = 500,
             warmup: int = 500, num_chains: int = 1, init: Any = None, init_jitter: float = 0.5,
             order: tuple[str, int] | None = None, closed_form: bool = True, jit: bool = False,
             target_accept: float = 0.8, max_tree_depth: int = 10, num_leapfrog: int = 10, full_mass: bool = False,
             step_size: float | None = None, seed: int = 0, progress: bool | None = None,
             max_divergences: int | None = None, allow_local: bool = False,
             cores: int | None = None, vectorized: bool = False, compile: bool | str = "auto") -> MCMCResult:
    """Sample the posterior of ``model``'s continuous latents given ``data`` with NUTS or HMC:
    ``num_draws`` kept draws per chain after ``warmup``; ``num_leapfrog``: leapfrog steps per HMC trajectory
    (NUTS chooses its own).

    Discrete local latents are summed out exactly (see the module docstring); a discrete latent with
    infinite support is refused. ``init``: None/"model" (the model's ``init_values``, drawn per chain),
    "prior" (prior medians), a dict of site values, a ``Fit`` (its ``global_values``) or an ``EMFit``
    (``model.em_to_sites``); every chain starts there plus uniform(-init_jitter, init_jitter) noise in
    unconstrained space. ``order=(site, column)`` constrains that location column to increase over
    components (removes label switching). ``max_divergences``: raise :class:`MCMCDivergenceError`
    when the run has more divergent transitions. ``step_size`` fixes the leapfrog step (no adaptation).
    A model with more than 1,000 (``ppvae.infer.mcmc.checks.MAX_LOCAL_DIMENSIONS``) per-data-point continuous latent
    coordinates is refused unless ``allow_local=True`` (use :func:`ppvae.local_posterior` for one point's z).
    ``cores``: processes for the chains, this one and ``cores - 1`` workers (None: every available core, at most
    ``num_chains``; 1: in this process, one after another); the draws are identical for every value. With
    ``cores`` > 1 the model must be picklable, and a script must guard its top level with
    ``if __name__ == "__main__":``.
    ``vectorized=True`` (NUTS): all chains in lockstep here, one potential evaluation over all chains per leapfrog
    step (:mod:`ppvae.infer.mcmc.vectorized`); the model must broadcast over draws; draws differ from the default's.
    ``compile``: that potential compiled by TorchInductor (True; "auto": with ``jit=True`` and at least 1,000 warm-up
    plus draws per chain; :mod:`ppvae.infer.mcmc.compiled`); the draws differ from the traced potential's.
    ``progress``: None shows a bar per chain on a terminal and a plain line every 30 s elsewhere.

    Example (NUTS on a diagonal Gaussian mixture, the assignments summed out in closed form; a short run):

    >>> import ppvae
    >>> from ppvae.models import GMM
    >>> data = ppvae.load_dataset("faithful", standardize=True)
    >>> run = ppvae.run_mcmc(GMM(K=2, covariance="diag"), data, num_draws=50, warmup=50, cores=1, progress=False)
    >>> run.num_chains, run.num_draws, run.num_divergences
    (1, 50, 0)
    >>> run.predict(data, num_draws=50, seed=0)["weights"].mean(0).round(decimals=1)
    tensor([0.4000, 0.6000])
    """
    if not isinstance(model, Model):
        raise PPVAEError(f"model: expected a ppvae.Model instance; got {type(model).__name__}")
    data = data if isinstance(data, Dataset) else Dataset(data)
    num_samples = num_draws  # Pyro's word for them, in the chain-running internals below
    options = {"target_accept": target_accept, "max_tree_depth": max_tree_depth, "num_leapfrog": num_leapfrog,
               "full_mass": bool(full_mass), "step_size": step_size, "vectorized": bool(vectorized)}
    check_options(kernel, num_samples, warmup, num_chains, seed, options)
    if step_size is not None:
        options["step_size"] = check_float("step_size", step_size, low=0.0, strict=True)
    init_jitter = check_float("init_jitter", init_jitter, low=0.0)
    cores = None if cores is None else check_int("cores", cores, low=1)
    cores = 1 if vectorized else cores  # vectorized: every chain in this process
    if resolve_workers(cores, num_chains) > 1:
        prestart_workers()  # the server imports torch, Pyro and ppvae while this process builds the potential
    order = check_order(order)
    with pyro.validation_enabled(False):
        model.setup(data)
    batch = data.batch()
    model.check_observed(batch, minibatched=False)  # as fit: a model that observes nothing has only its prior
    spec = {"fn": model, "batch": batch, "max_plate_nesting": model.structure(batch).max_plate_nesting, "model": model,
            "order": order, "closed_form": closed_form, "jit": jit}
    potential = Potential(**spec)
    options["compile"], compiled = wants_compile(compile, jit=jit, vectorized=vectorized, iterations=warmup + num_draws,
                                                 closed_form=potential.closed_form_gradient is not None)
    check_local_dimension(potential, model, allow_local)
    check_init(init, potential)
    check_broadcasts(model, batch)
    mcmc, samples, elapsed = _sample(potential, kernel, model=model, fn=model, batch=batch, num_samples=num_samples,
                                     warmup=warmup, num_chains=num_chains, init=init, init_jitter=init_jitter,
                                     seed=seed, progress=progress, options=options, cores=cores, rebuild=spec)
    result = MCMCResult(model, mcmc, samples, kernel, elapsed, divergences(mcmc),
                        data_info=runs.data_info(data),
                        config={"kernel": kernel, "num_draws": num_samples, "warmup": warmup,
                                "num_chains": num_chains, "cores": resolve_workers(cores, num_chains),
                                "order": list(order) if order else None, "jit": jit, "seed": seed,
                                "closed_form": potential.closed_form, "gradient": potential.gradient, **options,
                                "compiled": compiled})
    if max_divergences is not None and result.num_divergences > max_divergences:
        raise MCMCDivergenceError(
            f"{kernel}: {result.num_divergences} divergent transitions in {num_chains} x {num_samples} draws; "
            f"expected at most {max_divergences} (raise target_accept, reparametrize, or pass order=)")
    return result


register_kind("mcmc", MCMCResult.load, "posterior draws by NUTS/HMC (ppvae mcmc)")
