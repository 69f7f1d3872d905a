"""The variational autoencoder (Kingma & Welling 2013, "Auto-Encoding Variational Bayes", sec. 3).

Generative story, for every data point i (inside the data plate)::

    z_i ~ Normal(0, I_L)                       (site "z", event dim L)
    x_i ~ p_theta(x | z_i)                     (site "x", event dim D = number of pixels)

with the decoder p_theta an MLP (``arch="mlp"``: ``depth`` hidden layers of ``hidden`` units and
``activation``) or a transposed-convolution net for 28x28 images (``arch="conv"``), and the likelihood

* ``bernoulli`` -- x in {0, 1}: Bernoulli(logits = f_theta(z)) (Kingma & Welling 2013, app. C.1);
* ``gaussian`` -- Normal(mu_theta(z), sigma_theta(z)) with the per-pixel scale learned by the decoder
  (app. C.2), floored at ``min_scale``;
* ``cbernoulli`` -- the continuous Bernoulli on [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 3), for
  grey-level pixels.

The guide is the amortized encoder q_phi(z | x) = Normal(mu_phi(x), diag sigma_phi(x)^2) (eq. 9-10),
the model's own ``guide`` (so ``guide="auto"`` uses it and the run file holds the encoder weights).
The generic ``guide="amortized"`` of :mod:`ppvae.infer.svi.amortized` also fits this model (an MLP encoder of
its own). ``elbo="trace"`` is estimator A (eq. 6), ``elbo="meanfield"`` estimator B (eq. 7, the
Gaussian KL in closed form); ``elbo="iwae"`` where registered by the evaluation layer.

Networks are built in :meth:`VAE.setup` once the data size is known (a loaded run rebuilds them from
the saved data shape), so ``build_model("vae")`` needs no input size.
"""

from __future__ import annotations

import os

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from ppvae import (
    BayesianWeights,
    Callback,
    ConditionsOnSubset,
    Model,
    PPVAEError,
    Reports,
    check_choice,
    check_float,
    check_int,
    load_dataset,
    observed_part,
    plots,
    register_model,
)
from ppvae.model.nn import ACTIVATIONS, mlp

__all__ = ["VAE", "ConvEncoder", "ConvDecoder"]

LIKELIHOODS = ("bernoulli", "gaussian", "cbernoulli")
IMAGE_SIDE = 28


class ConvEncoder(nn.Module):
    """28x28 image -> two stride-2 convolutions (32, 64 channels) -> ``hidden`` units -> (loc, scale)."""

    def __init__(self, latent_dim: int, hidden: int, act: type[nn.Module]):
        super().__init__()
        self.body = nn.Sequential(
            nn.Unflatten(-1, (1, IMAGE_SIDE, IMAGE_SIDE)),
            nn.Conv2d(1, 32, 4, 2, 1), act(), nn.Conv2d(32, 64, 4, 2, 1), act(),
            nn.Flatten(), nn.Linear(64 * 7 * 7, hidden), act(), nn.Linear(hidden, 2 * latent_dim),
        )

    def forward(self, x):
        lead = x.shape[:-1]
        return self.body(x.reshape(-1, x.shape[-1])).reshape(lead + (-1,))


class ConvDecoder(nn.Module):
    """z -> ``hidden`` units -> 64x7x7 -> two stride-2 transposed convolutions -> ``out_channels`` x 28x28."""

    def __init__(self, latent_dim: int, hidden: int, act: type[nn.Module], out_channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(latent_dim, hidden), act(), nn.Linear(hidden, 64 * 7 * 7), act(),
            nn.Unflatten(-1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 4, 2, 1), act(), nn.ConvTranspose2d(32, out_channels, 4, 2, 1),
        )
        self.out_channels = out_channels

    def forward(self, z):
        lead = z.shape[:-1]
        y = self.body(z.reshape(-1, z.shape[-1]))  # (B, C, 28, 28) -> (..., C * 784), channel-major
        return y.reshape(lead + (self.out_channels * IMAGE_SIDE * IMAGE_SIDE,))


