"""Per-datapoint importance weights, vectorized over particles, with enumerated discrete latents
summed out exactly inside each weight.

For data point i, particle k, fixed globals G and local continuous latents c_ik ~ q(c_i | x_i, G)::

    log w_ik = log sum_{z_i} p(x_i, z_i, c_ik | G) - log q(c_ik | x_i, G)

(Burda et al. 2015, "Importance weighted autoencoders", eq. 8 before the log-mean-exp). Model and
proposal are traced once under ``pyro.plate("particles", K, dim=-(max_plate_nesting + 1))``; each
side's per-point log-density comes from :func:`ppvae.model.enumeration.data_plate_log_prob`, which contracts the
enumeration dimensions (tensor variable elimination) and keeps the particle and data dimensions, so
the result is a (K, M) tensor. The same weights serve the evaluation layer (:mod:`ppvae.evaluate.marginal`)
and the ``iwae`` training objective (:class:`IWAE`).
"""

from __future__ import annotations

import contextlib
import math

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError, one_line, warn_at_caller
from ppvae.data.loaders import Batch
from ppvae.infer.proposal import check_sites, is_drawn_discrete, local_continuous_sites, samples_discrete_locals
from ppvae.model.enumeration import data_plate_log_prob, enumerated_log_likelihood, enumerated_trace
from ppvae.model.structure import declared_structure, is_local, structure_of

PARTICLES = "particles"

__all__ = ["PARTICLES", "local_log_weights", "data_log_likelihood", "global_log_density", "IWAE", "is_oom",
           "run_chunks", "auto_chunk", "check_log_weights", "available_bytes"]


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory error of PyTorch (CPU or CUDA)."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or (
        isinstance(exc, RuntimeError) and ("out of memory" in str(exc) or "can't allocate memory" in str(exc))
    )


def check_particles_fit(num: int, data, device, local_sites) -> None:
    """Refuse ``num_particles`` whose draws for ONE data point cannot fit in free memory (a lower bound: K draws
    of the point's values, 4 bytes each), before anything is allocated; exact sums (no local continuous
    latents) draw nothing and pass."""
    if not local_sites:
        return
    need = num * max(1, data.x[0].numel()) * 4
    free = available_bytes(device)
    if need > free:
        raise PPVAEError(f"num_particles: {num} importance samples of one data point need at least "
                         f"{need / 1e9:.3g} GB; {free / 1e9:.3g} GB are free on {device}; lower num_particles")


class _LastSite(poutine.messenger.Messenger):
    """Records the name of the last sample site a model reached (to say where a broadcast failed)."""

    last = None

    def _postprocess_message(self, msg):
        if msg["type"] == "sample" and not site_is_subsample(msg):
            self.last = msg["name"]


class BroadcastError(PPVAEError):
    """A model's forward fails over a leading dimension of draws of its globals (:func:`draws_broadcast`)."""


@contextlib.contextmanager
def draws_broadcast(model, num: int, names):
    """Run a model vectorized over ``num`` draws of its global latents ``names`` (a leading dimension
    left of every plate), turning a failure into a PPVAEError that states the rule.

    The rule (README, "Writing a model"): a model must broadcast over leading dimensions of its global
    latents, as Pyro's vectorized particles require: a global vector ``w`` arrives with shape (S, 1, D)
    (draws left of the data plate), so ``X @ w`` fails where ``(X * w).sum(-1)`` gives (S, N). A failure
    with one draw is not this rule's and propagates unchanged."""
    recorder = _LastSite()
    try:
        with recorder:
            yield
    except PPVAEError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        if num <= 1:
            raise
        name = getattr(model, "name", None) or type(model).__name__
        where = f"after site '{recorder.last}'" if recorder.last else "before its first sample site"
        raise BroadcastError(
            f"model '{name}': its forward fails when the global latents ({', '.join(names) or 'none'}) carry a "
            f"leading dimension of {num} draws ({where}: {one_line(exc)}); write it to broadcast over leading "
            "dimensions (a vector w then has shape (draws, 1, D)), e.g. (X * w).sum(-1) instead of X @ w"
        ) from exc


def particle_plate(num: int, max_plate_nesting: int):
    return pyro.plate(PARTICLES, num, dim=-(max_plate_nesting + 1))


def enumerated_particle_trace(model, batch, max_plate_nesting: int, values: dict):
    """The model with ``values`` substituted and every other discrete latent enumerated left of the
    particle plate (:func:`ppvae.model.enumeration.enumerated_trace` with the particle plate counted,
    validation as set)."""
    return enumerated_trace(model, batch, max_plate_nesting + 1, values, validate=None)


