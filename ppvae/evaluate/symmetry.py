"""A mixture's label symmetry in the evidence: every estimator's proposal covers all K! labellings.

A mixture with K exchangeable components (the :class:`ppvae.Mixture` capability, or components found by
:func:`detect_label_symmetry` in a model that does not declare it) has a posterior invariant
under the K! permutations sigma of its labels, p(sigma theta | X) = p(theta | X). A proposal q that sits on one
labelling (a fitted guide, a Gaussian fitted to the draws of chains that never switched) sees one of the K!
copies of the posterior and, when the copies are well separated, estimates p(X) / K!: low by log K! (0.69 for
K = 2, 1.79 for K = 3) with nothing in its k-hat or standard error to show it (issue 29: -18.02 +- 0.01 against
-17.13 on the Pyro tutorial's 1-D mixture).

The cure is to symmetrize the proposal (Frühwirth-Schnatter 2004, "Estimating marginal likelihoods for mixture
and Markov switching models using bridge sampling techniques", Econometrics J. 7, sec. 2.3 and 4; Lee, Marin,
Mengersen & Robert 2016, "Importance sampling schemes for evidence approximation in mixture models", Bayesian
Analysis 11, eq. 3),

    q_sym(theta) = (1/K!) sum_sigma q(sigma theta),

which covers every labelling, and to sample with it. For theta ~ q (p being symmetric, sigma theta ~ q_sym has the
same weight), the log-weight is

    log p(X, theta) - log q_sym(theta)
        = [log p(X, theta) - log q(theta)] + log K! - log sum_sigma q(sigma theta) / q(theta).

The last term is the proposal's overlap with its own relabellings at theta: 0 when q covers one labelling whose
copies are well separated (exactly log K! is then added), log K! when q is itself symmetric (the prior: nothing is
added), and the estimator stays exact (unbiased in p(X)) in between, where adding log K! would not. Bridge
sampling uses q_sym and relabels each posterior draw by a uniformly random permutation (the random permutation
sampler, Frühwirth-Schnatter 2001); AIS starts its chains from q_sym. On the unconstrained space of the samplers a
relabelling sigma acts as u -> T(sigma T^-1(u)), whose log-Jacobian enters q_sym (the simplex's stick-breaking
map is not permutation-equivariant).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoContinuous, AutoGuide, AutoNormal
from pyro.poutine.util import site_is_subsample

from ppvae._util.validation import PPVAEError, warn_at_caller
from ppvae.evaluate.joint import log_joint_at, potential_for
from ppvae.infer.importance import global_log_density, particle_plate
from ppvae.model.capabilities import Mixture
from ppvae.model.labels import component_sites, single_trace
from ppvae.model.structure import is_local, latent_sites

__all__ = ["LabelSymmetry", "label_symmetry", "detect_label_symmetry", "MAX_PERMUTATIONS", "guide_log_density",
           "symmetrized_log_density", "relabel", "relabel_randomly", "covered_labellings", "symmetry_of_potential"]

MAX_PERMUTATIONS = 720  # K <= 6: every permutation evaluated; a larger K gets a warning, no correction
CHECK_DRAWS = 3  # prior draws at which a candidate relabelling must leave the log joint unchanged
CHECK_RTOL = 1e-6
SEPARATED = 0.01  # mean overlap sum_{sigma != id} q(sigma theta) / q(theta) below this: q covers one labelling


@dataclass
class LabelSymmetry:
    """The K! relabellings of a mixture's component sites (site -> axis of the component dimension counted from
    the right, so that it holds for one draw and for a batch of draws alike)."""

    num_components: int
    sites: dict
    permutations: torch.Tensor  # (K!, K), the identity first

    @property
    def log_count(self) -> float:
        """log K!."""
        return math.lgamma(self.num_components + 1)

    def permute(self, values: dict, perm: torch.Tensor) -> dict:
        """``values`` (site -> (*draw dims, *site shape)) with the component axis of every component site
        reordered by ``perm`` (K,): one relabelling of every draw."""
        return {n: (v.index_select(v.dim() + self.sites[n], perm.to(v.device)) if n in self.sites else v)
                for n, v in values.items()}


def label_symmetry(model, values: dict, data=None) -> LabelSymmetry | None:
    """The label symmetry of ``model``'s posterior, from one draw's ``values`` (site -> value): a model that
    declares :class:`ppvae.Mixture` with K >= 2 and component sites; for any other model, when ``data`` (a Dataset,
    or the model's :class:`~ppvae.infer.mcmc.potential.Potential` on it) is given, the components that
    :func:`detect_label_symmetry` finds. None otherwise, and no permutations when K! exceeds :data:`MAX_PERMUTATIONS`
    (the caller warns)."""
    if not isinstance(model, Mixture):
        return None if data is None else detect_label_symmetry(model, data)
    sites = {n: a - values[n].dim() for n, a in component_sites(model, values).items() if n in values}
    return _symmetry(model.num_components(), sites)


def _symmetry(K, sites: dict) -> LabelSymmetry | None:
    if not sites or not isinstance(K, int) or K < 2:
        return None
    if math.factorial(K) > MAX_PERMUTATIONS:
        return LabelSymmetry(K, sites, torch.empty(0, K, dtype=torch.long))
    return LabelSymmetry(K, sites, torch.tensor(list(itertools.permutations(range(K))), dtype=torch.long))


def _candidates(sites: dict) -> dict[int, dict[str, int]]:
    """K -> {site: component axis from the right}: the continuous global sites inside a plate of size K >= 2 (other
    than the data plate; the plate's axis), then the K-simplex sites outside such a plate (the last axis); empty
    when a continuous site is local (its relabelling would not be a function of the globals alone)."""
    plated: dict[int, dict[str, int]] = {}
    simplexes = []
    for name, site in sites.items():
        if site["fn"].support.is_discrete:
            continue
        if is_local(site):
            return {}
        event_dim = len(site["fn"].event_shape)
        frames = [f for f in site["cond_indep_stack"] if f.size is not None and f.size >= 2 and f.dim is not None]
        for frame in frames[:1]:  # the innermost plate names the components
            plated.setdefault(frame.size, {})[name] = frame.dim - event_dim
        if not frames and site["fn"].support is torch.distributions.constraints.simplex:
            simplexes.append((int(site["value"].shape[-1]), name))
    for K, name in simplexes:
        if K in plated:
            plated[K][name] = -1
    return plated


def detect_label_symmetry(model, data) -> LabelSymmetry | None:
    """Exchangeable mixture components of a model that does not declare :class:`ppvae.Mixture`; None if none.

    Candidates (:func:`_candidates`): for each plate size K >= 2, the continuous global sites in that plate and the
    K-simplexes (the weights). They are exchangeable when relabelling them leaves the log joint with the discrete
    locals summed, log p(X, theta), unchanged. The symmetric group S_K is generated by the transposition (0 1) and
    the cycle (0 1 ... K-1), so that is checked for those two at :data:`CHECK_DRAWS` draws from the prior (relative
    tolerance :data:`CHECK_RTOL`; a prior draw breaks every accidental tie). ``data``: a Dataset or the model's
    Potential on it. A model whose potential cannot be built (discrete globals, ...) or that has continuous locals
    is not checked."""
    if not hasattr(data, "sites"):  # a Dataset: candidates from one trace first, the potential only if there are some
        if not _candidates(latent_sites(single_trace(model, data.batch()))):
            return None
        try:
            data = potential_for(model, data)
        except PPVAEError:
            return None
    potential = data
    for K, sites in sorted(_candidates(potential.sites).items()):
        if all(potential.sites[n]["fn"].support is torch.distributions.constraints.simplex for n in sites):
            continue  # weights alone do not make components
        with torch.random.fork_rng(), poutine.block(), pyro.validation_enabled(False):
            torch.manual_seed(0)
            draws = [poutine.trace(potential.fn).get_trace(potential.batch) for _ in range(CHECK_DRAWS)]
        values = {n: torch.stack([d.nodes[n]["value"] for d in draws]) for n in potential.sites}
        sym = LabelSymmetry(K, sites, torch.empty(0, K, dtype=torch.long))
        base = log_joint_at(potential, values, CHECK_DRAWS)
        generators = (torch.tensor([1, 0, *range(2, K)]), torch.tensor([*range(1, K), 0]))
        if all(torch.allclose(log_joint_at(potential, sym.permute(values, g), CHECK_DRAWS), base, rtol=CHECK_RTOL,
                              atol=CHECK_RTOL) for g in generators):
            return _symmetry(K, sites)
    return None


def guide_log_density(q, batch, values: dict, num: int, mpn: int, supports: dict) -> torch.Tensor | None:
    """log q(theta_s) (S,) of the guide ``q`` at given global values (site -> (S, *shape)), or None where the guide's
    density at arbitrary values is not known here. The guide is conditioned on the auxiliary sites its values
    come from: an AutoNormal on each site's unconstrained value, an AutoContinuous (auto_mvn, auto_lowrank_mvn,
    auto_iaf) on the packed unconstrained vector, a guide without auxiliary sites on the model's sites."""
    if isinstance(q, AutoNormal):
        data = {f"{n}_unconstrained": torch.distributions.biject_to(supports[n]).inv(v) for n, v in values.items()}
    elif isinstance(q, AutoContinuous):  # the packing of AutoContinuous._unpack_latent: sites in prototype order
        order = [n for n, _ in q.prototype_trace.iter_stochastic_nodes()]
        if set(order) != set(values):
            return None
        to_u = {n: torch.distributions.biject_to(supports[n]).inv for n in order}
        flat = torch.cat([to_u[n](values[n]).reshape(num, -1) for n in order], -1)
        data = {f"_{q._pyro_name}_latent": flat.reshape((num,) + (1,) * mpn + flat.shape[-1:])}
    elif isinstance(q, AutoGuide):
        return None
    else:
        data = dict(values)
    with particle_plate(num, mpn), poutine.block(), pyro.validation_enabled(False):
        trace = poutine.trace(poutine.condition(q, data=data)).get_trace(batch)
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)]
    if any(n not in data and n not in values for n in sites):  # a site the conditioning left free: a custom
        return None  # guide's auxiliary site, whose value is not a function of theta
    return global_log_density(trace, sites, num, mpn)


