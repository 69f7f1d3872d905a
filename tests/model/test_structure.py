"""ModelStructure (ppvae/_structure.py) and the one pointwise log-likelihood (ppvae.model.enumeration).

The structure of the zoo models is checked against what their generative stories say, by hand; the
pointwise log-likelihood against a brute-force sum over every joint assignment of the discrete latents."""

import itertools
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.ops.indexing import Vindex

import ppvae
from ppvae.comparison.inference_data import pointwise_log_likelihood
from ppvae.infer.importance import data_log_likelihood
from ppvae.model.base import Model, is_local, latent_sites
from ppvae.model.enumeration import enumerated_log_likelihood
from ppvae.model.structure import ModelStructure, structure_of
from ppvae.models import GMM, LDA, VAE, ProdLDA

DOCS = torch.tensor([[2.0, 1, 0], [0, 1, 3], [1, 1, 1], [4, 0, 0]])


def _sites(st: ModelStructure) -> dict:
    return {"global": st.global_sites, "continuous": st.continuous_local_sites, "discrete": st.discrete_local_sites,
            "observed": st.observed_sites, "deterministic": st.deterministic_sites,
            "mpn": st.max_plate_nesting, "data_dim": st.data_plate_dim}


def test_gmm_structure():
    x = ppvae.Dataset(torch.randn(7, 2, generator=torch.Generator().manual_seed(0)))
    diag, full = GMM(K=3, covariance="diag"), GMM(K=3)
    diag.setup(x)
    full.setup(x)
    st = diag.structure(x)
    assert _sites(st) == {"global": ("weights", "locs", "scales"), "continuous": (), "discrete": ("z",),
                          "observed": ("obs",), "deterministic": (), "mpn": 1, "data_dim": -1}
    assert st.global_shapes == {"weights": (3,), "locs": (3, 2), "scales": (3, 2)}
    assert full.structure(x).global_sites == ("weights", "locs", "scales", "corr")
    assert full.structure(x).global_shapes["corr"] == (3, 2, 2)
    assert st.event_shapes["locs"] == (3, 2) and st.event_shapes["z"] == ()
    assert st.supports["z"].is_discrete and not st.supports["weights"].is_discrete
    assert st.discrete_sites == ("z",) and st.local_sites == ("z",)


def test_vae_structure():
    data = ppvae.Dataset((torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) < 0.5).float(), kind="binary")
    model = VAE(latent_dim=2, hidden=4, depth=1)
    model.setup(data)
    st = model.structure(data)
    assert _sites(st) == {"global": (), "continuous": ("z",), "discrete": (), "observed": ("x",),
                          "deterministic": (), "mpn": 1, "data_dim": -1}
    assert st.event_shapes["z"] == (2,)


def test_lda_and_prodlda_structure():
    ds = ppvae.Dataset(DOCS, kind="counts", meta={"vocab": ["a", "b", "c"]})
    lda = LDA(topics=2, alpha=0.3, eta=0.1, hidden=4)
    lda.setup(ds)
    assert _sites(lda.structure(ds)) == {"global": ("topic_words",), "continuous": ("doc_topics",), "discrete": (),
                                         "observed": ("obs",), "deterministic": (), "mpn": 1, "data_dim": -1}
    assert lda.structure(ds).global_shapes == {"topic_words": (2, 3)}
    prod = ProdLDA(topics=2, alpha=1.0, hidden=8)
    prod.setup(ds)
    assert _sites(prod.structure(ds)) == {"global": (), "continuous": ("logtheta",), "discrete": (),
                                          "observed": ("obs",), "deterministic": (), "mpn": 1, "data_dim": -1}


class Nested(Model):
    """A user's model: a global scalar and a global per-feature scale, the data plate at dim -2 with a
    discrete and a continuous local, a feature plate nested inside it, a deterministic site."""

    def forward(self, batch):
        M, D = batch.x.shape
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("features", D, dim=-1):
            tau = pyro.sample("tau", dist.HalfNormal(1.0))
        with self.data_plate(batch, dim=-2):
            c = pyro.sample("c", dist.Bernoulli(0.3))
            u = pyro.sample("u", dist.Normal(0.0, 1.0))
            with pyro.plate("features_in", D, dim=-1):
                loc = pyro.deterministic("loc", mu + c + u)
                pyro.sample("obs", dist.Normal(loc, tau), obs=batch.x)


def test_user_model_with_a_deterministic_site_and_a_nested_plate():
    st = Nested().structure(torch.randn(4, 3))
    assert _sites(st) == {"global": ("mu", "tau"), "continuous": ("u",), "discrete": ("c",), "observed": ("obs",),
                          "deterministic": ("loc",), "mpn": 2, "data_dim": -2}
    assert st.global_shapes == {"mu": (), "tau": (3,)}
    assert st.latent_sites == ("mu", "tau", "u", "c")


def test_is_local_and_latent_sites_stay_public():
    model = Nested()
    trace = model.trace(ppvae.Batch(torch.randn(4, 3)))
    assert [n for n, s in latent_sites(trace).items() if is_local(s)] == ["c", "u"]
    assert ppvae.model.base.is_local is ppvae.model.structure.is_local
    assert model.max_plate_nesting(ppvae.Batch(torch.randn(4, 3))) == 2
    assert model.discrete_latent_sites(ppvae.Batch(torch.randn(4, 3))) == ["c"]