@register_model("vae", "variational autoencoder: z ~ N(0, I), x ~ decoder(z); MLP or conv, amortized encoder")
class VAE(Model, Reports, ConditionsOnSubset):
    """Variational autoencoder with an amortized Gaussian encoder (see the module docstring).

    ``bayesian_decoder=True``: the decoder's weights theta are global latents with prior N(0, ``prior_scale``^2)
    and a mean-field Gaussian factor q(theta) in the guide beside q(z | x) (Kingma & Welling 2013, app. F;
    :class:`ppvae.BayesianWeights`). Data with missing values (a ``Dataset`` with a ``mask``) are fitted on the
    observed pixels only (:class:`ppvae.ConditionsOnSubset`)."""

    data_kinds = ("binary", "image", "real")
    train_defaults = {"batch_size": 100, "lr": 1e-3, "jit": True}  # Burda et al. 2015 / Kingma & Welling 2013 settings

    def __init__(self, latent_dim: int = 50, hidden: int = 200, depth: int = 2, activation: str = "tanh",
                 likelihood: str = "bernoulli", arch: str = "mlp", min_scale: float = 1e-3,
                 bayesian_decoder: bool = False, prior_scale: float = 1.0):
        super().__init__()
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.hidden = check_int("hidden", hidden, low=1)
        self.depth = check_int("depth", depth, low=1)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.likelihood = check_choice("likelihood", likelihood, LIKELIHOODS)
        self.arch = check_choice("arch", arch, ("mlp", "conv"))
        self.min_scale = check_float("min_scale", min_scale, low=0.0, strict=True)
        if not isinstance(bayesian_decoder, bool):
            raise PPVAEError(f"bayesian_decoder: expected true or false; got {bayesian_decoder!r}")
        self.bayesian_decoder = bayesian_decoder
        self.prior_scale = check_float("prior_scale", prior_scale, low=0.0, strict=True)
        self.input_dim = None

    # -- networks ---------------------------------------------------------------------------------
    def setup(self, data) -> None:
        """Check the data (pixel range for the likelihood, 28x28 for ``arch="conv"``) and build the
        encoder and decoder for its size (kept when the size matches networks already built)."""
        super().setup(data)
        x = data.x.reshape(len(data), -1)
        dim = x.shape[1]
        check_pixels(x, self.likelihood, data.meta.get("dynamic_binarization", False), data.name)
        if self.arch == "conv":
            shape = tuple(data.meta.get("image_shape") or ())
            if dim != IMAGE_SIDE * IMAGE_SIDE or (shape and shape != (IMAGE_SIDE, IMAGE_SIDE)):
                raise PPVAEError(f"data: arch='conv' expects 28x28 images (784 values per point); "
                                 f"got {tuple(data.x.shape[1:])} per point in '{data.name}'")
        if self.input_dim == dim:
            return
        if self.input_dim is not None:
            raise PPVAEError(f"data: this VAE was built for {self.input_dim} values per point; got {dim}")
        self.input_dim = dim
        out = 2 * dim if self.likelihood == "gaussian" else dim
        act = ACTIVATIONS[self.activation]
        if self.arch == "mlp":
            self.encoder = mlp([dim] + [self.hidden] * self.depth + [2 * self.latent_dim], act)
            self.decoder = mlp([self.latent_dim] + [self.hidden] * self.depth + [out], act)
        else:
            self.encoder = ConvEncoder(self.latent_dim, self.hidden, act)
            self.decoder = ConvDecoder(self.latent_dim, self.hidden, act, out // dim)
        # plain references beside the registered submodules: PyroModule.__getattr__ costs ~0.1 ms per
        # lookup, a few percent of a training step on this network (see benchmarks/bench_vae_speed.py)
        self.__dict__["_nets"] = (self.encoder, self.decoder)
        if self.bayesian_decoder:  # q(theta) over the decoder's weights, located at its initial values
            self.decoder_weights = BayesianWeights(self.decoder, "decoder", self.prior_scale)

    def _built(self):
        if self.input_dim is None:
            raise PPVAEError("vae: the networks are built by setup(data) (fit does it); call model.setup(data) first")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q_phi(z | x) parameters: loc and scale = softplus(.) + min_scale, each (..., L)."""
        self._built()
        h = self._nets[0](x)
        loc, raw = h[..., : self.latent_dim], h[..., self.latent_dim :]
        return loc, nn.functional.softplus(raw) + self.min_scale

    def masked_site(self) -> str:
        return "x"

    def likelihood_dist(self, z: torch.Tensor, weights: dict | None = None) -> dist.Distribution:
        """p_theta(x | z) as a distribution with event dim D; ``weights``: the decoder's parameters theta (a draw
        of the Bayesian decoder), else its own (with ``bayesian_decoder``: the posterior means)."""
        self._built()
        if self.bayesian_decoder:
            h = self.decoder_weights.apply(self.decoder_weights.mean() if weights is None else weights, z)
        else:
            h = self._nets[1](z)
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=h).to_event(1)
        if self.likelihood == "cbernoulli":
            return dist.ContinuousBernoulli(logits=h).to_event(1)
        d = self.input_dim
        loc, raw = h[..., :d], h[..., d:]
        return dist.Normal(loc, nn.functional.softplus(raw) + self.min_scale).to_event(1)

    # -- model and guide ----------------------------------------------------------------------------
    def forward(self, batch):
        x = batch.x.reshape(len(batch), -1)
        mask = None if batch.mask is None else batch.mask.reshape(len(batch), -1)
        weights = self.decoder_weights.prior() if self.bayesian_decoder else None  # global: outside the data plate
        with self.data_plate(batch):
            prior = dist.Normal(x.new_zeros(()), x.new_ones(())).expand([len(batch), self.latent_dim])
            z = pyro.sample("z", prior.to_event(1))
            pyro.sample("x", observed_part(self.likelihood_dist(z, weights), mask), obs=x)

    def guide(self, batch):
        x = batch.x.reshape(len(batch), -1)
        if self.bayesian_decoder:
            self.decoder_weights.posterior()
        loc, scale = self.encode(x)
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    # -- conveniences for reports -------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at the encoder's mean, E[x | z = mu_phi(x)]."""
        return self.likelihood_dist(self.encode(x.reshape(len(x), -1))[0]).mean

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder's mean at ``n`` draws z ~ N(0, I)."""
        self._built()
        z = torch.randn(n, self.latent_dim, generator=generator)
        device = next(self._nets[1].parameters()).device
        return self.likelihood_dist(z.to(device)).mean

    def fit_callbacks(self, data) -> list:
        """For ``ppvae fit``: a callback recording the held-out loss once per epoch (:class:`TestCurve`)."""
        return [TestCurve(self, data)]

    def report(self, fit, data, out_dir: str) -> None:
        """Figures for ``ppvae fit``: reconstructions beside inputs, prior samples, a 2-D latent
        scatter coloured by label, and train/test loss curves (per data point)."""
        image_report(self, fit, data, out_dir, lambda x: self.encode(x)[0])


