"""Per-point annealed importance sampling of log p(x_i | G) (Neal 2001; Wu et al. 2017, sec. 3-4).

For data point i with the globals G fixed, the local continuous latents c_i are annealed from the
proposal q(c_i | x_i) (the guide's local factor, the prior, or a user's guide) to the unnormalized
posterior

    f_1(c_i) = sum_{z_i} p(x_i, z_i, c_i | G)

(discrete locals z_i summed exactly by :func:`ppvae.model.enumeration.data_plate_log_prob`, the same contraction
importance sampling uses), by :func:`ppvae.evaluate.ais.anneal` on the unconstrained space u_i = T^-1(c_i)
(T = ``biject_to(support)``, its log-Jacobian added to both ends). All points of a chunk and all C
chains run as one (C, M, D) batch; each point has its own step size, adapted over its C chains. The
C log-weights of a point are summarized as importance weights are (log-mean-exp, ESS, k-hat, delta-
method standard error); with T = 1 they are exactly the importance weights of the same draws.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from torch.distributions import biject_to

from ppvae._util.validation import PPVAEError, check_float, check_int
from ppvae.data.loaders import Batch
from ppvae.evaluate.ais import anneal, frozen, make_schedule
from ppvae.evaluate.estimate import _global_values, _seeded, _summarize
from ppvae.infer.importance import (
    auto_chunk,
    check_log_weights,
    duplicate_point,
    enumerated_particle_trace,
    expand_to_shape,
    fused_log_probs,
    is_enumerated,
    local_log_weights,
    particle_plate,
    run_chunks,
)
from ppvae.infer.proposal import autoguide_subsample, check_sites, local_continuous_sites, samples_discrete_locals
from ppvae.model.enumeration import data_plate_log_prob
from ppvae.model.structure import DATA_PLATE, is_local

__all__ = ["LocalTarget", "point_ais", "data_dim"]

# log eps += g (acceptance - target) after each transition, g = 3 min(1, C / 16): Wu et al.'s +-2% per
# step needs ~80 steps to shrink a step size 5x, too slow for runs of 50-100 steps (measured on factor
# analysis: acceptance 0.44 against a 0.65 target, and errors past 3 standard errors, which g = 3
# removes); with fewer chains the acceptance average is noisier, so the gain shrinks with it (at C = 1,
# g = 3 made the step size jump by e^1 and e^-2, and the estimates were 1-7 nats low at T = 20-200)
ADAPT = 3.0
ADAPT_CHAINS = 16


@dataclass
class _Site:
    """A local continuous site: its bijection T to the unconstrained space, where its particle dim
    (None: none) and data dim sit in a sampled value, the unconstrained value's shape, and its slice of
    the flat (C, M, D) state."""

    name: str
    transform: object
    pdim: int | None
    ddim: int
    ushape: tuple
    start: int
    stop: int
    aux: object = None   # an autoguide's density on u itself (AutoNormal's "<name>_unconstrained" site)
    qfn: object = None   # the proposal's density at the constrained value


def data_dim(site) -> int:
    """The position of the data-plate dim in a sample site's value (counted from the left)."""
    frame = next(f for f in site["cond_indep_stack"] if f.name == DATA_PLATE)
    return site["value"].dim() - len(site["fn"].event_shape) + frame.dim


def _to_flat(t, pdim, ddim):
    """(..., C, ..., M, ...) -> (C, M, d); no particle dim: C = 1."""
    if pdim is None:
        t, pdim, ddim = t.unsqueeze(0), 0, ddim + 1
    t = t.movedim((pdim, ddim), (0, 1))
    return t.reshape(t.shape[0], t.shape[1], -1)


def _per_point(t, s: _Site, event_dim: int = 0):
    """Sum of a site-shaped log-density over every dim but the particle and data dims: (C, M)."""
    for _ in range(event_dim):
        t = t.sum(-1)
    return _to_flat(t, s.pdim, s.ddim).sum(-1)


def _jacobian(s: _Site, u, v):
    """Per-point log|det dT/du| of site ``s`` (C, M); an identity transform gives a broadcast zero."""
    nb = v.dim() - s.transform.codomain.event_dim
    j = s.transform.log_abs_det_jacobian(u, v)
    while j.dim() > nb:
        j = j.sum(-1)
    return _per_point(j.expand(v.shape[:nb]), s)


