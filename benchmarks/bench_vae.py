"""Test log p(x) of ppvae's VAE vs a plain-PyTorch VAE with the same network, trained the same way.

Network (Burda et al. 2015, "Importance weighted autoencoders", one stochastic layer): encoder
784-200-200-(50 + 50) tanh, decoder 50-200-200-784 tanh, Bernoulli likelihood; both trained on
mnist5k's 4,000 fixed-binarized training images with batch 100, one sample per point, Adam 1e-3, the
same number of epochs, the same estimator (``--elbo trace``: estimator A, Kingma & Welling 2013 eq. 6;
``meanfield``: estimator B, eq. 7). Then log p(x) on the 1,000 test images is estimated by importance
sampling with K samples from each model's encoder (Burda et al. 2015, eq. 8): ppvae through
``ppvae.evaluate.marginal.log_marginal``, the reference by a hand-written log-mean-exp. The quality bar: ppvae
within 1 nat of the reference.

    python benchmarks/bench_vae.py [--epochs 50] [--num-samples 5000] [--threads 2] [--seed 0] [--gap-images 100]
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from bench_vae_speed import PlainVAE  # noqa: E402  (the same plain network as the speed benchmark)
from torch import nn

import ppvae
from ppvae.evaluate.marginal import log_marginal
from ppvae.models import VAE


def train_plain(x, epochs, seed, analytic_kl, bs=100):
    torch.manual_seed(seed)
    net = PlainVAE(x.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    n = len(x)
    for _ in range(epochs):
        perm = torch.randperm(n)
        for b in range(math.ceil(n / bs)):
            xb = x[perm[b * bs : (b + 1) * bs]]
            loss = net.neg_elbo(xb, analytic_kl) * (n / len(xb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net


@torch.no_grad()
def plain_log_px(net, x, num_samples, chunk=500, seed=0):
    """Per-image log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q(z | x), in float64 for the sum."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    normal = torch.distributions.Normal(0.0, 1.0)
    for xi in x:
        e = net.enc(xi.unsqueeze(0))
        loc, scale = e[:, : net.latent], nn.functional.softplus(e[:, net.latent :]) + 1e-3
        lw = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            eps = torch.randn(k, net.latent, generator=gen)
            z = loc + scale * eps
            log_px_z = -nn.functional.binary_cross_entropy_with_logits(
                net.dec(z), xi.expand(k, -1), reduction="none").sum(-1)
            log_q = (normal.log_prob(eps) - scale.log()).sum(-1)
            lw.append(log_px_z + normal.log_prob(z).sum(-1) - log_q)
        lw = torch.cat(lw).double()
        out.append(torch.logsumexp(lw, 0) - math.log(num_samples))
    return torch.stack(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--num-particles", type=int, default=5000)
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--elbo", default="trace", choices=("trace", "meanfield"))
    p.add_argument("--gap-images", type=int, default=0,
                   help="also split ppvae's inference gap (Cremer et al. 2018) on this many test images")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    test = ppvae.load_dataset("mnist5k", split="test").subset(torch.arange(args.test_size))

    t0 = time.perf_counter()
    fit = ppvae.fit(VAE(latent_dim=50, hidden=200, depth=2, activation="tanh"), train, epochs=args.epochs,
                    batch_size=100, lr=1e-3, seed=args.seed, elbo=args.elbo, progress=False)
    t1 = time.perf_counter()
    print(f"ppvae trained in {t1 - t0:.1f} s", flush=True)
    net = train_plain(train.x, args.epochs, args.seed, args.elbo == "meanfield")
    t2 = time.perf_counter()
    print(f"plain PyTorch trained in {t2 - t1:.1f} s", flush=True)
    ours = log_marginal(fit, test, num_particles=args.num_samples, seed=args.seed, warn=False)
    t3 = time.perf_counter()
    print(f"ppvae log p(x) {ours.mean:.3f} in {t3 - t2:.1f} s", flush=True)
    ref = plain_log_px(net, test.x, args.num_samples, seed=args.seed)
    t4 = time.perf_counter()
    ref_mean, ref_se = ref.mean().item(), (ref.std() / math.sqrt(len(ref))).item()
    print(f"mnist5k, 784-200-200-50 tanh Bernoulli VAE, batch 100, Adam 1e-3, {args.epochs} epochs, elbo={args.elbo}, "
          f"seed {args.seed}; test log p(x) at K={args.num_samples} on {len(test)} images")
    print(f"ppvae:         {ours.mean:9.3f} +- {ours.stderr:.3f} nats  (ELBO {ours.elbo_mean:.3f}; "
          f"train {t1 - t0:.1f} s, evaluate {t3 - t2:.1f} s; k-hat > 0.7 for {ours.num_khat_over_0_7})")
    print(f"plain PyTorch: {ref_mean:9.3f} +- {ref_se:.3f} nats  (train {t2 - t1:.1f} s, evaluate {t4 - t3:.1f} s)")
    paired = ours.values - ref
    diff, diff_se = paired.mean().item(), (paired.std() / math.sqrt(len(paired))).item()
    print(f"difference ppvae - plain: {diff:+.3f} +- {diff_se:.3f} nats per image (paired over the same images) "
          f"-> {'within' if abs(diff) <= 1 else 'NOT within'} 1 nat")
    if args.gap_images:
        t5 = time.perf_counter()
        gaps = ppvae.inference_gaps(fit, test.subset(torch.arange(args.gap_images)), num_particles=args.num_samples,
                                    steps=500, lr=0.01, seed=args.seed).to_dict()
        print(f"inference gaps on {args.gap_images} test images (K={args.num_samples}, per-datapoint q* after 500 "
              f"Adam steps, {time.perf_counter() - t5:.0f} s): log p(x) {gaps['log_px']:.3f}, ELBO(q*) "
              f"{gaps['elbo_optimal']:.3f}, ELBO(amortized) {gaps['elbo_amortized']:.3f}; approximation gap "
              f"{gaps['approximation_gap']:.3f}, amortization gap {gaps['amortization_gap']:.3f} nats")


if __name__ == "__main__":
    main()