def held_out(data):
    """The test split of a bundled image data set trained on its train split (same binarization), else None."""
    if data.meta.get("split") != "train" or data.name not in ("mnist5k", "fashion-mnist"):
        return None
    test = load_dataset(data.name, split="test", binarize=data.meta.get("binarize", "fixed"))
    return test.subset(torch.arange(min(len(test), 1000)))


class TestCurve(Callback):
    """A trainer callback: at the end of every epoch and of the fit, -ELBO per point on the held-out
    split (one sample per point, Trace_ELBO), stored in ``model.test_curve`` as (step, value) pairs;
    nothing when ``data`` has no held-out split (:func:`held_out`)."""

    def __init__(self, model, data):
        self.model, self.test = model, held_out(data)
        self.batch = None if self.test is None else self.test.batch()
        model.test_curve = []

    def on_epoch_end(self, trainer) -> None:
        self._record(trainer)

    def on_fit_end(self, trainer) -> None:
        curve = self.model.test_curve
        if not curve or curve[-1][0] != trainer.step:  # a fit that ends mid-epoch
            self._record(trainer)

    def _record(self, trainer) -> None:
        if self.test is None:
            return
        with torch.no_grad(), pyro.validation_enabled(False):
            loss = Trace_ELBO().loss(trainer.model_fn, trainer.guide, self.batch.to(trainer.data.x.device))
        self.model.test_curve.append((trainer.step, loss / len(self.test)))


@torch.no_grad()
def image_report(model, fit, data, out_dir: str, encode_mean, samples=None, colour=None) -> None:
    """reconstructions.png, samples.png, latent.png and loss.png (per data point, with the test curve) for an
    image VAE.

    ``samples(shape, path)`` draws samples.png (default: 64 decoder means at z ~ prior, 8 a row);
    ``colour(x)`` gives (labels, legend name) for latent.png (default: the data's labels)."""
    shape = tuple(data.meta.get("image_shape") or ())
    x = data.x.reshape(len(data), -1)
    if len(shape) == 2 and shape[0] * shape[1] == x.shape[1]:
        n = min(30, len(x) // 10 * 10)
        if n:
            plots.plot_reconstructions(x[:n].cpu(), model.reconstruct(x[:n]).cpu(),
                                 os.path.join(out_dir, "reconstructions.png"), shape)
        if samples is None:
            prior = model.sample_prior(64, torch.Generator().manual_seed(0)).cpu()
            plots.plot_image_grid(prior, os.path.join(out_dir, "samples.png"), shape, 8, "decoder means at z ~ prior")
        else:
            samples(shape, os.path.join(out_dir, "samples.png"))
    m = min(len(x), 2000)
    z = torch.cat([encode_mean(x[i : i + 500]) for i in range(0, m, 500)]).cpu()
    labels, name = (None if data.y is None else data.y[:m].cpu(), "label") if colour is None else colour(x[:m])
    plots.plot_latent_2d(z, labels, os.path.join(out_dir, "latent.png"), "encoder means q(z|x)", label_name=name)
    per_point = np.asarray(fit.history["loss"], dtype=float) / len(data)
    # replaces ppvae fit's loss.png (the data-set total): one loss figure, per point so the test curve sits beside it
    plots.plot_loss(per_point, os.path.join(out_dir, "loss.png"), "SVI loss: negative ELBO per data point",
                    test_losses=getattr(model, "test_curve", None) or None,
                    ylabel="negative ELBO per data point (nats)")


def check_pixels(x: torch.Tensor, likelihood: str, dynamic: bool, name: str) -> None:
    """Bernoulli needs x in {0, 1} (or [0, 1] with dynamic binarization); continuous Bernoulli [0, 1]."""
    if likelihood == "gaussian":
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise PPVAEError(f"data: likelihood='{likelihood}' expects pixel values in [0, 1]; got values in "
                         f"[{lo:g}, {hi:g}] in '{name}' (use likelihood=gaussian for other values)")
    if likelihood == "bernoulli" and not dynamic and not bool(((x == 0) | (x == 1)).all()):
        raise PPVAEError(f"data: likelihood='bernoulli' expects binary pixels 0/1; got grey values in '{name}' "
                         "(load with binarize='fixed' or 'dynamic', or use likelihood=cbernoulli)")