def _from_flat(u, s: _Site):
    """The unconstrained value of site ``s`` (its sampled layout) from the flat state (C, M, D)."""
    piece = u[..., s.start:s.stop]
    rest = [d for i, d in enumerate(s.ushape) if i not in (s.pdim, s.ddim)]
    shaped = piece.reshape(piece.shape[0], piece.shape[1], *rest)
    if s.pdim is None:
        return shaped.squeeze(0).movedim(0, s.ddim)
    return shaped.movedim((0, 1), (s.pdim, s.ddim))


class LocalTarget:
    """The start draws u_0 and the two log-densities of the annealing path for one chunk of points.

    ``source``: a trace of the proposal (or, for the prior, the model) made under the particle plate;
    ``mtr``: the model trace with the drawn locals substituted. ``log_init(u)`` is log q(T(u)) +
    log|J_T(u)| (for an AutoNormal-style guide its density on u directly), ``log_target(u)`` is
    log f_1(T(u)) + log|J_T(u)|; both (C, M, D) -> (C, M). A proposal whose local densities depend on
    other local draws, or that samples discrete locals, is re-traced at every evaluation. The model
    trace of one state serves both densities (memoized on the state tensor).
    """

    def __init__(self, model, proposal, batch, num, mpn, globals_, source, mtr, names):
        self.model, self.proposal, self.batch, self.num, self.mpn = model, proposal, batch, num, mpn
        self.globals_ = globals_
        self.sites, pieces, start = [], [], 0
        for name in names:
            msite, qsite = mtr.nodes[name], source.nodes[name]
            value = qsite["value"]
            transform = biject_to(msite["fn"].support)
            nb = value.dim() - len(msite["fn"].event_shape)
            pdim = nb - (mpn + 1)
            pdim = pdim if pdim >= 0 and value.shape[pdim] == num else None
            u = transform.inv(value)
            flat = _to_flat(u, pdim, data_dim(qsite))
            site = _Site(name, transform, pdim, data_dim(qsite), tuple(u.shape), start, start + flat.shape[-1])
            start = site.stop
            if proposal is not None:
                aux = source.nodes.get(f"{name}_unconstrained")
                if isinstance(qsite["fn"], dist.Delta) and aux is not None and aux["infer"].get("is_auxiliary"):
                    site.aux = aux["fn"]
                else:
                    site.qfn = qsite["fn"]
            self.sites.append(site)
            pieces.append(flat.expand(num, -1, -1))
        self.u0 = torch.cat(pieces, -1).detach()
        self.retrace = proposal is not None and (samples_discrete_locals(source) or self._dependent(source))
        self._memo = None

    def _dependent(self, source) -> bool:
        """Whether a proposal site's distribution changes with the other local values (checked by
        re-tracing the proposal at values that require grad: frozen networks leave no other path)."""
        if any(s.aux is not None for s in self.sites):
            return False  # an autoguide: each site's density is fixed by its own parameters
        values = {s.name: source.nodes[s.name]["value"].detach().requires_grad_() for s in self.sites}
        with torch.enable_grad(), particle_plate(self.num, self.mpn):
            tr = poutine.trace(poutine.condition(self.proposal, data={**self.globals_, **values})).get_trace(
                self.batch)
        for site in tr.nodes.values():
            fn = site.get("fn") if site["type"] == "sample" else None
            while fn is not None:
                if any(isinstance(v, torch.Tensor) and v.requires_grad for v in vars(fn).values()):
                    return True
                fn = getattr(fn, "base_dist", None)
        return False

    def start_state(self, start: dict) -> torch.Tensor:
        """The flat state at exact latent values ``start`` (name -> value without the particle dim, as
        one model run on the batch makes them), repeated over the chains."""
        pieces = []
        for s in self.sites:
            v = start[s.name]
            v = v.unsqueeze(s.pdim) if s.pdim is not None else v
            pieces.append(_to_flat(s.transform.inv(v), s.pdim, s.ddim).expand(self.num, -1, -1))
        return torch.cat(pieces, -1).detach()

    def _evaluate(self, u):
        if self._memo is not None and self._memo[0] is u:
            return self._memo[1]
        values, log_j = {}, {}
        for s in self.sites:
            us = _from_flat(u, s)
            v = s.transform(us)
            values[s.name] = v
            log_j[s.name] = _jacobian(s, us, v)
        shape = (self.num, len(self.batch))
        with particle_plate(self.num, self.mpn):
            mtr = enumerated_particle_trace(self.model, self.batch, self.mpn, {**self.globals_, **values})
        fused_log_probs(mtr)
        jac = sum(log_j.values())
        log_p = expand_to_shape(data_plate_log_prob(mtr), shape) + jac
        if self.proposal is None:
            included = data_plate_log_prob(mtr, include=lambda n, s: n in values or is_enumerated(s))
            log_q = expand_to_shape(included, shape)
            log_q = log_q + jac
        elif self.retrace:
            with particle_plate(self.num, self.mpn):
                qtr = enumerated_particle_trace(self.proposal, self.batch, self.mpn, {**self.globals_, **values})
            log_q = expand_to_shape(data_plate_log_prob(qtr), shape) + jac
        else:
            log_q = torch.zeros(shape, dtype=u.dtype, device=u.device)
            for s in self.sites:
                if s.aux is not None:
                    log_q = log_q + _per_point(s.aux.log_prob(_from_flat(u, s)), s)
                else:
                    log_q = log_q + _per_point(s.qfn.log_prob(values[s.name]), s) + log_j[s.name]
        self._memo = (u, (log_q, log_p, mtr))
        return self._memo[1]

    def log_init(self, u):
        return self._evaluate(u)[0]

    def log_target(self, u):
        return self._evaluate(u)[1]


