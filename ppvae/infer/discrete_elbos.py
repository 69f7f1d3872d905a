"""Training objectives for models whose guide samples discrete latents (e.g. the discrete-code VAE ``dvae``).

* ``relaxed`` -- the Gumbel-Softmax / Concrete relaxation (Jang, Gu & Poole 2017, eq. 1-2; Maddison, Mnih & Teh
  2017). Every ``OneHotCategorical`` site the guide samples, q(z | x) = Cat(pi), is drawn as the relaxed sample
  y = softmax((log pi + g) / tau), g ~ Gumbel(0, 1)^K, so the likelihood term is reparameterized, and the loss is
  Jang et al.'s objective (their sec. 3 and code):

      L_tau(x) = E_{y ~ Concrete(pi, tau)}[ log p(x | y) ] - KL( Cat(pi) || Cat(prior) ),

  the KL between the UNRELAXED categoricals, in closed form. This is Jang et al.'s surrogate, not an ELBO of a
  relaxed model (it mixes a relaxed likelihood with a discrete KL), chosen because it is the one whose limit is the
  discrete model's ELBO: as tau -> 0, y -> the one-hot sample of Cat(pi), so L_tau -> E_q[log p(x|z)] - KL, the
  ELBO of the discrete model (checked against the enumerated ELBO in tests/infer/svi/test_discrete.py). The proper
  ELBO of the relaxed model (Maddison et al. 2017 sec. 3.3: both densities Concrete, in ExpConcrete space) does
  not have that limit: for Concrete densities of the same temperature, log q_tau(y) - log p_tau(y) at
  y = softmax((log pi + g)/tau) equals sum_k log(pi_k/beta_k) + K log sum_k (beta_k/pi_k) e^{-g_k}
  - K log sum_k e^{-g_k}, free of tau, so its expectation is a fixed number that is not KL(Cat(pi) || Cat(beta))
  (it grows like log pi_max / pi_min). Options: ``temperature`` (tau_0, default 1), ``temperature_min`` (default
  0.5) and ``anneal_rate`` r (default 1e-3 per step): tau_t = max(tau_min, tau_0 exp(-r t)) at the objective's
  t-th gradient evaluation (Jang et al. sec. 4; one per optimizer step of a fresh run).
* ``relaxed_st`` -- the same with the straight-through estimator (Jang et al. sec. 2.2): the forward pass uses the
  hard one-hot argmax of y, the gradient flows through y (Pyro's ``RelaxedOneHotCategoricalStraightThrough``).
* ``reinforce`` -- the score-function estimator of the discrete ELBO: Pyro's ``TraceGraph_ELBO`` (each discrete
  site's score weighted by the costs that depend on it, Schulman et al. 2015) with a learned neural baseline
  b_psi(x) per discrete site (Mnih & Gregor 2014, "Neural variational inference and learning", sec. 2.3): a
  b_j(x) = (N/M) [c + r_psi(x)_j], where c is a running mean of the per-point ELBO over PAST gradient
  evaluations (Mnih & Gregor's centring; it tracks costs of hundreds of nats, which a network fitted by Adam at
  lr 1e-3 cannot follow) and r_psi a one-hidden-layer network of ``baseline_hidden`` units from the batch's x
  (the input-dependent part), passed to Pyro as each site's ``baseline_value`` and fitted by Pyro's baseline loss
  (b - downstream cost)^2 with the model's optimizer. Neither part depends on the current draw, so the gradient
  stays unbiased. ``baseline="none"`` uses no baseline.

``enum`` (:mod:`ppvae.infer.svi.objectives`, TraceEnum_ELBO) sums a small code exactly. Relaxed and straight-through
gradients are biased for the discrete ELBO; reinforce's are unbiased (tests check the mean against the enumerated
gradient). Training reports the objective's own value; compare models on ``ppvae.log_marginal``, which draws the
codes from the unrelaxed categorical guide.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.torch_distribution import ExpandedDistribution
from pyro.infer import TraceGraph_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample
from torch import nn
from torch.distributions import register_kl

from ppvae._util.validation import PPVAEError, check_choice, check_float, check_int
from ppvae.infer.svi.objectives import LeanTraceMeanField_ELBO, register_elbo

__all__ = ["RelaxedELBO", "ReinforceELBO", "RelaxedCode", "RelaxedCodeStraightThrough"]


class _SafeLogProb:
    def log_prob(self, value):
        """The Concrete log-density, log p_ExpConcrete(log y) - sum_k log y_k, with log y floored at the smallest
        normal float (at small temperatures a float32 y_k underflows to 0; the objectives do not use this term)."""
        value = getattr(value, "_unquantize", value)
        log_y = value.clamp_min(torch.finfo(value.dtype).tiny).log()
        return self.base_dist.log_prob(log_y) - log_y.sum(-1)


class RelaxedCode(_SafeLogProb, dist.RelaxedOneHotCategorical):
    """Concrete(pi, tau) whose KL to another :class:`RelaxedCode` is the KL of the unrelaxed categoricals
    (Jang et al.'s surrogate; see the module docstring). Only the objectives of this module make these."""


class RelaxedCodeStraightThrough(_SafeLogProb, dist.RelaxedOneHotCategoricalStraightThrough):
    """:class:`RelaxedCode` whose sample is the hard one-hot argmax, with the relaxed sample's gradient."""


def _categorical_kl(p, q):
    """KL(Cat(pi_p) || Cat(pi_q)) = sum_k pi_pk (log pi_pk - log pi_qk), from the (normalized) logits."""
    return (p.probs * (p.logits - q.logits)).sum(-1)


for _a in (RelaxedCode, RelaxedCodeStraightThrough):
    for _b in (RelaxedCode, RelaxedCodeStraightThrough):
        register_kl(_a, _b)(_categorical_kl)


def _one_hot_base(fn):
    """(OneHotCategorical base, reinterpreted event dims) of a site's distribution, or (None, 0)."""
    events, base = 0, fn
    while isinstance(base, (dist.Independent, ExpandedDistribution)):
        events += base.reinterpreted_batch_ndims if isinstance(base, dist.Independent) else 0
        base = base.base_dist
    return (base, events) if isinstance(base, dist.OneHotCategorical) else (None, 0)


class _Relax(Messenger):
    """Replaces the guide's OneHotCategorical latents (and the model's at the same sites) by their relaxation."""

    def __init__(self, name: str, temperature: float, cls, guide_sites: set | None):
        super().__init__()
        self.name, self.temperature, self.cls, self.guide_sites = name, temperature, cls, guide_sites
        self.relaxed: set[str] = set()

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg):
            return
        base, events = _one_hot_base(msg["fn"])
        if base is None or (self.guide_sites is not None and msg["name"] not in self.guide_sites):
            if msg["fn"].support.is_discrete:
                side = "guide" if self.guide_sites is None else "model"
                raise PPVAEError(f"elbo '{self.name}': {side} site '{msg['name']}' is a discrete latent "
                                 f"({type(msg['fn']).__name__}) the guide does not sample as a OneHotCategorical; "
                                 "only OneHotCategorical codes sampled by the guide can be relaxed (use enum)")
            return  # a continuous latent: left to the ordinary (reparameterized) estimator
        fn = msg["fn"]
        logits = base.logits.expand(fn.batch_shape + fn.event_shape)
        tau = torch.as_tensor(self.temperature, dtype=logits.dtype, device=logits.device)
        # no sample validation: a float32 softmax sums to 1 only within ~1e-6, torch's simplex tolerance
        relaxed = self.cls(tau, logits=logits, validate_args=False)
        msg["fn"] = relaxed.to_event(events) if events else relaxed
        msg["infer"] = {k: v for k, v in msg["infer"].items() if k != "enumerate"}
        self.relaxed.add(msg["name"])