def covered_labellings(overlap: torch.Tensor, sym: LabelSymmetry) -> dict:
    """What the proposal covered, from the log overlap log sum_sigma q(sigma theta_s) / q(theta_s) (S,) at its
    draws: the mean share of the other K! - 1 labellings (0: one labelling, well separated; 1: symmetric) and
    the correction the symmetrized weights made, next to log K!."""
    count = math.factorial(sym.num_components)
    share = float(((overlap.exp() - 1) / (count - 1)).clamp(0, 1).mean())
    if share < SEPARATED:
        covers = "one labelling: its relabelled copies do not overlap it, so log K! is added"
    elif share > 1 - SEPARATED:
        covers = "every labelling (a symmetric proposal): nothing is added"
    else:
        covers = "some labellings, overlapping: the symmetrized weights correct by less than log K!"
    return {"num_components": sym.num_components, "sites": sorted(sym.sites), "log_k_factorial": sym.log_count,
            "overlap_share": share, "proposal_covers": covers, "misses_labellings": share < 1 - SEPARATED}


def symmetrized_log_density(log_g, potential, u: torch.Tensor, sym: LabelSymmetry) -> torch.Tensor:
    """log g_sym(u) = log (1/K!) sum_sigma g(sigma~ u) |det J_sigma~(u)| (S,) on the flat unconstrained space of
    ``potential``, for a density ``log_g`` there (a callable (S, D) -> (S,)); differentiable in ``u``."""
    terms = []
    for perm in sym.permutations:
        moved, log_jac = relabel(potential, u, sym, perm)
        terms.append(log_g(moved) + log_jac)
    return torch.logsumexp(torch.stack(terms), 0) - sym.log_count


