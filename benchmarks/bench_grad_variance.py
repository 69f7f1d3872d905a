"""Gradient variance of the encoder: estimator A (Monte Carlo KL) vs estimator B (analytic KL).

Kingma & Welling (2013, sec. 2.3) propose estimator B, L_B = -KL(q(z|x) || p(z)) + 1/L sum_l log p(x|z_l)
(eq. 7), expecting it to have lower variance than estimator A, L_A = 1/L sum_l [log p(x, z_l) - log q(z_l|x)]
(eq. 6), because the KL term is computed exactly. Here, at FIXED parameters (the 784-200-200-50 tanh
Bernoulli VAE after ``--epochs`` of training on mnist5k, and at initialization), we draw R independent
single-sample gradients of each estimator on one fixed batch of 100 images (``Trace_ELBO`` = A,
``TraceMeanField_ELBO`` = B, through ppvae's objectives registry) and report, over the encoder's
parameters, the total variance sum_j Var[g_j] and the median over coordinates of Var_A[g_j] / Var_B[g_j].
Both estimators are unbiased for the same gradient, so their means must agree within Monte Carlo error
(checked and printed: the relative distance of the two mean gradients).

    python benchmarks/bench_grad_variance.py [--draws 500] [--epochs 5] [--threads 2]
"""

from __future__ import annotations

import argparse

import pyro
import torch

import ppvae
from ppvae.models import VAE


def encoder_grads(model, elbo, batch, draws: int) -> torch.Tensor:
    """(draws, P) gradients of -ELBO with respect to the encoder's parameters, one draw each."""
    params = [p for p in model.encoder.parameters()]
    out = torch.empty(draws, sum(p.numel() for p in params), dtype=torch.float64)
    with pyro.validation_enabled(False):
        for r in range(draws):
            loss = elbo.differentiable_loss(model, model.guide, batch)
            grads = torch.autograd.grad(loss, params)
            out[r] = torch.cat([g.reshape(-1) for g in grads]).double()
    return out


def compare(model, batch, draws: int, label: str) -> float:
    results = {}
    for name in ("trace", "meanfield"):
        _, elbo = ppvae.make_elbo(name, has_discrete=False, max_plate_nesting=1)
        pyro.set_rng_seed(1)
        results[name] = encoder_grads(model, elbo, batch, draws)
    a, b = results["trace"], results["meanfield"]
    var_a, var_b = a.var(0), b.var(0)
    keep = var_b > 0
    ratio_total = (var_a.sum() / var_b.sum()).item()
    mean_gap = ((a.mean(0) - b.mean(0)).norm() / b.mean(0).norm()).item()
    print(f"{label}: {draws} draws, {a.shape[1]} encoder coordinates")
    print(f"  total variance  A {var_a.sum().item():.4e}   B {var_b.sum().item():.4e}   ratio A/B {ratio_total:.3f}")
    print(f"  per-coordinate ratio Var_A/Var_B: median {(var_a[keep] / var_b[keep]).median().item():.3f}, "
          f"fraction of coordinates with A > B: {(var_a[keep] > var_b[keep]).double().mean().item():.3f}")
    print(f"  relative distance of the mean gradients |mean_A - mean_B| / |mean_B|: {mean_gap:.3f} "
          f"(Monte Carlo error; both estimators are unbiased)")
    return ratio_total


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    batch = train.batch(torch.arange(100))
    untrained = VAE()
    ppvae.fit(untrained, train, steps=1, lr=1e-12, batch_size=100, seed=args.seed, progress=False)
    compare(untrained, batch, args.draws, "at initialization")
    trained = VAE()
    ppvae.fit(trained, train, epochs=args.epochs, batch_size=100, lr=1e-3, seed=args.seed, progress=False)
    ratio = compare(trained, batch, args.draws, f"after {args.epochs} epochs of training (estimator A)")
    print(f"gradient variance ratio A/B (encoder, trained): {ratio:.3f}")


if __name__ == "__main__":
    main()
