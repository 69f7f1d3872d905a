"""Benchmark: annealed importance sampling of an MNIST VAE's log p(x), three parts in one process.

    python benchmarks/bench_ais.py --threads 2              # the full run (about 8 min on 2 cores)
    python benchmarks/bench_ais.py --epochs 5 --images 20 --is-samples 500 --bdmc-points 20 \
        --bdmc-steps 10,20 --timing-steps 10                # a quick look (about 2 min)

The VAE: 784-200-200-50 tanh encoder and decoder, Bernoulli likelihood, trained here with ``ppvae.fit``
for ``--epochs`` (default 50) on mnist5k's 4,000 training images (batch 100, Adam 1e-3: ``ppvae fit
vae``'s settings), or loaded from ``--run RUN_DIR`` (a ``ppvae fit vae`` run). Nothing is cached.

1. On ``--images`` mnist5k test images: importance sampling from the encoder at K = ``--is-samples``
   (default 5,000) against AIS from the encoder (``log_marginal(method="ais")``, C = ``--chains``
   chains, L = ``--leapfrog`` leapfrog steps, sigmoidal schedule) with T chosen so that the decoder
   evaluations per image, C (1 + (T - 1) L), equal K, and at 10x. Prints mean log p(x), the paired
   per-image differences AIS - IS, k-hat, and wall time. (An AIS evaluation is a decoder forward and
   backward pass, an IS one a forward pass only: the time column says what equal evaluations cost.)
2. BDMC (Grosse et al. 2015) on ``--bdmc-points`` points simulated from the trained VAE, for T in
   ``--bdmc-steps`` (a doubling series), stopping before a T whose predicted time passes
   ``--bdmc-budget`` seconds: the mean lower and upper bounds and the mean gap per T.
3. Time per AIS transition over (images x chains): ppvae's AIS against a hand-written plain-PyTorch
   AIS loop of the same network, schedule, leapfrog count, step-size rule and chains (the floor),
   alternated ``--repeats`` times; prints the medians and the ratio (goal: <= 1.3).

Goals (issue 16): AIS at or above IS at equal cost; BDMC mean gap < 1 nat at the largest T measured
within 10 minutes on 2 cores; ppvae's AIS at most 1.3x the floor per transition.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

import ppvae
from ppvae.evaluate.ais import sigmoid_schedule
from ppvae.evaluate.bdmc_bounds import bdmc
from ppvae.models import VAE


def train_or_load(args):
    if args.run:
        return ppvae.Fit.load(args.run)
    train = ppvae.load_dataset("mnist5k", split="train")
    t0 = time.perf_counter()
    fit = ppvae.fit(VAE(latent_dim=50, hidden=200, depth=2, activation="tanh"), train, epochs=args.epochs,
                    batch_size=100, lr=1e-3, seed=args.seed, progress=False)
    print(f"trained the VAE for {args.epochs} epochs in {time.perf_counter() - t0:.1f} s", flush=True)
    return fit


def steps_for(evaluations: int, chains: int, leapfrog: int) -> int:
    """T with C (1 + (T - 1) L) = evaluations (rounded down, at least 1)."""
    return max(1, (evaluations // chains - 1) // leapfrog + 1)


def part_is_vs_ais(fit, test, args):
    print(f"\n1. IS vs AIS on {len(test)} test images (encoder proposal)", flush=True)
    t0 = time.perf_counter()
    is_ = ppvae.log_marginal(fit, test, num_particles=args.is_samples, seed=args.seed, warn=False)
    t_is = time.perf_counter() - t0
    print(f"{'method':<34} {'mean log p(x)':>14} {'evals/img':>10} {'k-hat>0.7':>10} {'time s':>8}")
    print(f"{'IS K=' + str(args.is_samples):<34} {is_.mean:>14.3f} {args.is_samples:>10} "
          f"{is_.num_khat_over_0_7:>10} {t_is:>8.1f}", flush=True)
    for factor in (1, 10):
        T = steps_for(factor * args.is_samples, args.chains, args.leapfrog)
        t0 = time.perf_counter()
        ais = ppvae.log_marginal(fit, test, method="ais", num_steps=T, num_chains=args.chains,
                                 num_leapfrog=args.leapfrog, seed=args.seed, warn=False, progress=False)
        dt = time.perf_counter() - t0
        diff = ais.values - is_.values
        evals = args.chains * (1 + (T - 1) * args.leapfrog)
        name = f"AIS C={args.chains} T={T} L={args.leapfrog} ({factor}x)"
        # k-hat needs >= 25 weights per point (psis_khat): with fewer chains it is undefined
        khat = "n/a" if torch.isnan(ais.khat).all() else str(ais.num_khat_over_0_7)
        print(f"{name:<34} {ais.mean:>14.3f} {evals:>10} {khat:>10} {dt:>8.1f}   "
              f"AIS - IS: mean {float(diff.mean()):+.3f} +- {float(diff.std() / math.sqrt(len(diff))):.3f}, "
              f"AIS higher on {int((diff > 0).sum())}/{len(diff)}; accept {float(ais.accept_rate.mean()):.2f}",
              flush=True)


def part_bdmc(fit, args):
    series = [int(t) for t in args.bdmc_steps.split(",")]
    print(f"\n2. BDMC on {args.bdmc_points} simulated points, C={args.chains}, L={args.leapfrog}, encoder proposal, "
          f"budget {args.bdmc_budget:.0f} s", flush=True)
    print(f"{'T':>6} {'lower':>11} {'upper':>11} {'mean gap':>9} {'max gap':>8} {'time s':>8}")
    spent, per_step = 0.0, None
    data = ppvae.load_dataset("mnist5k", split="test")
    for T in series:
        if per_step is not None and spent + per_step * T > args.bdmc_budget:
            print(f"(stopping: T={T} would take about {per_step * T:.0f} s more, past the budget)")
            break
        t0 = time.perf_counter()
        res = bdmc(fit, data, num_points=args.bdmc_points, num_steps=T, num_chains=args.chains,
                   num_leapfrog=args.leapfrog, seed=args.seed, progress=False)
        dt = time.perf_counter() - t0
        spent, per_step = spent + dt, dt / T
        print(f"{T:>6} {res.mean_lower[0]:>11.3f} {res.mean_upper[0]:>11.3f} {res.mean_gap[0]:>9.3f} "
              f"{float(res.gap[0].max()):>8.3f} {dt:>8.1f}", flush=True)
    print(f"BDMC total {spent:.1f} s")


# -- the plain-PyTorch floor ------------------------------------------------------------------------
def plain_ais(encoder, decoder, x, chains, betas, leapfrog, step_size=0.1, target=0.65, rate=3.0):
    """Hand-written AIS from q(z | x) to p(x, z) with HMC, the same algorithm as ppvae.evaluate.ais.anneal with
    per-image step sizes adapted by log eps += rate (acceptance - target); returns log-weights (C, M)."""
    h = encoder(x)
    L = h.shape[-1] // 2
    loc, scale = h[..., :L], nn.functional.softplus(h[..., L:]) + 1e-3
    z = loc + scale * torch.randn(chains, *loc.shape)
    eps = torch.full((1, x.shape[0], 1), step_size)

    def both(z):
        z = z.detach().requires_grad_()
        with torch.enable_grad():
            li = (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
            logits = decoder(z)
            lt = -nn.functional.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)
            lt = lt + (-0.5 * z**2 - 0.5 * math.log(2 * math.pi)).sum(-1)
            gi, = torch.autograd.grad(li.sum(), z)
            gt, = torch.autograd.grad(lt.sum(), z)
        return li.detach(), lt.detach(), gi, gt

    li, lt, gi, gt = both(z)
    log_w = torch.zeros(z.shape[:2], dtype=torch.float64)
    T = len(betas) - 1
    for t in range(1, T + 1):
        log_w += (betas[t] - betas[t - 1]).item() * (lt.double() - li.double())
        if t == T:
            break
        b = betas[t].item()
        p0 = torch.randn_like(z)
        p = p0 + 0.5 * eps * ((1 - b) * gi + b * gt)
        zn = z
        for k in range(leapfrog):
            zn = zn + eps * p
            lin, ltn, gin, gtn = both(zn)
            p = p + (eps if k < leapfrog - 1 else 0.5 * eps) * ((1 - b) * gin + b * gtn)
        log_ratio = ((1 - b) * (lin - li) + b * (ltn - lt)).double() - 0.5 * (p.pow(2) - p0.pow(2)).sum(-1).double()
        acc = torch.log(torch.rand(log_ratio.shape, dtype=torch.float64)) < log_ratio
        a = acc.unsqueeze(-1)
        z, li, lt = torch.where(a, zn, z), torch.where(acc, lin, li), torch.where(acc, ltn, lt)
        gi, gt = torch.where(a, gin, gi), torch.where(a, gtn, gt)
        rate_ = acc.double().mean(0, keepdim=True).unsqueeze(-1)
        eps = (eps * torch.exp(rate * (rate_ - target))).clamp(1e-4, 10.0).float()
    return log_w


def part_timing(fit, test, args):
    T = args.timing_steps
    betas = sigmoid_schedule(T)
    model = fit.model
    enc, dec = model._nets[0], model._nets[1]
    for p in model.parameters():
        p.requires_grad_(False)
    x = test.x.reshape(len(test), -1)
    print(f"\n3. time per AIS transition: {len(test)} images x {args.chains} chains, L={args.leapfrog}, T={T}, "
          f"{args.repeats} alternating repeats", flush=True)
    ours, floor = [], []
    for r in range(args.repeats):
        torch.manual_seed(r)
        t0 = time.perf_counter()
        ppvae.log_marginal(fit, test, method="ais", num_steps=T, num_chains=args.chains, num_leapfrog=args.leapfrog,
                           chunk_size=len(test), seed=r, warn=False, progress=False)
        ours.append((time.perf_counter() - t0) / (T - 1))
        torch.manual_seed(r)
        t0 = time.perf_counter()
        with torch.no_grad():
            plain_ais(enc, dec, x, args.chains, betas, args.leapfrog)
        floor.append((time.perf_counter() - t0) / (T - 1))
    o, f = statistics.median(ours), statistics.median(floor)
    print(f"ppvae {1e3 * o:.1f} ms/transition, plain PyTorch {1e3 * f:.1f} ms/transition: ratio {o / f:.3f} "
          f"(per repeat: {', '.join(f'{a / b:.3f}' for a, b in zip(ours, floor, strict=True))})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", default=None, help="a `ppvae fit vae` run directory (default: train here)")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--is-samples", type=int, default=5000)
    ap.add_argument("--chains", type=int, default=16)
    ap.add_argument("--num-leapfrog", type=int, default=5)
    ap.add_argument("--bdmc-points", type=int, default=100)
    ap.add_argument("--bdmc-steps", default="25,50,100,200,400,800")
    ap.add_argument("--bdmc-budget", type=float, default=600.0, help="seconds")
    ap.add_argument("--timing-steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--parts", default="1,2,3", help="which parts to run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); settings: {vars(args)}")
    fit = train_or_load(args)
    test = ppvae.load_dataset("mnist5k", split="test").subset(torch.arange(args.images))
    parts = args.parts.split(",")
    if "1" in parts:
        part_is_vs_ais(fit, test, args)
    if "2" in parts:
        part_bdmc(fit, args)
    if "3" in parts:
        part_timing(fit, test, args)


if __name__ == "__main__":
    main()
