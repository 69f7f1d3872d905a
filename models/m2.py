"""The semi-supervised VAE "M2" (Kingma, Rezende, Mohamed & Welling 2014, "Semi-supervised learning
with deep generative models", sec. 2.2 and 3.1.2).

Generative story, for every data point i (inside the data plate)::

    y_i ~ Categorical(1/K, ..., 1/K)                                      (site "y", the class)
    z_i ~ Normal(0, I_L)                                                  (site "z", the style)
    x_i ~ Bernoulli(logits = f_theta(z_i, y_i))                           (site "x")

Guide: q(y_i | x_i) = Categorical(pi_phi(x_i)) (the classifier) and q(z_i | x_i, y_i) =
Normal(mu_phi(x_i, y_i), diag sigma_phi(x_i, y_i)^2). Labels come in ``batch.y`` (-1 = unlabeled):

* labeled point: the guide's y is the given label (a one-hot q, log q(y) = 0), so the objective is
  eq. 6, L(x, y) = E_q(z|x,y)[log p(x|y,z) + log p(y) + log p(z) - log q(z|x,y)];
* unlabeled point: y is enumerated in the guide (all K values, weighted by q(y|x); TraceEnum_ELBO),
  giving eq. 7, U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)).

Both cases run in one vectorized pass (a labeled point's enumerated values other than its label have
weight exp(-1e4) = 0). The classification term of eq. 9, alpha * E_labeled[log q(y|x)] with
alpha = ``aux_weight`` * N (Kingma et al. use 0.1 N), enters the model as a ``pyro.factor`` on the
labeled points of the batch (weight per labeled point alpha / N_labeled, scaled N/M by the data plate).

Networks: ``depth`` hidden layers of ``hidden`` units (Kingma et al.: one layer of 500, softplus),
each of y's inputs entering the first layer through a learned embedding (equivalent to concatenating
a one-hot y, computed once per class rather than once per enumerated copy of x).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae
from ppvae import Model, PPVAEError, Reports, check_choice, check_float, check_int, plots, register_model
from ppvae.model.nn import ACTIVATIONS, mlp

from .vae import image_report

__all__ = ["M2"]

NEG = -1e4  # log-weight of the classes other than a labeled point's own in the guide


class _Conditional(nn.Module):
    """h = act(W_a a + E[y]) -> MLP; ``a`` (..., A), ``y`` integer (...) broadcastable with a's batch dims."""

    def __init__(self, in_dim: int, num_classes: int, widths: list[int], act):
        super().__init__()
        self.inp = nn.Linear(in_dim, widths[0])
        self.emb = nn.Embedding(num_classes, widths[0])
        self.act = act()
        self.rest = mlp(widths, act)

    def forward(self, a, y):
        return self.rest(self.act(self.inp(a) + self.emb(y)))


