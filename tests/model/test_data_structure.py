"""Model.data_structure: what a model's rows are decides what the engine traces, what is global and what a
pointwise log-likelihood is (ppvae/model/structure.py, ppvae/model/enumeration.py).

* A sequence model reading its length in ``setup`` is traced on all its rows (issue 29: the structure probe of two
  rows raised "index 0 is out of bounds" in fit and mcmc).
* A model without a data plate has one likelihood term: its pointwise vector is (log p(x | G), 0, ..., 0), checked
  against the AR(1) likelihood in closed form.
* A "groups" model's effects are globals, and its pointwise term is log p(y_j | effect_j, G) without their prior.
* A model that does not broadcast over draws is evaluated draw by draw, with the same numbers and one warning.
"""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae.model.enumeration import enumerated_log_likelihood, has_rows

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


class _AR1(ppvae.Model):
    """x_t ~ N(rho x_{t-1}, 1), t = 2..T, rho ~ U(-1, 1): one sequence, its length read in setup, x indexed by t."""

    data_structure = "sequence"

    def setup(self, data):
        super().setup(data)
        self.T = len(data)

    def forward(self, batch):
        rho = pyro.sample("rho", dist.Uniform(batch.x.new_tensor(-1.0), 1.0))
        x = batch.x[:, 0]
        for t in range(1, self.T):
            pyro.sample(f"x_{t}", dist.Normal(rho * x[t - 1], 1.0), obs=x[t])


def _ar1_data(T=12):
    g = torch.Generator().manual_seed(0)
    x = [0.0]
    for _ in range(T - 1):
        x.append(0.6 * x[-1] + float(torch.randn(1, generator=g)))
    return ppvae.Dataset(torch.tensor(x)[:, None], name="ar1")


def _ar1_loglik(rho, x):
    return float(dist.Normal(rho * x[:-1], 1.0).log_prob(x[1:]).sum())


def test_a_sequence_read_by_its_length_is_traced_on_all_its_rows_and_fits():
    data, model = _ar1_data(), _AR1()
    model.setup(data)
    s = model.structure(data)  # the probe of two rows raised IndexError here
    assert s.kind == "sequence" and s.global_sites == ("rho",) and s.data_plate_dim is None
    assert not has_rows(model)
    fit = ppvae.fit(_AR1(), data, guide="auto_normal", steps=3, progress=False, check_convergence=False)
    assert set(fit.global_values(data)) == {"rho"}


def test_a_record_has_one_likelihood_term_on_its_first_row():
    data, model = _ar1_data(), _AR1()
    model.setup(data)
    x = data.x[:, 0]
    lp = enumerated_log_likelihood(model, data.batch(), {"rho": torch.tensor(0.3)})
    assert lp.shape == (12,) and torch.all(lp[1:] == 0)
    assert math.isclose(float(lp[0]), _ar1_loglik(0.3, x), rel_tol=1e-5)
    rhos = torch.tensor([-0.5, 0.1, 0.7])
    lp = enumerated_log_likelihood(model, data.batch(), {"rho": rhos}, num_draws=3)
    assert lp.shape == (3, 12) and torch.all(lp[:, 1:] == 0)
    for s, r in enumerate(rhos.tolist()):
        assert math.isclose(float(lp[s, 0]), _ar1_loglik(r, x), rel_tol=1e-5)


def test_an_unknown_data_structure_is_refused_when_the_class_is_made():
    with pytest.raises(TypeError, match=r"_Bad.data_structure: expected one of points, groups, sequence, record; "
                                        r"got 'rows'"):
        class _Bad(ppvae.Model):
            data_structure = "rows"

            def forward(self, batch):
                pass


def test_group_effects_are_globals_and_left_out_of_the_pointwise_likelihood():
    schools = ppvae.import_model(str(ROOT / "examples" / "eight_schools.py:EightSchools"))
    data = ppvae.load_dataset(str(ROOT / "examples" / "data" / "schools.csv"))
    model = schools()
    model.setup(data)
    s = model.structure(data)
    assert s.global_sites == ("mu", "tau", "eta") and s.group_sites == ("eta",) and not s.continuous_local_sites
    eta = torch.linspace(-1, 1, 8)
    lp = enumerated_log_likelihood(model, data.batch(), {"mu": torch.tensor(2.0), "tau": torch.tensor(3.0),
                                                         "eta": eta})
    want = dist.Normal(2.0 + 3.0 * eta, data.x[:, 1]).log_prob(data.x[:, 0])  # y_j | eta_j only, no N(0, 1) prior
    torch.testing.assert_close(lp, want)


class _NoBroadcast(ppvae.Model):
    """mu[0] indexes the event dimension from the left: fails once mu carries a leading dimension of draws."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal(torch.stack([mu[0], mu[1]], -1), 1.0).to_event(1), obs=batch.x)


def test_a_model_that_does_not_broadcast_is_evaluated_draw_by_draw_and_says_so_once():
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1))
    model, mu = _NoBroadcast(), torch.randn(3, 2, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match=r"model '_NoBroadcast': its forward does not broadcast .* draw by draw"):
        lp = enumerated_log_likelihood(model, ppvae.Dataset(x).batch(), {"mu": mu}, num_draws=3)
    want = torch.stack([dist.Normal(m, 1.0).log_prob(x).sum(-1) for m in mu])
    torch.testing.assert_close(lp, want)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per model
        enumerated_log_likelihood(model, ppvae.Dataset(x).batch(), {"mu": mu}, num_draws=3)


def test_minibatches_of_a_sequence_are_refused():
    with pytest.raises(ppvae.PPVAEError, match=r"batch_size: model '_AR1' declares data_structure 'sequence' "
                                               r"\(not i.i.d. points\) and fits on all its rows; got 4"):
        ppvae.fit(_AR1(), _ar1_data(), guide="auto_normal", steps=2, batch_size=4, progress=False)