class RelaxedELBO:
    """``relaxed`` / ``relaxed_st`` (module docstring): Jang et al.'s Gumbel-Softmax objective with a temperature
    schedule tau_t = max(temperature_min, temperature * exp(-anneal_rate * t))."""

    def __init__(self, num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf"), *,
                 straight_through=False, temperature=1.0, temperature_min=0.5, anneal_rate=1e-3):
        self.temperature = check_float("temperature", temperature, low=0.0, strict=True)
        self.temperature_min = check_float("temperature_min", temperature_min, low=0.0, strict=True)
        if self.temperature_min > self.temperature:
            raise PPVAEError(f"temperature_min: expected at most temperature ({self.temperature:g}); "
                             f"got {self.temperature_min:g}")
        self.anneal_rate = check_float("anneal_rate", anneal_rate, low=0.0)
        self.name = "relaxed_st" if straight_through else "relaxed"
        self.cls = RelaxedCodeStraightThrough if straight_through else RelaxedCode
        self.elbo = LeanTraceMeanField_ELBO(num_particles=num_particles, vectorize_particles=vectorize_particles,
                                            max_plate_nesting=max_plate_nesting)
        self.step = 0  # gradient evaluations so far: the schedule's t

    def temperature_at(self, step: int) -> float:
        """tau_t = max(tau_min, tau_0 exp(-r t)) (Jang et al. 2017, sec. 4)."""
        return max(self.temperature_min, self.temperature * math.exp(-self.anneal_rate * step))

    def differentiable_loss(self, model, guide, *args, **kwargs):
        if torch.jit.is_tracing() and self.anneal_rate > 0:
            raise PPVAEError(f"jit: elbo '{self.name}' changes its temperature every step, which a traced graph "
                             "would freeze; use jit=False (or anneal_rate=0)")
        tau = self.temperature_at(self.step)
        if torch.is_grad_enabled():
            self.step += 1
        relax_guide = _Relax(self.name, tau, self.cls, None)
        relax_model = _Relax(self.name, tau, self.cls, relax_guide.relaxed)
        loss = self.elbo.differentiable_loss(relax_model(model), relax_guide(guide), *args, **kwargs)
        if not relax_guide.relaxed:
            raise PPVAEError(f"elbo '{self.name}': the guide samples no OneHotCategorical site to relax; it applies "
                             "to models with categorical codes, such as dvae")
        return loss

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))