@register_model("m2", "semi-supervised VAE (Kingma et al. 2014, M2): class y (enumerated if unlabeled), style z")
class M2(Model, Reports):
    """Semi-supervised VAE with a discrete class latent; see the module docstring."""

    data_kinds = ("binary", "image")
    train_defaults = {"batch_size": 100, "lr": 1e-3, "jit": True}

    def __init__(self, num_classes: int = 10, latent_dim: int = 50, hidden: int = 500, depth: int = 1,
                 activation: str = "softplus", aux_weight: float = 50.0, min_scale: float = 1e-3):
        super().__init__()
        self.num_classes = check_int("num_classes", num_classes, low=2)
        self.latent_dim = check_int("latent_dim", latent_dim, low=1)
        self.hidden = check_int("hidden", hidden, low=1)
        self.depth = check_int("depth", depth, low=1)
        self.activation = check_choice("activation", activation, tuple(ACTIVATIONS))
        self.aux_weight = check_float("aux_weight", aux_weight, low=0.0)
        self.min_scale = check_float("min_scale", min_scale, low=0.0, strict=True)
        self.input_dim = None
        self.label_weight = 0.0

    def setup(self, data) -> None:
        """Check pixels in {0, 1} and labels in {-1, 0..K-1}; build the networks; set the per-labeled-point
        weight of the classification term, aux_weight * N / N_labeled."""
        super().setup(data)
        x = data.x.reshape(len(data), -1)
        if not bool(((x == 0) | (x == 1)).all()):
            raise PPVAEError(f"data: m2 expects binary pixels 0/1; got values in [{float(x.min()):g}, "
                             f"{float(x.max()):g}] in '{data.name}' (load with binarize='fixed')")
        if data.y is not None:
            check_labels(data.y, self.num_classes)
            num_labeled = int((data.y >= 0).sum())
            self.label_weight = self.aux_weight * len(data) / num_labeled if num_labeled else 0.0
        if self.input_dim == x.shape[1]:
            return
        if self.input_dim is not None:
            raise PPVAEError(f"data: this m2 was built for {self.input_dim} values per point; got {x.shape[1]}")
        self.input_dim = d = x.shape[1]
        act, h, k, lat = ACTIVATIONS[self.activation], [self.hidden] * self.depth, self.num_classes, self.latent_dim
        self.classifier = mlp([d] + h + [k], act)
        self.encoder = _Conditional(d, k, h + [2 * lat], act)
        self.decoder = _Conditional(lat, k, h + [d], act)
        self.__dict__["_nets"] = (self.classifier, self.encoder, self.decoder)  # skip PyroModule.__getattr__

    def _built(self):
        if self.input_dim is None:
            raise PPVAEError("m2: the networks are built by setup(data) (fit does it); call model.setup(data) first")

    def forward(self, batch):
        self._built()
        classifier, _, decoder = self._nets
        x = batch.x.reshape(len(batch), -1)
        m, k = len(batch), self.num_classes
        with self.data_plate(batch):
            y = pyro.sample("y", dist.Categorical(logits=x.new_zeros(k)).expand([m]))
            z = pyro.sample("z", dist.Normal(x.new_zeros(()), x.new_ones(())).expand([m, self.latent_dim]).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z, y)).to_event(1), obs=x)
            if batch.y is not None and self.label_weight > 0:
                labeled = batch.y >= 0
                log_q = classifier(x).log_softmax(-1).gather(-1, batch.y.clamp_min(0).unsqueeze(-1)).squeeze(-1)
                pyro.factor("classify", self.label_weight * log_q * labeled)

    def guide(self, batch):
        self._built()
        classifier, encoder, _ = self._nets
        x = batch.x.reshape(len(batch), -1)
        logits = classifier(x)
        if batch.y is not None:
            labeled = (batch.y >= 0).unsqueeze(-1)
            given = torch.full_like(logits, NEG).scatter(-1, batch.y.clamp_min(0).unsqueeze(-1), 0.0)
            logits = torch.where(labeled, given, logits)
        with self.data_plate(batch):
            y = pyro.sample("y", dist.Categorical(logits=logits), infer={"enumerate": "parallel"})
            h = encoder(x, y)
            loc, raw = h[..., : self.latent_dim], h[..., self.latent_dim :]
            pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + self.min_scale).to_event(1))

    # -- the classifier and reports -----------------------------------------------------------------
    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """q(y | x) for each row of ``x``, shape (N, K)."""
        self._built()
        return self._nets[0](x.reshape(len(x), -1)).softmax(-1)

    @torch.no_grad()
    def accuracy(self, data) -> float:
        """Fraction of points whose argmax_y q(y|x) equals the label (points labeled -1 are skipped)."""
        if data.y is None:
            raise PPVAEError(f"data: accuracy needs labels; '{data.name}' has none")
        keep = data.y >= 0
        pred = self.predict_proba(data.x[keep].to(next(self.parameters()).device)).argmax(-1).cpu()
        return float((pred == data.y[keep].cpu()).double().mean())

    def encode_mean(self, x):
        y = self.predict_proba(x).argmax(-1)
        return self._nets[1](x.reshape(len(x), -1), y)[..., : self.latent_dim]

    @torch.no_grad()
    def reconstruct(self, x):
        x = x.reshape(len(x), -1)
        y = self.predict_proba(x).argmax(-1)
        return torch.sigmoid(self._nets[2](self.encode_mean(x), y))

    @torch.no_grad()
    def sample_prior(self, n: int, generator=None):
        """Decoder means for ``n`` draws z ~ N(0, I), the i-th with class y = i mod K."""
        self._built()
        device = next(self.parameters()).device
        z = torch.randn(n, self.latent_dim, generator=generator).to(device)
        y = torch.arange(n, device=device) % self.num_classes
        return torch.sigmoid(self._nets[2](z, y))

    @torch.no_grad()
    def class_samples(self, per_class: int = 10, generator=None) -> torch.Tensor:
        """Decoder means for ``per_class`` draws z ~ N(0, I) per class, class-major: rows c * per_class
        to (c + 1) * per_class - 1 have y = c (the same z's for every class, so a column fixes the style)."""
        self._built()
        device = next(self.parameters()).device
        z = torch.randn(per_class, self.latent_dim, generator=generator).to(device).repeat(self.num_classes, 1)
        y = torch.arange(self.num_classes, device=device).repeat_interleave(per_class)
        return torch.sigmoid(self._nets[2](z, y))

    def heldout_accuracy(self, data) -> dict:
        """Accuracy of argmax q(y|x) on the named data set's held-out split when ``data`` is its training
        split (mnist5k: the 1,000 test images); {} for other data. Printed, and kept in metrics.json."""
        if data.meta.get("split") != "train":
            return {}

        try:
            test = ppvae.load_dataset(data.name, split="test", binarize="fixed")
        except PPVAEError:
            return {}
        acc = self.accuracy(test)
        print(f"m2: test accuracy of argmax q(y|x) = {acc:.4f} on the {len(test)} held-out images of "
              f"{data.name} (split=test)")
        return {"accuracy_test": acc, "num_test": len(test)}

    def report(self, fit, data, out_dir: str) -> dict:
        """Reconstructions, class-conditional samples (one row per class y, one column per z), the latent
        scatter coloured by the classifier's argmax q(y|x) (most points are unlabeled), loss curve; and
        the held-out accuracy (:meth:`heldout_accuracy`), returned for metrics.json."""

        def samples(shape, path):
            images = self.class_samples(10, torch.Generator().manual_seed(0)).cpu()
            plots.plot_image_grid(images, path, shape, 10, "decoder means: row = class y, column = one z ~ prior",
                            row_labels=list(range(self.num_classes)), row_name="class y")

        def colour(x):
            return self.predict_proba(x).argmax(-1).cpu(), "argmax q(y|x)"

        metrics = self.heldout_accuracy(data)
        image_report(self, fit, data, out_dir, self.encode_mean, samples=samples, colour=colour)
        return metrics


def check_labels(y: torch.Tensor, num_classes: int) -> None:
    """Labels must lie in {-1 (unlabeled), 0, ..., num_classes - 1}."""
    lo, hi = int(y.min()), int(y.max())
    if lo < -1 or hi >= num_classes:
        raise PPVAEError(f"labels: m2 expects classes -1 (unlabeled) or 0..{num_classes - 1}; "
                         f"got values in [{lo}, {hi}]")