def _draw(model, proposal, batch, num, mpn, globals_):
    """Start draws from the proposal (or the prior) and the model trace at them, drawn as importance
    sampling draws them (the same random numbers for the same seed)."""
    with particle_plate(num, mpn):
        fn = proposal if proposal is not None else model
        source = poutine.trace(poutine.condition(fn, data=globals_)).get_trace(batch)
        names = local_continuous_sites(source, proposal is None, globals_)
        values = {name: source.nodes[name]["value"] for name in names}
        mtr = enumerated_particle_trace(model, batch, mpn, {**globals_, **values})
    return source, mtr, names


def point_ais(model, proposal, batch, num, mpn, globals_, betas, *, start=None, check=False, step_size=0.1,
              **hmc) -> tuple:
    """Per-point AIS over one chunk of points: (log-weights (C, M) float64, mean acceptance (M,),
    final step sizes (M,), traces for diagnosis). ``start``: exact latent values, name -> (value
    without particle dim, its data dim), for reverse AIS (``betas`` then run from 1 to 0)."""
    if len(batch) == 1:  # a plate of size 1 leaves no dim to keep: run two copies of the point
        start2 = {k: (torch.cat([v, v], d), d) for k, (v, d) in start.items()} if start else None
        lw, acc, eps, traces = point_ais(model, proposal, duplicate_point(batch), num, mpn, globals_, betas,
                                         start=start2, check=check, step_size=step_size, **hmc)
        return lw[:, :1], acc[:1], eps[:1], traces
    source, mtr, names = _draw(model, proposal, batch, num, mpn, globals_)
    if check or not names:  # a proposal that misses the model's sites is named before anything else
        check_sites(mtr, source if proposal is not None else None, globals_, set(names))
    if not names:
        raise PPVAEError("method: per-point AIS anneals local continuous latents; the model has none (use "
                         "method='is': its weights are exact when the locals are discrete)")
    target = LocalTarget(model, proposal, batch, num, mpn, globals_, source, mtr, names)
    u0 = target.u0 if start is None else target.start_state({k: v for k, (v, _) in start.items()})
    step = torch.full((1, len(batch)), float(step_size), dtype=u0.dtype, device=u0.device)
    gain = ADAPT * min(1.0, num / ADAPT_CHAINS)
    res = anneal(u0, target.log_init, target.log_target, betas, step_size=step, adapt=gain, **hmc)
    traces = {"model": mtr, "proposal": source if proposal is not None else None}
    return res.log_weights, res.accept_rate.reshape(-1), res.step_size.reshape(-1), traces


