"""The evidence of a mixture whose posterior is symmetric in its labels (issue 29, item 3).

The Pyro GMM tutorial's 1-D mixture: data [0, 1, 10, 11, 12], K = 2, weights ~ Dirichlet(0.5, 0.5),
scale ~ LogNormal(0, 2), locs ~ Normal(0, 10) iid, assignment ~ Categorical(weights), obs ~ Normal(locs[z], scale).
Its exact evidence: the 2^5 assignments enumerated; given z the weights integrate in closed form
(Dirichlet-multinomial) and, given the scale, the locations too (x_k ~ N(0, s^2 I + 10^2 11^T) per component);
what is left is a 1-D integral over t = log s ~ N(0, 2^2), done on a fine float64 grid (and checked by
scipy.integrate.quad). Issue 29 measured -17.127 by 4-D quadrature and ppvae's IS -18.022 +- 0.010: log 2! low.
"""

import itertools
import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex
from scipy import integrate
from scipy.special import gammaln

import ppvae
from ppvae.evaluate.joint import log_density, potential_for
from ppvae.evaluate.symmetry import label_symmetry, relabel, symmetrized_log_density

DATA = torch.tensor([0.0, 1.0, 10.0, 11.0, 12.0])
ALPHA, LOC_SD, LOG_SCALE_SD = 0.5, 10.0, 2.0


class TutorialMixture(ppvae.Model, ppvae.Mixture):
    """The tutorial's model; ``locs.unsqueeze(-2)`` so that the index broadcasts over vectorized draws."""

    def num_components(self):
        return 2

    def init_values(self, data, generator):  # data-based starts: the components at the extremes of the data
        x = data.x[:, 0]
        return {"locs": torch.stack([x.min(), x.max()])}

    def forward(self, batch):
        weights = pyro.sample("weights", dist.Dirichlet(batch.x.new_full((2,), ALPHA)))
        scale = pyro.sample("scale", dist.LogNormal(batch.x.new_zeros(()), LOG_SCALE_SD))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(batch.x.new_zeros(()), LOC_SD))
        with self.data_plate(batch):
            z = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(Vindex(locs.unsqueeze(-2))[..., z], scale), obs=batch.x[..., 0])


def _log_evidence_given_z(x: np.ndarray, z: np.ndarray, t: np.ndarray, K: int = 2) -> np.ndarray:
    """log p(z) + log p(x | z, s = e^t), the weights and locations integrated out, at every t."""
    n = np.bincount(z, minlength=K)
    out = gammaln(K * ALPHA) - gammaln(K * ALPHA + len(x)) + (gammaln(ALPHA + n) - gammaln(ALPHA)).sum()
    s2 = np.exp(2 * t)
    for k in range(K):
        xk = x[z == k]
        m = len(xk)
        if m:  # N(0, s^2 I + LOC_SD^2 11^T): determinant and quadratic form by Sherman-Morrison
            logdet = m * np.log(s2) + np.log1p(m * LOC_SD ** 2 / s2)
            quad = (xk ** 2).sum() / s2 - LOC_SD ** 2 * xk.sum() ** 2 / (s2 * (s2 + m * LOC_SD ** 2))
            out = out - 0.5 * (m * math.log(2 * math.pi) + logdet + quad)
    return out


def _log_integrand(t):
    x = DATA.double().numpy()
    terms = [_log_evidence_given_z(x, np.array(z), np.atleast_1d(t)) for z in itertools.product(range(2), repeat=5)]
    prior = -0.5 * (np.atleast_1d(t) / LOG_SCALE_SD) ** 2 - math.log(LOG_SCALE_SD * math.sqrt(2 * math.pi))
    return np.logaddexp.reduce(np.stack(terms), 0) + prior


def exact_log_evidence() -> float:
    t = np.linspace(-14.0, 14.0, 56_001)
    f = _log_integrand(t)
    top = f.max()
    return float(top + math.log(np.trapezoid(np.exp(f - top), t)))


def test_exact_evidence_by_grid_and_quad_agree_with_the_issue():
    grid = exact_log_evidence()
    top = float(_log_integrand(np.array([0.0]))[0])
    quad, _ = integrate.quad(lambda t: math.exp(float(_log_integrand(np.array([t]))[0]) - top), -14, 14, limit=200,
                             points=[-2.0, -0.5, 0.0, 1.0])
    assert grid == pytest.approx(top + math.log(quad), abs=1e-6)
    assert grid == pytest.approx(-17.127, abs=0.005)  # the issue's 4-D quadrature


