"""``stl`` and ``iwae_dreg`` (ppvae/infer/svi/estimators.py) against exact answers: the path-derivative gradient is
exactly zero at the optimum of a model whose posterior is in the guide family (Roeder et al. 2017), it equals a
hand-written gradient with the guide's parameters detached, the objectives' values equal those of ``trace`` /
``iwae``, DReG's encoder gradient has IWAE's mean (z-test per coordinate) with lower variance, its decoder
gradient is IWAE's draw for draw, and a guide site without rsample is refused by name."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch import nn

import ppvae
from ppvae import PPVAEError
from ppvae.infer.svi.guides import make_guide
from ppvae.models import VAE

D, L, SIGMA = 4, 2, 0.7  # linear-Gaussian: x = W z + b + sigma * noise, z ~ N(0, I_L)


class GaussianMean(ppvae.Model):
    """mu ~ N(0, I_2), x_n ~ N(mu, I_2): posterior N(sum x / (N + 1), I / (N + 1))."""

    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        with self.data_plate(batch):
            pyro.sample("x", dist.Normal(mu, 1.0).to_event(1), obs=batch.x)


class LinearGaussian(ppvae.Model):
    """z_i ~ N(0, I_L), x_i ~ N(W z_i + b, sigma^2 I_D), with the model's own guide q(z | x) = N(A x + c, diag
    exp(2 (B x + s))). W has orthogonal columns, so the posterior covariance (I + W'W / sigma^2)^-1 is diagonal and
    the posterior lies in the guide family: A = S W' / sigma^2, c = -A b, B = 0, s = log sqrt(diag S)."""

    def __init__(self, mixture: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        q, _ = torch.linalg.qr(torch.randn(D, L, generator=g))
        self.decoder = nn.Linear(L, D)
        self.loc_net, self.log_scale_net = nn.Linear(D, L), nn.Linear(D, L)
        with torch.no_grad():
            self.decoder.weight.copy_(q * torch.tensor([1.5, 0.8]))
            self.decoder.bias.copy_(torch.randn(D, generator=g))
        self.mixture = mixture  # a discrete local c_i in {0, 1} shifting the prior mean of z_i (summed out)

    def forward(self, batch):
        with self.data_plate(batch):
            shift = 0.0
            if self.mixture:
                c = pyro.sample("c", dist.Bernoulli(0.3))
                shift = (2.0 * c).unsqueeze(-1)
            z = pyro.sample("z", dist.Normal(shift + torch.zeros(len(batch), L), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), SIGMA).to_event(1), obs=batch.x)

    def guide(self, batch):
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(self.loc_net(batch.x), self.log_scale_net(batch.x).exp()).to_event(1))

    def set_posterior(self):
        """The exact posterior's parameters (see the class docstring)."""
        w, b = self.decoder.weight.detach(), self.decoder.bias.detach()
        cov = torch.linalg.inv(torch.eye(L) + w.T @ w / SIGMA**2)
        assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-6)
        a = cov @ w.T / SIGMA**2
        with torch.no_grad():
            self.loc_net.weight.copy_(a)
            self.loc_net.bias.copy_(-a @ b)
            self.log_scale_net.weight.zero_()
            self.log_scale_net.bias.copy_(0.5 * torch.diagonal(cov).log())
        return self

    def guide_params(self):
        return [*self.loc_net.parameters(), *self.log_scale_net.parameters()]


def _data(model, n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, L, generator=g)
    with torch.no_grad():
        x = model.decoder(z) + SIGMA * torch.randn(n, D, generator=g)
    return ppvae.Dataset(x, name="lingauss")


def _elbo(name, k=1, discrete=False):
    return ppvae.make_elbo(name, has_discrete=discrete, max_plate_nesting=1, num_particles=k)[1]