def symmetry_of_potential(model, potential) -> LabelSymmetry | None:
    """The label symmetry of ``model`` on the unconstrained space of ``potential``; None when the draws were made in
    the ordered region (``order=``, whose log K! the estimators add themselves) or there is none to evaluate."""
    if potential.order is not None:
        return None
    sym = label_symmetry(model, {n: s["value"] for n, s in potential.sites.items()}, potential)
    if sym is not None and not len(sym.permutations):
        warn_at_caller(f"log_evidence: the posterior is symmetric in the {sym.num_components} mixture labels, but "
                       f"K! = {math.factorial(sym.num_components)} relabellings are too many to evaluate: if the "
                       f"draws cover one labelling the estimate is low by up to log K! = {sym.log_count:.3f}; run "
                       "the MCMC with order= (then log K! is added exactly)")
        return None
    return sym


def relabel_randomly(potential, u: torch.Tensor, sym: LabelSymmetry, generator: torch.Generator | None = None):
    """Each draw of ``u`` (S, D) relabelled by a uniformly random permutation (the random permutation sampler):
    draws of one labelling become draws of the symmetric density."""
    pick = torch.randint(len(sym.permutations), (u.shape[0],), generator=generator)
    out = u.clone()
    for i, perm in enumerate(sym.permutations):
        rows = (pick == i).nonzero().reshape(-1)
        if len(rows) and i:
            out[rows] = relabel(potential, u[rows], sym, perm)[0]
    return out


def relabel(potential, u: torch.Tensor, sym: LabelSymmetry, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma~ u, log |det J_sigma~(u)|): the flat unconstrained draws ``u`` (S, D) relabelled by ``perm``, through
    each component site's transform T (u = T(theta)): sigma~ u = T(sigma T^-1(u)), and its log-Jacobian
    log |dT^-1/du|(u) - log |dT^-1/du|(sigma~ u) (a permutation matrix has |det| = 1)."""
    params = potential.unflatten(u)
    log_jac = torch.zeros(u.shape[0], dtype=u.dtype, device=u.device)
    out = dict(params)
    for name, axis in sym.sites.items():
        if name not in params:
            continue
        t = potential.transforms[name]
        theta = t.inv(params[name])
        moved = t(theta.index_select(theta.dim() + axis, perm.to(u.device)))
        out[name] = moved
        before = t.inv.log_abs_det_jacobian(params[name], theta)
        after = t.inv.log_abs_det_jacobian(moved, t.inv(moved))
        log_jac = log_jac + (before.reshape(u.shape[0], -1).sum(-1) - after.reshape(u.shape[0], -1).sum(-1)).to(u.dtype)
    return potential.flatten(out).to(u.dtype), log_jac