def is_enumerated(site) -> bool:
    return site["infer"].get("_enumerate_dim") is not None


def expand_to_shape(t, shape):
    t = torch.as_tensor(t)
    while t.dim() > len(shape):  # singleton dims right of the data plate
        t = t.squeeze(-1)
    return t.expand(shape)


def _local_log_weights(model, proposal, batch, num, max_plate_nesting, globals_, check):
    # a plate of size 1 leaves no particle dim in any tensor, so K = 1 runs without one
    with particle_plate(num, max_plate_nesting) if num > 1 else contextlib.nullcontext():
        if proposal is None:
            source = poutine.trace(poutine.condition(model, data=globals_)).get_trace(batch)
        else:
            source = poutine.trace(poutine.condition(proposal, data=globals_)).get_trace(batch)
        local_cont = local_continuous_sites(source, proposal is None, globals_, draw_discrete=True)
        values = {name: source.nodes[name]["value"] for name in local_cont}
        drawn = [n for n in local_cont if is_drawn_discrete(source.nodes[n])]
        if drawn and torch.is_grad_enabled():  # the iwae objective: no score-function term for drawn discrete sites
            raise PPVAEError(f"elbo: the guide draws discrete site(s) {', '.join(drawn)}, whose importance weights "
                             "have no reparameterized gradient; train with relaxed, relaxed_st, reinforce or enum")
        if values:
            mtr = enumerated_particle_trace(model, batch, max_plate_nesting, {**globals_, **values})
        if proposal is not None and values and samples_discrete_locals(source):
            # q(c | x) = sum_z q(z | x) q(c | x, z): the proposal's own discrete locals summed exactly too
            qtr = enumerated_particle_trace(proposal, batch, max_plate_nesting, {**globals_, **values})
    if not values:  # nothing varies over particles: one exact trace, no particle dim to contract to
        mtr = enumerated_particle_trace(model, batch, max_plate_nesting, globals_)
    fused_log_probs(mtr)
    if check:
        check_sites(mtr, source if proposal is not None else None, globals_, set(values))
    log_p = data_plate_log_prob(mtr)
    if not values:
        log_q = torch.zeros(())
    elif proposal is None:  # the prior density of the local continuous draws (discrete locals summed)
        log_q = data_plate_log_prob(mtr, include=lambda n, s: n in values or is_enumerated(s))
    elif samples_discrete_locals(source):
        log_q = data_plate_log_prob(qtr)
    else:  # every proposal site in the data plate (auxiliary ones too)
        log_q = data_plate_log_prob(source)
    shape = (num, len(batch))
    log_w = expand_to_shape(log_p, shape) - expand_to_shape(log_q, shape).to(log_p.device)
    return log_w, {"model": mtr, "proposal": source if proposal is not None else None}


def local_log_weights(model, proposal, batch, num: int, max_plate_nesting: int, globals_: dict,
                      check: bool = False) -> tuple[torch.Tensor, dict]:
    """Log importance weights of shape (num, M) for the points of ``batch`` with the model's global
    latents fixed at ``globals_``. ``proposal`` is a guide callable or ``None`` for the prior.

    Returns ``(log_w, traces)`` where ``traces`` holds the model (and proposal) traces, for diagnosis.
    A single point is evaluated as two copies of it (a plate of size 1 leaves no dim to keep).
    """
    if len(batch) == 1:
        pair = duplicate_point(batch)
        log_w, traces = _local_log_weights(model, proposal, pair, num, max_plate_nesting, globals_, check)
        return log_w[:, :1], traces
    return _local_log_weights(model, proposal, batch, num, max_plate_nesting, globals_, check)


def duplicate_point(batch):
    """A one-point batch as two copies of its point."""
    index = batch.index.repeat(2) if batch.index is not None else None
    y = None if batch.y is None else batch.y.expand(2, *batch.y.shape[1:])  # a regression's response too
    mask = None if batch.mask is None else batch.mask.expand(2, *batch.mask.shape[1:])
    return Batch(batch.x.expand(2, *batch.x.shape[1:]), y, index, batch.num_total, mask)


def data_log_likelihood(model, batch, num: int, max_plate_nesting: int, values: dict) -> tuple[torch.Tensor, object]:
    """log p(x_i | G_s) of shape (num, M), discrete locals enumerated, for ``values`` holding ``num``
    draws of the globals G (made under the particle plate); returns it with the model trace."""
    if len(batch) == 1:
        lp, trace = data_log_likelihood(model, duplicate_point(batch), num, max_plate_nesting, values)
        return lp[:, :1], trace
    with draws_broadcast(model, num, list(values)):
        with particle_plate(num, max_plate_nesting) if num > 1 else contextlib.nullcontext():
            lp, trace = enumerated_log_likelihood(model, batch, values, max_plate_nesting=max_plate_nesting + 1,
                                                  validate=None, with_trace=True)
    return expand_to_shape(lp, (num, len(batch))), trace