class _Baselines(Messenger):
    """Sets ``infer["baseline"]`` of every discrete guide site: column j of ``values`` (one per site), or none."""

    def __init__(self, values: torch.Tensor | None):
        super().__init__()
        self.values, self.names = values, []

    def _pyro_sample(self, msg):
        if msg["is_observed"] or site_is_subsample(msg) or not msg["fn"].support.is_discrete:
            return
        infer = {k: v for k, v in msg["infer"].items() if k != "enumerate"}
        if self.values is not None and len(self.names) < self.values.shape[-1]:
            infer["baseline"] = {"baseline_value": self.values[..., len(self.names)]}
        msg["infer"] = infer
        self.names.append(msg["name"])

    def _pyro_post_sample(self, msg):
        # Pyro wants the baseline in the site's full batch shape, known only once the particle plate (an outer
        # messenger) has expanded the distribution; the trace holds this same infer dict
        baseline = msg["infer"].get("baseline")
        if baseline is not None:
            baseline["baseline_value"] = baseline["baseline_value"].expand(msg["fn"].batch_shape)


class ReinforceELBO:
    """``reinforce`` (module docstring): TraceGraph_ELBO with a neural baseline per discrete guide site."""

    def __init__(self, num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf"), *,
                 baseline="neural", baseline_hidden=100):
        self.baseline = check_choice("baseline", baseline, ("neural", "none"))
        self.baseline_hidden = check_int("baseline_hidden", baseline_hidden, low=1)
        self.elbo = TraceGraph_ELBO(num_particles=num_particles, vectorize_particles=vectorize_particles,
                                    max_plate_nesting=max_plate_nesting)
        self.net: nn.Module | None = None
        self.center = 0.0  # running mean of the per-point ELBO over past gradient evaluations

    def _baseline_values(self, guide, batch):
        if self.baseline == "none":
            return None
        x = batch.x.reshape(len(batch), -1)
        if self.net is None:  # one output per discrete guide site, counted on a blocked trace
            counter = _Baselines(None)
            with pyro.poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
                counter(guide)(batch)
            if not counter.names:
                raise PPVAEError("elbo 'reinforce': the guide samples no discrete site; use trace or meanfield")
            self.net = nn.Sequential(nn.Linear(x.shape[-1], self.baseline_hidden), nn.Tanh(),
                                     nn.Linear(self.baseline_hidden, len(counter.names))).to(x.device)
        residual = pyro.module("reinforce_baseline", self.net)(x.to(next(self.net.parameters()).dtype))
        return (batch.num_total / len(batch)) * (self.center + residual)

    def differentiable_loss(self, model, guide, batch):
        """-ELBO as the value; the score-function surrogate (plus the baseline loss) as the gradient."""
        values = self._baseline_values(guide, batch)
        elbo, surrogate = self.elbo._loss_and_surrogate_loss(model, _Baselines(values)(guide), (batch,), {})
        if torch.is_grad_enabled():  # the centre moves with the ELBO, from past steps only (no bias)
            per_point = float(elbo.detach()) / batch.num_total
            self.center = per_point if self.center == 0.0 else 0.9 * self.center + 0.1 * per_point
        if not torch.is_tensor(surrogate) or not surrogate.requires_grad:
            raise PPVAEError("elbo 'reinforce': the loss has no gradient (no parameters reach the guide's sites)")
        return surrogate + (-elbo - surrogate).detach()

    def loss(self, model, guide, batch) -> float:
        with torch.no_grad():
            return float(-self.elbo._loss_and_surrogate_loss(model, _Baselines(None)(guide), (batch,), {})[0])


@register_elbo("relaxed", "Gumbel-Softmax relaxation of OneHotCategorical codes, annealed temperature "
               "(Jang et al. 2017)", enumerates=True)
def _relaxed(num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf"), **options):
    return RelaxedELBO(num_particles, vectorize_particles, max_plate_nesting, straight_through=False, **options)


@register_elbo("relaxed_st", "straight-through Gumbel-Softmax: hard codes forward, relaxed gradients",
               enumerates=True)
def _relaxed_st(num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf"), **options):
    return RelaxedELBO(num_particles, vectorize_particles, max_plate_nesting, straight_through=True, **options)


@register_elbo("reinforce", "score-function gradients of discrete guide sites with a neural baseline "
               "(TraceGraph_ELBO)", enumerates=True)
def _reinforce(num_particles=1, vectorize_particles=False, max_plate_nesting=float("inf"), **options):
    return ReinforceELBO(num_particles, vectorize_particles, max_plate_nesting, **options)
