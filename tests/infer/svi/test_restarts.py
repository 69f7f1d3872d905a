"""Good starts for point estimates of models with exchangeable components (issue 29, item 4).

A start where every component is equal (weights 1/K each, equal rows) is an exact saddle of a mixture's symmetric
objective: the components get equal gradients and stay equal, and a MAP fit ends at class proportions 1/K each.
``init_off_saddle`` never starts there; ``fit(restarts=N)`` keeps the best final ELBO of N starts.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide.initialization import init_to_median
from pyro.ops.indexing import Vindex

import ppvae
from ppvae.infer.svi.guides import init_off_saddle

C, J, N = 4, 3, 120  # classes, annotators, items
PI = torch.tensor([0.4, 0.3, 0.2, 0.1])


def _site(fn, plates=()):
    return {"type": "sample", "name": "w", "fn": fn, "is_observed": False, "value": None, "infer": {},
            "cond_indep_stack": plates}


def test_a_tied_simplex_start_is_broken():
    """Pyro's init_to_median starts every Dirichlet at the uniform simplex (the median of a multivariate
    distribution is undefined: init_to_feasible), the exact symmetric point; init_off_saddle does not."""
    pyro.set_rng_seed(0)
    site = _site(dist.Dirichlet(torch.ones(C)))
    assert torch.equal(init_to_median(site), torch.full((C,), 1.0 / C))
    value = init_off_saddle(site)
    assert torch.allclose(value.sum(), torch.tensor(1.0)) and (value > 0).all()
    assert (value - 1.0 / C).abs().max() > 1e-3


def test_a_sparse_dirichlet_start_is_jittered_not_drawn():
    """A Dirichlet(0.1) prior draw sits near a vertex (LDA's topics: the planted topics were not recovered from
    it); the start is the uniform simplex jittered by exp(0.3 e), off the saddle and well inside."""
    pyro.set_rng_seed(0)
    value = init_off_saddle(_site(dist.Dirichlet(torch.full((50,), 0.1))))
    assert torch.allclose(value.sum(), torch.tensor(1.0)) and (value - 1 / 50).abs().max() > 1e-4
    assert value.min() > 0.2 / 50 and value.max() < 5 / 50  # exp(0.3 e) within (0.2, 5) for |e| < 5


def test_untied_starts_are_pyros_median_as_before():
    normal = _site(dist.Normal(torch.zeros(3), 1.0).to_event(1))
    pyro.set_rng_seed(1)
    expected = init_to_median(normal)
    pyro.set_rng_seed(1)
    assert torch.equal(init_off_saddle(normal), expected)


def simulate(seed: int = 0):
    """Items' true classes c ~ Categorical(PI); each annotator reports the true class with probability 0.7, each
    other class with 0.1."""
    g = torch.Generator().manual_seed(seed)
    confusion = torch.full((C, C), 0.1) + 0.6 * torch.eye(C)
    c = torch.multinomial(PI, N, replacement=True, generator=g)
    y = torch.stack([torch.multinomial(confusion[c], 1, generator=g)[:, 0] for _ in range(J)], -1)
    return c, y.float()


class DawidSkene(ppvae.Model):
    """Crowd annotation (Dawid & Skene 1979; NumPyro's annotation example): class proportions pi, a confusion
    matrix beta[j, c] per annotator and true class, the items' true classes enumerated."""

    def forward(self, batch):
        y = batch.x.long()
        with pyro.plate("annotator", J, dim=-2), pyro.plate("class", C, dim=-1):
            beta = pyro.sample("beta", dist.Dirichlet(batch.x.new_ones(C)))
        pi = pyro.sample("pi", dist.Dirichlet(batch.x.new_ones(C)))
        with self.data_plate(batch):
            c = pyro.sample("c", dist.Categorical(pi))
            for j in range(J):
                pyro.sample(f"y{j}", dist.Categorical(Vindex(beta)[..., j, c, :]), obs=y[:, j])


@pytest.mark.slow
@pytest.mark.parametrize("jit", [False, True], ids=["potential-path", "pyro-path"])
def test_dawid_skene_map_from_the_default_start_recovers_the_class_proportions(jit):
    """On Pyro's path (jit=True) the default start was the saddle and the fit ended at pi = 0.25 exactly (measured
    before init_off_saddle: tensor([0.25, 0.25, 0.25, 0.25]))."""
    c, y = simulate()
    fit = ppvae.fit(DawidSkene(), y, guide="auto_delta", steps=300, lr=0.05, restarts=3, progress=False, seed=0,
                    jit=jit)
    assert fit.info["svi_path"] == ("pyro" if jit else "potential")
    point = fit.guide.median()
    pi, beta = point["pi"], point["beta"]
    assert not torch.allclose(pi, torch.full((C,), 0.25), atol=1e-3)  # not at the symmetric saddle
    restarts = fit.info["restarts"]
    assert restarts["seeds"] == [0, 1, 2] and len(restarts["final_losses"]) == 3
    assert restarts["final_losses"][restarts["kept_seed"]] == min(restarts["final_losses"])
    # the fitted classes are a relabelling of the true ones: class k of the fit is the reported label its
    # annotators give most often (diagonal-dominant confusion); proportions compared in the true labels
    label_of = beta.mean(0).argmax(-1)
    assert sorted(label_of.tolist()) == list(range(C)), label_of
    fitted = torch.zeros(C).index_add_(0, label_of, pi)
    simulated = torch.bincount(c, minlength=C).float() / N
    # tolerance 0.1 per class: the MAP of pi differs from the simulated labels' proportions by the labels' own
    # uncertainty (3 annotators at 70% accuracy, 120 items: about 0.045 sd per class), 0.1 is over 2 sd
    assert torch.allclose(fitted, simulated, atol=0.1), (fitted, simulated)
