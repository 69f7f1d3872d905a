"""Seconds per epoch: ppvae's trainer vs a plain-PyTorch VAE loop, side by side in one process.

The network is Burda et al.'s (2015) one-stochastic-layer MNIST VAE: 784-200-200-50 tanh encoder and
50-200-200-784 decoder, Bernoulli likelihood, batch 100, one sample, Adam 1e-3, on mnist5k's 4,000
training images (40 steps per epoch). Both loops use the same estimator (``--elbo trace``:
estimator A, log p(x|z) + log p(z) - log q(z|x) at one z; ``meanfield``: the analytic KL, eq. 7).
ppvae steps torch's fused Adam kernel and replays the objective traced once per batch shape
(``jit=True``, what ``ppvae fit vae`` does; ``--no-jit`` for the eager Pyro path). The plain loop uses
torch's default Adam (the tutorial loop) unless ``--plain-adam fused`` gives it the same kernel (the
floor for everything but the optimizer).

Timing: ``torch.set_num_threads`` fixed; every repeat runs ``ppvae.fit`` for ``1 + measured`` epochs
and, between two of its epochs (in a callback, time excluded), one epoch of the plain loop, so the two
alternate epoch by epoch under the same machine load; the first epoch of each (validation, parameter
capture, tracing -- about 0.1 s -- and warm-up) is dropped, and the medians and the median of
adjacent-epoch ratios are compared. On a shared machine the absolute numbers are noisy; the ratio of
interleaved medians is the figure to read.

    python benchmarks/bench_vae_speed.py [--repeats 5] [--epochs 4] [--threads 1] [--elbo trace|meanfield]
                                         [--plain-adam default|fused] [--no-jit]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from _timing import print_ratios, run_repeats  # benchmarks/_timing.py, beside this script
from torch import nn

import ppvae
from ppvae.models import VAE


class PlainVAE(nn.Module):
    def __init__(self, d=784, h=200, latent=50):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(), nn.Linear(h, d))
        self.latent = latent

    def neg_elbo(self, x, analytic_kl: bool):
        """-ELBO summed over the batch, with the same N/M scaling as ppvae's data plate."""
        e = self.enc(x)
        loc, scale = e[:, : self.latent], nn.functional.softplus(e[:, self.latent :]) + 1e-3
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        rec = nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        if analytic_kl:
            kl = 0.5 * (loc**2 + scale**2 - 1).sum(-1) - scale.log().sum(-1)
        else:
            kl = (-0.5 * eps**2 - scale.log()).sum(-1) - (-0.5 * z**2).sum(-1)
        return (rec + kl).sum()


class PlainLoop:
    """A plain PyTorch training loop over ``x`` run one epoch at a time."""

    def __init__(self, x, seed, analytic_kl, bs=100, fused=False):
        torch.manual_seed(seed)
        self.x, self.bs, self.analytic_kl = x, bs, analytic_kl
        self.net = PlainVAE(x.shape[1])
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3, **({"fused": True} if fused else {}))

    def epoch(self) -> float:
        start = time.perf_counter()
        n = len(self.x)
        perm = torch.randperm(n)
        for b in range(math.ceil(n / self.bs)):
            xb = self.x[perm[b * self.bs : (b + 1) * self.bs]]
            loss = self.net.neg_elbo(xb, self.analytic_kl) * (n / len(xb))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
        return time.perf_counter() - start


def interleaved(data, epochs, seed, elbo, plain_fused=False, jit=False):
    """One ``ppvae.fit`` of ``epochs + 1`` epochs; at the end of each of its epochs, one epoch of the
    plain loop runs inside a callback (its time excluded from ppvae's). The first epoch of each
    (validation, parameter capture, warm-up) is dropped. Returns (ppvae times, plain times)."""
    per_epoch = math.ceil(len(data) / 100)
    plain = PlainLoop(data.x, seed, elbo == "meanfield", fused=plain_fused)
    ours, theirs, clock = [], [], {"start": None}

    def between_epochs(trainer):
        if trainer.step % per_epoch:
            return
        now = time.perf_counter()
        if trainer.step > per_epoch:
            ours.append(now - clock["start"])
        t = plain.epoch()
        if trainer.step > per_epoch:
            theirs.append(t)
        clock["start"] = time.perf_counter()

    ppvae.fit(VAE(), data, epochs=epochs + 1, batch_size=100, lr=1e-3, seed=seed, elbo=elbo,
              callbacks=[between_epochs], progress=False, jit=jit)
    return ours, theirs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4, help="measured epochs per repeat")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--elbo", default="trace", choices=("trace", "meanfield"))
    p.add_argument("--plain-adam", default="default", choices=("default", "fused"),
                   help="the plain loop's Adam: torch's default (the tutorial loop) or the fused kernel ppvae uses")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=True,
                   help="ppvae.fit(..., jit=True), the traced objective (default, as `ppvae fit vae`); --no-jit: eager")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = ppvae.load_dataset("mnist5k", split="train")
    ours, plain = run_repeats(
        args.repeats, lambda r: interleaved(data, args.epochs, r, args.elbo, args.plain_adam == "fused", args.jit),
        "s/epoch")
    print(f"threads={args.threads} elbo={args.elbo} jit={args.jit} plain Adam={args.plain_adam} "
          f"epochs measured={len(ours)} each")
    print_ratios(ours, plain, "s/epoch", "epoch")


if __name__ == "__main__":
    main()
