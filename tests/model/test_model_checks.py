"""Model structure checks at the training boundary and one-line errors from a model's own exception
(issue 13 items 12, 13)."""

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae
from ppvae import PPVAEError


class NoObs(ppvae.Model):
    def forward(self, batch):
        pyro.sample("mu", dist.Normal(0.0, 1.0))


class NoPlate(ppvae.Model):
    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        pyro.sample("obs", dist.Normal(mu, 1.0).expand([len(batch)]).to_event(1), obs=batch.x[:, 0])


class WithPlate(ppvae.Model):
    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=batch.x[:, 0])


class Raises(WithPlate):
    def forward(self, batch):
        raise KeyError("boom in the user's model")


class ShapeError(ppvae.Model):
    """Fails inside Pyro, whose message carries a multi-line 'Trace Shapes:' table."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("wrong", 5):  # 5 where the batch has 40 points
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=batch.x[:, 0])


@pytest.fixture
def data():
    return ppvae.Dataset(torch.randn(40, 2, generator=torch.Generator().manual_seed(0)))


def test_model_without_observed_site_is_refused(data):
    with pytest.raises(PPVAEError, match="no observed site"):
        ppvae.fit(NoObs(), data, guide="auto_normal", steps=2)


def test_minibatched_model_without_data_plate_warns_naming_the_plate(data):
    with pytest.warns(UserWarning, match=r"'obs' lie outside the data plate .* minibatches of 10 of 40 points"):
        ppvae.fit(NoPlate(), data, guide="auto_normal", steps=2, batch_size=10, progress=False)


def test_full_batch_or_plated_models_do_not_warn(data, recwarn):
    ppvae.fit(NoPlate(), data, guide="auto_normal", steps=2, progress=False)  # full batch: no scaling needed
    ppvae.fit(WithPlate(), data, guide="auto_normal", steps=2, batch_size=10, progress=False)
    assert not [w for w in recwarn if "data plate" in str(w.message)]


def test_a_model_that_raises_is_named_with_its_own_exception_in_one_line(data):
    fit = ppvae.fit(WithPlate(), data, guide="auto_normal", steps=2, progress=False)
    with pytest.raises(PPVAEError) as err:
        ppvae.log_marginal((Raises(), fit.guide), data, num_particles=4)
    msg = str(err.value)
    assert "KeyError" in msg and "boom in the user's model" in msg and "data:" not in msg
    assert "\n" not in msg
    with pytest.raises(PPVAEError) as err:
        ppvae.fit(Raises(), data, guide="auto_normal", steps=2)
    assert "KeyError" in str(err.value) and "\n" not in str(err.value)


def test_pyro_shape_errors_reach_the_user_without_the_trace_shapes_table(data):
    with pytest.raises(PPVAEError) as err:
        ppvae.fit(ShapeError(), data, guide="auto_normal", steps=2)
    msg = str(err.value)
    assert "Trace Shapes" in str(err.value.__cause__)  # what Pyro said, kept as the cause
    assert "\n" not in msg and "Trace Shapes" not in msg and "at site 'obs'" in msg and "broadcastable" in msg, msg


class MatmulRegression(ppvae.Model):
    """Bayesian linear regression written with X @ w: fits, but does not broadcast over draws of w."""

    def forward(self, batch):
        X, y = batch.x[:, :2], batch.x[:, 2]
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal(X @ w, 0.5), obs=y)


class BroadcastRegression(MatmulRegression):
    def forward(self, batch):
        X, y = batch.x[:, :2], batch.x[:, 2]
        w = pyro.sample("w", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal((X * w).sum(-1), 0.5), obs=y)


def _regression_data():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(30, 2, generator=g)
    y = X @ torch.tensor([1.0, -2.0]) + 0.5 * torch.randn(30, generator=g)
    return ppvae.Dataset(torch.cat([X, y[:, None]], 1)), X, y


def test_a_model_that_does_not_broadcast_over_draws_gets_the_rule_in_one_line():
    data, X, y = _regression_data()
    fit = ppvae.fit(MatmulRegression(), data, guide="auto_normal", steps=50, progress=False)
    with pytest.raises(PPVAEError) as err:
        ppvae.log_evidence(fit, data, num_particles=64)
    msg = str(err.value)
    assert "\n" not in msg and "(w) carry a leading dimension of 64 draws" in msg and "after site 'w'" in msg
    assert "(X * w).sum(-1)" in msg
    # written to broadcast, the same model's evidence is right: log N(y; 0, X X^T + 0.25 I) in closed form
    fit = ppvae.fit(BroadcastRegression(), data, guide="auto_mvn", steps=800, lr=0.05, progress=False)
    exact = dist.MultivariateNormal(torch.zeros(30), X @ X.T + 0.25 * torch.eye(30)).log_prob(y).item()
    ev = ppvae.log_evidence(fit, data, num_particles=4000, seed=0)
    # 4 standard errors of the importance estimate, floor 0.05 nats for the fitted guide's residual error
    assert abs(ev.value - exact) < max(4 * ev.stderr, 0.05), (ev.value, ev.stderr, exact)