def fused_log_probs(trace) -> None:
    """Fill in the log-density of observed ``Bernoulli(logits)`` sites (optionally ``.to_event``) as
    -(sum of BCE-with-logits), negating after the event sum instead of elementwise as
    ``Bernoulli.log_prob`` does: the same numbers, one pass fewer over a (K, M, pixels) tensor.
    ``Trace.compute_log_prob`` then keeps these and computes the other sites."""
    for site in trace.nodes.values():
        if site["type"] != "sample" or not site["is_observed"] or "log_prob" in site or site["args"] or site["kwargs"]:
            continue
        fn, event = site["fn"], 0
        if type(fn) is dist.Independent:
            fn, event = fn.base_dist, fn.reinterpreted_batch_ndims
        if type(fn) is not dist.Bernoulli or "logits" not in vars(fn):
            continue
        logits, value = torch.distributions.utils.broadcast_all(fn.logits, site["value"])
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, value, reduction="none")
        log_p = -(bce.sum(tuple(range(-event, 0))) if event else bce)
        site["unscaled_log_prob"] = log_p
        site["log_prob"] = scale_and_mask(log_p, site["scale"], site["mask"])
        site["log_prob_sum"] = site["log_prob"].sum()


def nonfinite_sites(traces: dict) -> list[str]:
    """Sites of the data plate whose log-density is NaN or +inf (model) / non-finite (proposal)."""
    bad = []
    for role, tr in traces.items():
        if tr is None:
            continue
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or not is_local(site) or "log_prob" not in site:
                continue
            lp = site["log_prob"]
            bad_value = (lp == float("inf")) | (lp == -float("inf")) if role == "proposal" else lp == float("inf")
            if torch.isnan(lp).any() or bad_value.any():
                bad.append(f"{name} ({role})")
    return bad


def global_log_density(trace, names, num: int, max_plate_nesting: int) -> torch.Tensor:
    """Sum of the log-densities of sites ``names`` of a trace made under the particle plate, one
    float64 value per particle (shape (num,)); a site's particle dim is the (max_plate_nesting + 1)-th
    from the right, and a site without one (broadcast) contributes the same value to every particle."""
    total = torch.zeros(num, dtype=torch.float64)
    for name in names:
        site = trace.nodes[name]
        lp = site["fn"].log_prob(site["value"]).double()
        total = total.to(lp.device)
        if lp.dim() >= max_plate_nesting + 1:
            pdim = lp.dim() - (max_plate_nesting + 1)
            dims = [d for d in range(lp.dim()) if d != pdim]
            lp = lp.sum(dims) if dims else lp
        else:
            lp = lp.sum()
        total = total + lp.expand(num)
    return total


class IWAE:
    """The importance-weighted bound (Burda et al. 2015, eq. 8) as a training objective:

        L_K = E_{q(G)}[ log p(G) - log q(G) + sum_i log (1/K) sum_k w_ik(G) ],

    with the per-point log-weights of :func:`local_log_weights` (enumerated discrete latents summed
    exactly in each weight) and global latents G drawn once per step from the guide (the ordinary
    ELBO for the globals). K = 1 is the ELBO; L_K increases with K towards log p(x) (Burda et al.
    2015, theorem 1). ``differentiable_loss`` returns -L_K, scaled by N / M for a minibatch.
    """

    def __init__(self, num_particles: int = 1, max_plate_nesting: int | float = float("inf")):
        self.num_particles = int(num_particles)
        self.max_plate_nesting = max_plate_nesting
        self._no_globals: dict = {}

    def _mpn(self, model, batch) -> int:
        if self.max_plate_nesting != float("inf"):
            return int(self.max_plate_nesting)
        return structure_of(model, batch).max_plate_nesting

    def differentiable_loss(self, model, guide, batch) -> torch.Tensor:
        mpn = self._mpn(model, batch)
        key = (id(model), id(guide))
        if self._no_globals.get(key):  # skip the extra guide pass of a guide with local sites only
            log_w, _ = local_log_weights(model, guide, batch, self.num_particles, mpn, {})
            return -(batch.num_total / len(batch)) * self._log_mean_exp(log_w).sum()
        gtr = poutine.trace(guide).get_trace(batch)
        global_names = [n for n, s in gtr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
                        and not is_local(s) and not site_is_subsample(s)]
        self._no_globals[key] = not global_names
        globals_ = {n: gtr.nodes[n]["value"] for n in global_names if not gtr.nodes[n]["infer"].get("is_auxiliary")}
        log_q_g = sum((gtr.nodes[n]["fn"].log_prob(gtr.nodes[n]["value"]).sum() for n in global_names),
                      torch.zeros(()))
        log_w, traces = local_log_weights(model, guide, batch, self.num_particles, mpn, globals_)
        model_globals = [n for n, s in traces["model"].nodes.items()
                         if s["type"] == "sample" and n in globals_]
        log_p_g = 0.0
        if model_globals:
            log_p_g = global_log_density(traces["model"], model_globals, self.num_particles, mpn).mean()
        scale = batch.num_total / len(batch)
        return -(log_p_g - log_q_g + scale * self._log_mean_exp(log_w).sum())

    def _log_mean_exp(self, log_w: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(log_w, dim=0) - math.log(self.num_particles)

    def loss(self, model, guide, batch) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, batch))