def _grads(elbo, model, guide, batch, params, draws, seed=0):
    """(draws, P) gradients of the loss with respect to ``params``, one independent draw each, and the losses."""
    elbo.differentiable_loss(model, guide, batch)  # a first call may trace the guide once more (global sites)
    pyro.set_rng_seed(seed)
    out, losses = [], []
    for _ in range(draws):
        loss = elbo.differentiable_loss(model, guide, batch)
        out.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
        losses.append(loss.item())
    return torch.stack(out).double(), torch.tensor(losses)


def test_stl_gradient_is_zero_at_the_exact_posterior_for_every_draw():
    """Amortized linear-Gaussian guide at the exact posterior: each of 30 STL gradients of the guide's parameters is
    0 to float32 rounding (|g| < 1e-4); Trace_ELBO's single-draw gradients there are not (spread > 0.1)."""
    model = LinearGaussian().set_posterior()
    batch = _data(model).batch()
    stl, _ = _grads(_elbo("stl"), model, model.guide, batch, model.guide_params(), 30)
    trace, _ = _grads(_elbo("trace"), model, model.guide, batch, model.guide_params(), 30)
    assert stl.abs().max() < 1e-4
    assert trace.std(0).max() > 0.1


@pytest.mark.parametrize("guide", ["auto_normal", "auto_mvn"])
def test_stl_gradient_of_an_autoguide_is_zero_at_the_conjugate_posterior(guide):
    """mu ~ N(0, I), 3 points x_n ~ N(mu, I): the posterior N(sum x / 4, I / 4) set as the autoguide's location and
    init_scale 0.5; 10 STL gradients of the guide's parameters are 0 (< 1e-4), Trace_ELBO's spread exceeds 0.1."""
    x = torch.tensor([[0.5, -1.0], [1.5, 0.2], [2.0, 0.4]])
    data, model = ppvae.Dataset(x), GaussianMean()
    model.setup(data)
    q = make_guide(guide, model, init_values={"mu": x.sum(0) / 4}, init_scale=0.5)
    batch = data.batch()
    q(batch)  # creates the parameters
    params = [p for p in q.parameters() if p.requires_grad]
    stl, _ = _grads(_elbo("stl"), model, q, batch, params, 10)
    trace, _ = _grads(_elbo("trace"), model, q, batch, params, 10)
    assert stl.abs().max() < 1e-4
    assert trace.std(0).max() > 0.1


def test_stl_equals_the_gradient_with_detached_guide_parameters_by_hand():
    """On a (nonlinear) VAE, STL's gradient of the encoder equals the gradient of
    -(log p(x | z) + log N(z; 0, I) - log N(z; stop_grad(loc), stop_grad(scale))) at the same draw z = loc + scale eps
    (relative 1e-4), and differs from Trace_ELBO's."""
    torch.manual_seed(0)
    data = ppvae.Dataset((torch.rand(10, 12) < 0.3).float(), name="toy", kind="binary")
    model = VAE(latent_dim=3, hidden=8, depth=1)
    model.setup(data)
    batch, params = data.batch(), list(model.encoder.parameters())
    (ours,), _ = _grads(_elbo("stl"), model, model.guide, batch, params, 1, seed=4)
    (trace,), _ = _grads(_elbo("trace"), model, model.guide, batch, params, 1, seed=4)
    pyro.set_rng_seed(4)
    loc, scale = model.encode(batch.x)
    z = loc + scale * torch.randn(len(batch), 3)
    log_p = model.likelihood_dist(z).log_prob(batch.x) + dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_q = dist.Normal(loc.detach(), scale.detach()).log_prob(z).sum(-1)
    hand = torch.cat([g.reshape(-1) for g in torch.autograd.grad(-(log_p - log_q).sum(), params)]).double()
    assert torch.allclose(ours, hand, rtol=1e-4, atol=1e-5)
    assert (ours - trace).abs().max() > 1e-2