def test_structure_is_computed_once_per_key(monkeypatch):
    calls = []
    real = Model.trace
    monkeypatch.setattr(Model, "trace", lambda self, batch: calls.append(len(batch)) or real(self, batch))
    model = GMM(K=2)
    x = torch.randn(50, 2)
    model.setup(ppvae.Dataset(x))
    first = model.structure(x)
    assert model.structure(ppvae.Dataset(x)) is first
    assert model.structure(x[:9]) is first  # only the number of points differs: the same key
    assert model.max_plate_nesting(ppvae.Batch(x)) == 1 and model.discrete_latent_sites(ppvae.Batch(x)) == ["z"]
    assert calls == [2]  # one trace, on the probe's two points
    model.structure(x.double())  # a different dtype: traced again
    assert calls == [2, 2]
    model.setup(ppvae.Dataset(x))  # setup may change the model: the cache is cleared
    assert model.structure(x) is not first and calls == [2, 2, 2]


def test_structure_leaves_the_random_state_alone():
    torch.manual_seed(3)
    x = torch.randn(4, 2)
    model = GMM(K=2)
    model.setup(ppvae.Dataset(x))
    state = torch.get_rng_state()
    model.structure(x)
    structure_of(lambda b: pyro.sample("w", dist.Normal(0.0, 1.0)), x)
    assert torch.equal(torch.get_rng_state(), state)


# -- the one pointwise log-likelihood ---------------------------------------------------------------
class TwoLatents(Model):
    """Per point two discrete latents, a ~ Categorical(w) and b ~ Bernoulli(p_a); x ~ N(loc_a + shift_b, s)."""

    def forward(self, batch):
        w = pyro.sample("w", dist.Dirichlet(batch.x.new_ones(3)))
        loc = pyro.sample("loc", dist.Normal(batch.x.new_zeros(3), 2.0).to_event(1))
        p = pyro.sample("p", dist.Beta(batch.x.new_ones(3), 1.0).to_event(1))
        with self.data_plate(batch):
            a = pyro.sample("a", dist.Categorical(w))
            b = pyro.sample("b", dist.Bernoulli(Vindex(p)[..., a]))
            pyro.sample("x", dist.Normal(Vindex(loc)[..., a] + 1.5 * b, 0.7), obs=batch.x.reshape(len(batch)))


GLOBALS = {"w": torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
           "loc": torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64),
           "p": torch.tensor([0.1, 0.6, 0.9], dtype=torch.float64)}
X = torch.tensor([-1.2, 0.3, 2.6, 1.0, 0.0], dtype=torch.float64)


def _brute_force(x, g) -> torch.Tensor:
    out = []
    for xi in x.tolist():
        terms = []
        for a, b in itertools.product(range(3), range(2)):
            p_b = g["p"][a] if b else 1 - g["p"][a]
            terms.append(math.log(g["w"][a]) + math.log(p_b)
                         + float(dist.Normal(g["loc"][a] + 1.5 * b, 0.7).log_prob(torch.tensor(xi))))
        out.append(torch.logsumexp(torch.tensor(terms, dtype=torch.float64), 0))
    return torch.stack(out)


def test_pointwise_log_likelihood_equals_the_brute_force_sum():
    model, batch = TwoLatents(), ppvae.Batch(X)
    expected = _brute_force(X, GLOBALS)
    got = enumerated_log_likelihood(model, batch, GLOBALS)
    assert got.shape == (5,)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert expected.tolist() == pytest.approx([-2.2533, -1.9071, -1.6146, -1.7902, -1.9856], abs=1e-3)


def test_pointwise_log_likelihood_over_draws_and_its_consumers():
    """S draws at once equal S single evaluations; ArviZ's pointwise likelihood and importance sampling's
    data log-likelihood are the same function."""
    model, batch = TwoLatents(), ppvae.Batch(X)
    g2 = {"w": torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64), "loc": torch.tensor([0.0, 1.0, -2.0]).double(),
          "p": torch.tensor([0.5, 0.5, 0.2], dtype=torch.float64)}
    draws = {k: torch.stack([GLOBALS[k], g2[k], GLOBALS[k]]) for k in GLOBALS}
    expected = torch.stack([_brute_force(X, GLOBALS), _brute_force(X, g2), _brute_force(X, GLOBALS)])
    torch.testing.assert_close(enumerated_log_likelihood(model, batch, draws, num_draws=3), expected, rtol=0,
                               atol=1e-6)
    torch.testing.assert_close(enumerated_log_likelihood(model, batch, {k: v[:1] for k, v in draws.items()},
                                                         num_draws=1), expected[:1], rtol=0, atol=1e-6)
    torch.testing.assert_close(pointwise_log_likelihood(model, ppvae.Dataset(X), draws, chunk_size=2), expected,
                               rtol=0, atol=1e-6)
    lp, _ = data_log_likelihood(model, batch, 3, 1, {k: v.unsqueeze(-2) for k, v in draws.items()})
    torch.testing.assert_close(lp, expected, rtol=0, atol=1e-6)


def test_pointwise_log_likelihood_refuses_continuous_locals():
    with pytest.raises(ppvae.PPVAEError, match=r"continuous local latents \(u\)"):
        enumerated_log_likelihood(Nested(), ppvae.Batch(torch.randn(4, 3)), {"mu": torch.tensor(0.0),
                                                                            "tau": torch.ones(3)})
