"""The discrete-code VAE: a VAE whose code is ``num_codes`` independent categorical variables with ``code_size``
categories each (Jang, Gu & Poole 2017, "Categorical reparameterization with Gumbel-Softmax", sec. 4.2;
Maddison, Mnih & Teh 2017, "The Concrete distribution", sec. 5).

Generative story, for every data point i (inside the data plate)::

    z_ij ~ OneHotCategorical(1/K, ..., 1/K),  j = 0..C-1     (sites "z0", ..., "z{C-1}", one-hot vectors of size K)
    x_i ~ p_theta(x | z_i0, ..., z_i{C-1})                   (site "x"; the decoder reads the C one-hots concatenated)

with the decoder of :class:`~models.vae.VAE` (the same architectures and likelihoods; its input is the C x K
concatenated one-hots instead of a Gaussian code). The guide is the amortized encoder
q_phi(z_i | x_i) = prod_j OneHotCategorical(softmax(l_phi(x_i)_j)), logits l_phi(x_i) of shape (C, K) from the
VAE's encoder network. Every code site in the guide is marked ``infer={"enumerate": "parallel",
"importance_sample": True}``:

* training objectives by name (``ppvae.infer.discrete_elbos``): ``relaxed`` (Gumbel-Softmax / Concrete relaxation),
  ``relaxed_st`` (straight-through), ``reinforce`` (score function with a neural baseline), and, for small
  codes (K^C joint values at most :data:`MAX_ENUM`), ``enum`` (the exact ELBO, the guide's codes summed by
  ``TraceEnum_ELBO``); ``iwae`` is not available (its weights would carry no score-function term);
* ``ppvae.log_marginal`` draws the codes from this (unrelaxed) categorical guide, as it draws a continuous
  latent, so every training objective is evaluated on the same estimate of log p(x).

Each code is its own site so that ``enum`` can give every code its own enumeration dimension (a plate over the
codes would let Pyro sum each code independently of the others, which is wrong: x depends on all of them).
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from ppvae import PPVAEError, check_int, observed_part, register_model

from .vae import VAE, image_report

__all__ = ["DiscreteVAE", "MAX_ENUM"]

MAX_ENUM = 4096  # joint code values K^C above which elbo="enum" is refused (each becomes a copy of the batch)


@register_model("dvae", "discrete-code VAE: C categorical codes of K categories, uniform prior, x ~ decoder(codes)")
class DiscreteVAE(VAE):
    """VAE with ``num_codes`` categorical codes of ``code_size`` categories (see the module docstring)."""

    train_defaults = {"batch_size": 100, "lr": 1e-3, "jit": False}  # the relaxed objectives' temperature changes

    def __init__(self, num_codes: int = 20, code_size: int = 10, hidden: int = 200, depth: int = 2,
                 activation: str = "tanh", likelihood: str = "bernoulli", arch: str = "mlp", min_scale: float = 1e-3):
        self.num_codes = check_int("num_codes", num_codes, low=1)
        self.code_size = check_int("code_size", code_size, low=2)
        super().__init__(latent_dim=self.num_codes * self.code_size, hidden=hidden, depth=depth,
                         activation=activation, likelihood=likelihood, arch=arch, min_scale=min_scale)

    def setup(self, data) -> None:
        """The VAE's networks, the encoder's last layer giving C x K logits (not 2 x C x K Gaussian parameters)."""
        fresh = self.input_dim is None
        super().setup(data)
        if fresh:
            body = self.encoder if isinstance(self.encoder, nn.Sequential) else self.encoder.body
            body[-1] = nn.Linear(body[-1].in_features, self.latent_dim)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """q_phi(z | x)'s logits, shape (..., C, K)."""
        self._built()
        return self._nets[0](x).reshape(x.shape[:-1] + (self.num_codes, self.code_size))

    def decoder_input(self, codes: list[torch.Tensor]) -> torch.Tensor:
        """The C code values (one-hot, relaxed or enumerated; broadcastable batch shapes) concatenated, (..., C K)."""
        return torch.cat(torch.broadcast_tensors(*codes), -1)

    def forward(self, batch):
        x = batch.x.reshape(len(batch), -1)
        mask = None if batch.mask is None else batch.mask.reshape(len(batch), -1)  # missing pixels, as the VAE
        prior = dist.OneHotCategorical(logits=x.new_zeros(self.code_size)).expand([len(batch)])
        with self.data_plate(batch):
            codes = [pyro.sample(f"z{j}", prior) for j in range(self.num_codes)]
            self._check_enumeration(codes)
            pyro.sample("x", observed_part(self.likelihood_dist(self.decoder_input(codes)), mask), obs=x)

    def guide(self, batch):
        x = batch.x.reshape(len(batch), -1)
        logits = self.encode(x)
        infer = {"enumerate": "parallel", "importance_sample": True}
        with self.data_plate(batch):
            for j in range(self.num_codes):
                pyro.sample(f"z{j}", dist.OneHotCategorical(logits=logits[..., j, :]), infer=dict(infer))

    def _check_enumeration(self, codes: list[torch.Tensor]) -> None:
        # enumerated codes each hold their K values in a dimension of their own (so their shapes differ), which
        # the decoder's input broadcasts to K^C copies of the batch; drawn codes all have one shape
        if len({c.shape for c in codes}) > 1 and self.code_size ** self.num_codes > MAX_ENUM:
            raise PPVAEError(
                f"elbo: enumerating {self.num_codes} codes of {self.code_size} categories means "
                f"{self.code_size}^{self.num_codes} = {float(self.code_size) ** self.num_codes:.3g} joint values "
                f"(at most {MAX_ENUM}); train with elbo=relaxed, relaxed_st or reinforce")

    # -- conveniences for reports -------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mean at the encoder's most probable code, E[x | z = argmax q(z | x)]."""
        logits = self.encode(x.reshape(len(x), -1))
        hard = nn.functional.one_hot(logits.argmax(-1), self.code_size).to(logits.dtype)
        return self.likelihood_dist(hard.flatten(-2)).mean

    @torch.no_grad()
    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The decoder's mean at ``n`` codes drawn uniformly."""
        self._built()
        device = next(self.decoder.parameters()).device
        idx = torch.randint(self.code_size, (n, self.num_codes), generator=generator)
        return self.likelihood_dist(nn.functional.one_hot(idx, self.code_size).float().flatten(-2).to(device)).mean

    def report(self, fit, data, out_dir: str) -> None:
        """The VAE's figures; latent.png shows the first two coordinates of the flattened q(z | x) probabilities."""
        image_report(self, fit, data, out_dir, lambda x: self.encode(x).softmax(-1).flatten(-2))