@pytest.mark.parametrize("guide", ["auto_normal", "auto_iaf"])
def test_stl_value_equals_trace_value(guide):
    """Same seed, same draw: the STL loss equals Trace_ELBO's to the last bit (only the gradient differs), for the
    VAE's own encoder, the amortized guide, and autoguides (the flow included)."""
    model = GaussianMean()
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    data = ppvae.Dataset(x)
    model.setup(data)
    q = make_guide(guide, model)
    batch = data.batch()
    q(batch)  # the autoguide's first call traces the model (and draws from the RNG)
    for k in (1, 3):
        pyro.set_rng_seed(2)
        a = _elbo("stl", k).differentiable_loss(model, q, batch)
        pyro.set_rng_seed(2)
        b = _elbo("trace", k).differentiable_loss(model, q, batch)
        assert a.item() == b.item()


def test_stl_value_equals_enum_value_with_discrete_latents():
    """With a discrete local site summed out (TraceEnum_ELBO underneath), stl's value equals enum's."""
    model = LinearGaussian(mixture=True)
    batch = _data(model).batch()
    fn = model.enumerated()
    pyro.set_rng_seed(3)
    a = _elbo("stl", discrete=True).differentiable_loss(fn, model.guide, batch)
    pyro.set_rng_seed(3)
    b = _elbo("enum", discrete=True).differentiable_loss(fn, model.guide, batch)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)


@pytest.mark.parametrize("mixture", [False, True])
def test_iwae_dreg_value_equals_iwae_value(mixture):
    """K = 5, the same draws: iwae_dreg's loss equals iwae's exactly, with or without a discrete local site summed
    out inside every weight; and the decoder's gradient (theta) is IWAE's draw for draw."""
    model = LinearGaussian(mixture=mixture)
    batch = _data(model).batch()
    fn = model.enumerated() if mixture else model
    dec = list(model.decoder.parameters())
    g_dreg, v_dreg = _grads(_elbo("iwae_dreg", 5, mixture), fn, model.guide, batch, dec, 3)
    g_iwae, v_iwae = _grads(_elbo("iwae", 5, mixture), fn, model.guide, batch, dec, 3)
    assert torch.equal(v_dreg, v_iwae)
    assert torch.allclose(g_dreg, g_iwae, rtol=1e-5, atol=1e-6)


def test_iwae_dreg_with_one_particle_is_stl():
    """K = 1: the weight is 1, DReG's gradient is the path derivative, the same draw as stl's (relative 1e-5)."""
    model = LinearGaussian()
    batch = _data(model).batch()
    a, _ = _grads(_elbo("iwae_dreg", 1), model, model.guide, batch, model.guide_params(), 2)
    b, _ = _grads(_elbo("stl", 1), model, model.guide, batch, model.guide_params(), 2)
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _off_posterior(shift, seed=5):
    model = LinearGaussian().set_posterior()
    with torch.no_grad():  # move the guide off the posterior
        for p in model.guide_params():
            p.add_(shift * torch.randn(p.shape, generator=torch.Generator().manual_seed(seed)))
    return model


class _Record(pyro.poutine.messenger.Messenger):
    def _postprocess_message(self, msg):
        if msg["name"] == "z":
            self.z = msg["value"]