def check_ais_options(num_steps, num_chains, schedule, num_leapfrog, step_size, target_accept) -> tuple:
    """The checked AIS settings (PPVAEError naming the argument otherwise), with the betas."""
    num_steps = check_int("num_steps", num_steps, low=1)
    settings = {
        "num_steps": num_steps, "num_chains": check_int("num_chains", num_chains, low=1),
        "num_leapfrog": check_int("num_leapfrog", num_leapfrog, low=1),
        "step_size": check_float("step_size", step_size, low=0.0, strict=True),
        "target_accept": check_float("target_accept", target_accept, low=0.0, high=1.0, strict=True),
        "schedule": schedule if isinstance(schedule, str) else "custom",
    }
    return settings, make_schedule(schedule, num_steps)


def ais_log_marginal(prepared: tuple, settings: dict, betas, global_values, progress, start=None) -> tuple:
    """Per-point AIS over all points, chunked (halved on out-of-memory) as importance sampling is;
    returns (summary tensors, acceptance (N,), step sizes (N,), chunk size). ``start``: exact local
    latents of every point, name -> (value, data dim), for reverse AIS (``betas`` from 1 to 0)."""
    _, chunk_size, seed, model, guide, fit, ds, device, q, _, mpn, global_names, local_cont = prepared
    n, num = len(ds), settings["num_chains"]
    out = {k: torch.empty(n, dtype=torch.float64) for k in ("values", "ess", "khat", "elbo", "mc_stderr")}
    accept, steps = torch.full((n,), math.nan, dtype=torch.float64), torch.full((n,), math.nan, dtype=torch.float64)
    hmc = {k: settings[k] for k in ("num_leapfrog", "step_size", "target_accept")}
    bar = _bar(settings["num_steps"] * n, progress)
    with torch.no_grad(), pyro.validation_enabled(False), _seeded(seed, device), frozen(model, guide, q):
        globals_ = _global_values(fit, model, guide, ds, global_names, global_values)

        def run(first: int, m: int) -> int:
            y = None if ds.y is None else ds.y[first:first + m]  # a regression's response rides with x
            batch = Batch(ds.x[first:first + m], y, torch.arange(first, first + m, device=device), n)
            where = slice(first, first + m)
            with autoguide_subsample(q, n) if q is not None else contextlib.nullcontext():
                if not local_cont:  # discrete locals only: exact weights by enumeration, nothing to anneal
                    log_w, traces = local_log_weights(model, q, batch, 1, mpn, globals_, check=first == 0)
                    _check_has_locals(traces["model"])
                else:
                    tick = (lambda k: bar.update(k * m)) if bar is not None else None
                    here = None if start is None else {
                        k: (v.narrow(d, first, m), d) for k, (v, d) in start.items()}
                    log_w, acc, eps, traces = point_ais(model, q, batch, num, mpn, globals_, betas, start=here,
                                                        check=first == 0, progress=tick, **hmc)
                    accept[where], steps[where] = acc.cpu(), eps.double().cpu()
            check_log_weights(log_w, traces)
            _summarize(log_w, num, out, where)
            # the gradients and the HMC state hold about 3x what one trace does
            return auto_chunk(traces, max(1, m // 3), n, device)

        chunk = run_chunks(n, chunk_size, run, probe=max(2, min(16, 100_000 // num)), model=model)
    if bar is not None:
        bar.close()
    return out, accept, steps, chunk


def _check_has_locals(trace) -> None:
    if not any(is_local(s) and is_enumerated(s) for s in trace.nodes.values() if s["type"] == "sample"):
        raise PPVAEError("method: per-point AIS anneals the local latents of each point; the model has no local "
                         "latent sites (inside pyro.plate('data')), so log p(x_i | G) needs no estimator")


def _bar(total: int, enabled):
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    from tqdm.auto import tqdm  # heavy-ish: only when a progress bar is shown

    return tqdm(total=total, desc="ais", unit="point-step", leave=False, dynamic_ncols=True)
