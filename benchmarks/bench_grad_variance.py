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

The same fixed parameters also compare the path-derivative estimators of ppvae/infer/svi/estimators.py:
``stl`` (Roeder et al. 2017, eq. 8: the score term of the guide's parameters dropped; same ELBO gradient as A and
B in expectation, so its variance is compared with A's), and ``iwae`` (Burda et al. 2015) against ``iwae_dreg``
(Tucker et al. 2019, eq. 6) at K = ``--k`` particles per draw: both unbiased for the gradient of the same
importance-weighted bound, so their means must agree and their variances compare directly (the IWAE pair's
variances are of a different objective's gradient, K draws each, not comparable with the ELBO group's).

    python benchmarks/bench_grad_variance.py [--draws 500] [--epochs 5] [--k 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

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


def pair(a, b, name_a, name_b) -> float:
    """Print the variance comparison of two unbiased estimators of the same gradient; return Var_a / Var_b."""
    var_a, var_b = a.var(0), b.var(0)
    keep = var_b > 0
    ratio_total = (var_a.sum() / var_b.sum()).item()
    mean_gap = ((a.mean(0) - b.mean(0)).norm() / b.mean(0).norm()).item()
    print(f"  {name_a} vs {name_b}: total variance {var_a.sum().item():.4e} vs {var_b.sum().item():.4e}, "
          f"ratio {ratio_total:.3f}; per-coordinate ratio median {(var_a[keep] / var_b[keep]).median().item():.3f}, "
          f"fraction of coordinates with {name_a} > {name_b}: {(var_a[keep] > var_b[keep]).double().mean().item():.3f}")
    print(f"    relative distance of the mean gradients |mean_{name_a} - mean_{name_b}| / |mean_{name_b}|: "
          f"{mean_gap:.3f} (Monte Carlo error; both unbiased for the same gradient)")
    return ratio_total


def compare(model, batch, draws: int, label: str, k: int = 5) -> dict:
    results, seconds = {}, {}
    for name, particles in (("trace", 1), ("meanfield", 1), ("stl", 1), ("iwae", k), ("iwae_dreg", k)):
        _, elbo = ppvae.make_elbo(name, has_discrete=False, max_plate_nesting=1, num_particles=particles)
        elbo.differentiable_loss(model, model.guide, batch)  # a first call may trace the guide once more
        pyro.set_rng_seed(1)
        t0 = time.perf_counter()
        results[name] = encoder_grads(model, elbo, batch, draws)
        seconds[name] = (time.perf_counter() - t0) / draws
    print(f"{label}: {draws} draws, {results['trace'].shape[1]} encoder coordinates; seconds per draw "
          + ", ".join(f"{n} {s * 1e3:.1f} ms" for n, s in seconds.items()) + f" (load {os.getloadavg()[0]:.1f})")
    ratios = {"A/B": pair(results["trace"], results["meanfield"], "A", "B"),
              "A/stl": pair(results["trace"], results["stl"], "A", "stl"),
              "iwae/iwae_dreg": pair(results["iwae"], results["iwae_dreg"], f"iwae(K={k})", f"iwae_dreg(K={k})")}
    return ratios


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=5, help="particles per draw of iwae and iwae_dreg")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    batch = train.batch(torch.arange(100))
    untrained = VAE()
    ppvae.fit(untrained, train, steps=1, lr=1e-12, batch_size=100, seed=args.seed, progress=False)
    compare(untrained, batch, args.draws, "at initialization", args.k)
    trained = VAE()
    ppvae.fit(trained, train, epochs=args.epochs, batch_size=100, lr=1e-3, seed=args.seed, progress=False)
    ratios = compare(trained, batch, args.draws, f"after {args.epochs} epochs of training (estimator A)", args.k)
    print("gradient variance ratios (encoder, trained): " + ", ".join(f"{n} {r:.3f}" for n, r in ratios.items()))


if __name__ == "__main__":
    main()