def test_relabelling_on_the_unconstrained_space_is_an_involution_with_opposite_jacobians():
    model, x = TutorialMixture(), DATA[:, None]
    potential = potential_for(model, ppvae.Dataset(x))
    sym = label_symmetry(model, {n: s["value"] for n, s in potential.sites.items()})
    assert sym.num_components == 2 and set(sym.sites) == {"weights", "locs"} and len(sym.permutations) == 2
    dim = potential.flatten({n: torch.zeros(potential.shapes[n]) for n in potential.names}).shape[-1]
    u = torch.randn(7, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    swap = sym.permutations[1]
    once, jac1 = relabel(potential, u, sym, swap)
    twice, jac2 = relabel(potential, once, sym, swap)
    torch.testing.assert_close(twice, u)
    torch.testing.assert_close(jac1 + jac2, torch.zeros(7, dtype=torch.float64))
    # the log joint on the unconstrained space is invariant: pi(sigma u) |J| = pi(u)
    torch.testing.assert_close(log_density(potential, once.float()).double() + jac1,
                               log_density(potential, u.float()).double(), atol=1e-3, rtol=1e-5)
    # a density already symmetric is left as it is
    g = torch.distributions.MultivariateNormal(torch.zeros(u.shape[-1], dtype=torch.float64),
                                               torch.eye(u.shape[-1], dtype=torch.float64))
    sym_g = symmetrized_log_density(g.log_prob, potential, u, sym)
    assert torch.isfinite(sym_g).all()


@pytest.fixture(scope="module")
def tutorial_fits():
    model, x = TutorialMixture(), DATA[:, None]
    fit = ppvae.fit(model, x, guide="auto_normal", steps=800, lr=0.05, progress=False, seed=0)
    mcmc = ppvae.run_mcmc(model, x, num_draws=300, warmup=200, num_chains=2, seed=0, progress=False, cores=1)
    return model, x, fit, mcmc


@pytest.mark.slow
def test_every_evidence_method_is_within_3_se_of_the_exact_value(tutorial_fits):
    _, x, fit, mcmc = tutorial_fits
    exact = exact_log_evidence()
    results = {
        "is (prior)": ppvae.log_evidence(fit, x, num_particles=200_000, proposal="prior", seed=0),
        "ais (guide)": ppvae.log_evidence(fit, x, method="ais", num_steps=200, num_chains=64, seed=0),
        "ais (mcmc)": ppvae.log_evidence(mcmc, x, method="ais", num_steps=200, num_chains=64, seed=0),
        "bridge": ppvae.log_evidence(mcmc, x, method="bridge", seed=0),
    }
    for name, ev in results.items():
        assert "label_symmetry" in ev.info, name
        assert abs(ev.value - exact) < 3 * ev.stderr + 1e-3, (name, ev.value, ev.stderr, exact)


@pytest.mark.slow
def test_is_from_a_guide_on_one_labelling_adds_log_2(tutorial_fits):
    """Without the defensive mixture (``defensive=0``) the mean-field guide sits on one labelling: its relabelled
    copy does not overlap it, so exactly log 2! is added, the whole of the issue's symmetry error (-18.022 +- 0.010
    there). What remains, about 0.2 nats, is posterior mass no unimodal guide covers (all five points in one
    component: 7% of the posterior, the second location then free under its N(0, 10^2) prior); the weights' k-hat
    (0.42) cannot see mass the proposal never reaches: measured 18 SE low (seed 0)."""
    _, x, fit, _ = tutorial_fits
    exact = exact_log_evidence()
    ev = ppvae.log_evidence(fit, x, num_particles=20_000, seed=0, defensive=0)
    info = ev.info["label_symmetry"]
    assert "defensive" not in ev.info
    assert info["overlap_share"] < 0.01 and info["misses_labellings"] and "one labelling" in info["proposal_covers"]
    assert info["correction"] == pytest.approx(math.log(2), abs=0.01)
    assert info["value_one_labelling"] == pytest.approx(-18.02, abs=0.05)  # the issue's number
    assert -0.3 < ev.value - exact < -0.1  # measured -0.205 (seed 0): the mass outside the guide


@pytest.mark.slow
def test_is_from_a_guide_with_the_defensive_mixture_is_within_3_se(tutorial_fits):
    """The default on a Mixture: r = 0.9 q_sym + 0.1 p (Hesterberg 1995; Owen & Zhou 2000); the prior's draws reach
    the one-component mass the guide misses. Measured at S = 50,000: z = +1.31 (seed 0), +0.82 (1), +0.01 (2),
    k-hat 0.58-0.61; the guide's own draws alone (`defensive=0`) -17.271 +- 0.031, z = -4.7."""
    _, x, fit, _ = tutorial_fits
    exact = exact_log_evidence()
    ev = ppvae.log_evidence(fit, x, num_particles=50_000, seed=0)
    d = ev.info["defensive"]
    assert d["share"] == 0.1 and d["num_prior_draws"] == 5_000 and d["num_guide_draws"] == 45_000
    assert d["khat"] == ev.khat < 0.7
    assert "one labelling" in ev.info["label_symmetry"]["proposal_covers"]
    assert abs(ev.value - exact) < 3 * ev.stderr, (ev.value, ev.stderr, exact)
    assert d["value_guide_alone"] < exact - 0.1  # the guide's own draws still miss that mass


def test_defensive_is_checked():
    fit, x = TutorialMixture(), DATA[:, None]  # checked at the boundary, before the model is touched
    for bad in (1.0, -0.1, "a"):
        with pytest.raises(ppvae.PPVAEError, match=r"^defensive: expected"):
            ppvae.log_evidence(fit, x, num_particles=10, defensive=bad)
    with pytest.raises(ppvae.PPVAEError, match=r"^defensive: a defensive mixture proposal is for method='is'"):
        ppvae.log_evidence(fit, x, method="ais", defensive=0.1)


# -- components found in a model that does not declare ppvae.Mixture ----------------------------------------------
class UndeclaredMixture(ppvae.Model):
    """The tutorial's model without the Mixture capability; ``loc_shift`` moves the second component's prior."""

    def __init__(self, loc_shift: float = 0.0):
        super().__init__()
        self.loc_shift = loc_shift

    def init_values(self, data, generator):  # the tutorial model's start: a fit in one labelling, not between them
        x = data.x[:, 0]
        return {"locs": torch.stack([x.min(), x.max()])}

    def forward(self, batch):
        weights = pyro.sample("weights", dist.Dirichlet(batch.x.new_full((2,), ALPHA)))
        scale = pyro.sample("scale", dist.LogNormal(batch.x.new_zeros(()), LOG_SCALE_SD))
        with pyro.plate("components", 2):
            locs = pyro.sample("locs", dist.Normal(batch.x.new_tensor([0.0, self.loc_shift]), LOC_SD))
        with self.data_plate(batch):
            z = pyro.sample("assignment", dist.Categorical(weights))
            pyro.sample("obs", dist.Normal(Vindex(locs.unsqueeze(-2))[..., z], scale), obs=batch.x[..., 0])


def test_exchangeable_components_are_found_without_the_capability_and_only_when_exchangeable():
    from ppvae.evaluate.symmetry import detect_label_symmetry

    data = ppvae.Dataset(DATA[:, None])
    sym = detect_label_symmetry(UndeclaredMixture(), data)
    assert sym is not None and sym.num_components == 2 and sym.sites == {"locs": -1, "weights": -1}
    assert len(sym.permutations) == 2
    assert detect_label_symmetry(UndeclaredMixture(loc_shift=5.0), data) is None  # the priors tell them apart
    assert detect_label_symmetry(TutorialMixture(), data) is not None  # the same answer the capability gives


@pytest.mark.slow
def test_the_evidence_of_an_undeclared_mixture_is_within_3_se():
    """Found components get what the capability gives: the symmetrized proposal and the defensive default."""
    model, x = UndeclaredMixture(), DATA[:, None]
    fit = ppvae.fit(model, x, guide="auto_normal", steps=800, lr=0.05, progress=False, seed=0)
    ev = ppvae.log_evidence(fit, x, num_particles=50_000, seed=0)
    assert ev.info["defensive"]["share"] == pytest.approx(0.1)
    assert ev.info["label_symmetry"]["num_components"] == 2 and ev.khat < 0.7
    exact = exact_log_evidence()
    assert abs(ev.value - exact) < 3 * ev.stderr + 1e-3, (ev.value, ev.stderr, exact)