# -- chunks over data points with a memory bound -------------------------------------------------------
MIN_CHUNK = 1


def available_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0] * 0.5)
    try:
        with open("/proc/meminfo") as fh:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in fh}
        return int(info.get("MemAvailable", 8 << 30) * 0.25)
    except OSError:
        return 2 << 30


def _trace_bytes(traces: dict) -> int:
    """Bytes held by the tensors of the traces' sites (values, log-densities, distribution parameters)."""
    seen, total = set(), 0
    for tr in traces.values():
        if tr is None:
            continue
        for site in tr.nodes.values():
            if site["type"] != "sample":
                continue
            fn, tensors = site["fn"], [site["value"], site.get("log_prob"), site.get("unscaled_log_prob")]
            while fn is not None:
                tensors += [v for v in vars(fn).values() if isinstance(v, torch.Tensor)]
                fn = getattr(fn, "base_dist", None)
            for t in tensors:
                if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total


def auto_chunk(traces: dict, m: int, n: int, device) -> int:
    # x6 for what the trace does not hold: hidden activations, the log-density's temporaries (measured
    # on a 784-200-200-50 VAE at K = 5,000: peak ~85 MB per point for ~17 MB of trace tensors)
    per_point = 6 * _trace_bytes(traces) / max(m, 1)
    return int(max(MIN_CHUNK, min(n, available_bytes(device) // max(per_point, 1))))


def run_chunks(n: int, chunk: int | None, run, probe: int = 16, model=None):
    """Call ``run(start, m)`` over consecutive chunks; halve the chunk on out-of-memory down to 1.
    ``run`` returns a suggested chunk size, used when ``chunk`` is None after a first chunk of
    ``probe`` points. A ``model`` whose rows are not i.i.d. points (a sequence, a record, groups:
    ``Model.data_structure``) runs on all ``n`` rows at once: a chunk of them is another data set."""
    if model is not None and declared_structure(model) != "points":
        run(0, n)
        return n
    start, size = 0, chunk or max(MIN_CHUNK, min(n, probe))
    auto = chunk is None
    while start < n:
        m = min(size, n - start)
        try:
            suggested = run(start, m)
        except Exception as exc:
            if not is_oom(exc):
                raise
            if m <= MIN_CHUNK:
                raise PPVAEError(
                    f"chunk_size: out of memory evaluating even {m} data point(s) at once ({exc}); "
                    "lower num_particles or free memory"
                ) from None
            size = max(MIN_CHUNK, m // 2)
            warn_at_caller(f"out of memory with chunk_size={m}; retrying with chunk_size={size}", ResourceWarning)
            auto = False
            continue
        start += m
        if auto:
            size, auto = max(MIN_CHUNK, suggested), False
    return size


def check_log_weights(log_w: torch.Tensor, traces: dict) -> None:
    bad_rows = torch.isnan(log_w).any(0) | (log_w == float("inf")).any(0)
    if bad_rows.any():
        sites = nonfinite_sites(traces) or ["(none identified)"]
        raise PPVAEError(
            f"proposal: log-weights are NaN or +inf for {int(bad_rows.sum())} of {log_w.shape[1]} points "
            f"(non-finite log-density at site(s) {', '.join(sites)}): the proposal puts mass where the model has "
            "none, or has zero density where the model has mass"
        )
    dead = (log_w == -float("inf")).all(0)
    if dead.any():
        raise PPVAEError(
            f"proposal: every draw has zero model density for {int(dead.sum())} of {log_w.shape[1]} points; "
            "the proposal misses the model's support there"
        )