def test_iwae_dreg_encoder_gradient_equals_tucker_eq6_by_hand():
    """K = 20, one draw: the encoder gradient equals -grad sum_ik stop_grad(w~_ik^2) log w_ik with log w_ik =
    log p(x_i, z_ik) - log N(z_ik; stop_grad(loc), stop_grad(scale)) written by hand at the same eps (Tucker et al.
    2019, eq. 6), to 1e-4 relative; the value equals -sum_i log (1/K) sum_k w_ik by hand."""
    k, model = 20, _off_posterior(0.3)
    batch, params, record = _data(model).batch(), model.guide_params(), _Record()
    elbo, guide = _elbo("iwae_dreg", k), record(model.guide)
    elbo.differentiable_loss(model, guide, batch)
    pyro.set_rng_seed(7)
    loss = elbo.differentiable_loss(model, guide, batch)
    ours = torch.autograd.grad(loss, params)
    x = batch.x
    loc, scale = model.loc_net(x), model.log_scale_net(x).exp()
    z = loc + scale * ((record.z - loc) / scale).detach()  # a fresh graph at the same draw (the hooks sit on record.z)
    log_w = (dist.Normal(0.0, 1.0).log_prob(z).sum(-1) + dist.Normal(model.decoder(z), SIGMA).log_prob(x).sum(-1)
             - dist.Normal(loc.detach(), scale.detach()).log_prob(z).sum(-1))
    w = torch.softmax(log_w.detach(), 0)
    hand = torch.autograd.grad(-(w**2 * log_w).sum(), params)
    for a, b in zip(ours, hand, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
    expected = -(torch.logsumexp(log_w, 0) - math.log(k)).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.slow
def test_dreg_and_iwae_encoder_gradients_share_their_mean_and_dreg_varies_less():
    """Linear-Gaussian, guide near the optimum (parameters shifted by 0.1 * N(0, 1)), K = 5, 200 draws each: per
    encoder coordinate the z-statistic of the difference of the two mean gradients is below 4.5 (20 coordinates;
    seeded), and IWAE's total variance exceeds DReG's 3-fold (measured ~10x; far from the optimum, shift 0.3 and
    K = 20, this toy model gives the reverse, ~0.2x: see docs/guide/guides_elbos.md)."""
    model = _off_posterior(0.1)
    batch = _data(model).batch()
    dreg, _ = _grads(_elbo("iwae_dreg", 5), model, model.guide, batch, model.guide_params(), 200, seed=1)
    iwae, _ = _grads(_elbo("iwae", 5), model, model.guide, batch, model.guide_params(), 200, seed=2)
    se = (dreg.var(0) / 200 + iwae.var(0) / 200).sqrt()
    z = (dreg.mean(0) - iwae.mean(0)) / se
    assert z.abs().max() < 4.5
    assert iwae.var(0).sum() > 3 * dreg.var(0).sum()


def test_non_reparameterized_guide_site_is_refused_by_name():
    class DiscreteGuide(LinearGaussian):
        def guide(self, batch):
            with self.data_plate(batch):
                pyro.sample("c", dist.Bernoulli(torch.full((len(batch),), 0.5)))
                pyro.sample("z", dist.Normal(self.loc_net(batch.x), 1.0).to_event(1))

    model = DiscreteGuide(mixture=True)
    batch = _data(model).batch()
    for name in ("stl", "iwae_dreg"):
        with pytest.raises(PPVAEError, match=f"elbo '{name}': guide site 'c' \\(Bernoulli\\) is not reparameterized"):
            _elbo(name, 2, discrete=True).differentiable_loss(model.enumerated(), model.guide, batch)


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["stl", "iwae_dreg"])
def test_fit_by_name_raises_the_elbo(elbo):
    """Both names train the linear-Gaussian model through ppvae.fit (iwae_dreg eagerly, even with jit=True) and
    raise its ELBO over 150 steps."""
    model = LinearGaussian()
    data = _data(model, n=64)
    fit = ppvae.fit(model, data, guide="model", elbo=elbo, num_particles=4, steps=150, lr=0.02, seed=0, jit=True,
                    check_convergence=False, progress=False)
    losses = torch.tensor(fit.history["loss"])
    assert fit.elbo_name == elbo
    assert losses[-20:].mean() < losses[:20].mean() - 5


@pytest.mark.slow
@pytest.mark.parametrize("elbo", ["stl", "iwae_dreg"])
def test_cli_fit_by_name(tmp_path, elbo):
    """`ppvae fit vae --elbo stl|iwae_dreg` trains (3 steps, 3 particles) and records the objective's name."""
    import json

    from ppvae.cli.app import main

    out = tmp_path / "run"
    rc = main(["fit", "vae", "latent_dim=4", "hidden=32", "depth=1", "--data", "mnist5k", "--steps", "3",
               "--elbo", elbo, "--num-particles", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["train"]["elbo"] == elbo
