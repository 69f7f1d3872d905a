"""Test log p(x) of the discrete-code VAE (``dvae``) trained by each estimator of its discrete code.

Model: ``DiscreteVAE(num_codes=20, code_size=10)`` (Jang et al. 2017's 20 x 10-way code), the Gaussian VAE's
784-200-200 tanh networks (encoder to 20 x 10 logits, decoder from the 200 concatenated one-hots), Bernoulli
likelihood. Data: mnist5k, 4,000 fixed-binarized training images; batch 100, one sample per point, Adam 1e-3,
``--epochs`` epochs (the Gaussian-VAE rows of benchmarks/bench_grad_estimators.py use the same budget: 10 epochs,
seeds 0 and 1, the first 100 test images, K = 5,000). Estimators (ppvae.infer.discrete_elbos): ``relaxed``
(Gumbel-Softmax, tau_t = max(0.5, exp(-r t)) per step, r = ``--anneal-rate`` 1.7e-3 so that tau reaches
0.5 at the end of the 400 steps of 10 epochs), ``relaxed_st`` (straight-through, same schedule),
``reinforce`` (TraceGraph_ELBO with a neural baseline); ``enum`` is impossible for 10^20 joint codes.
Every model is evaluated the same way: log p(x) on the test images by importance sampling with K draws from its
UNRELAXED categorical encoder (``ppvae.log_marginal``), with the ELBO (mean log-weight) and PSIS k-hat.

    python benchmarks/bench_discrete_vae.py [--epochs 10] [--seeds 0 1] [--num-particles 5000] [--test-size 100]
        [--elbos relaxed relaxed_st reinforce] [--anneal-rate 1.7e-3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import ppvae
from ppvae.models import DiscreteVAE


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--num-particles", type=int, default=5000)
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--num-codes", type=int, default=20)
    p.add_argument("--code-size", type=int, default=10)
    p.add_argument("--anneal-rate", type=float, default=1.7e-3)
    p.add_argument("--elbos", nargs="+", default=["relaxed", "relaxed_st", "reinforce"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: two spin-waiting threads are much "
                   "slower than one on a loaded 2-core machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    test = ppvae.load_dataset("mnist5k", split="test").subset(torch.arange(args.test_size))
    print(f"mnist5k dvae {args.num_codes}x{args.code_size}, 784-200-200 tanh, batch 100, Adam 1e-3, "
          f"{args.epochs} epochs; test log p(x) by IS (unrelaxed guide) at K={args.num_particles} on "
          f"{len(test)} test images; load average {os.getloadavg()[0]:.1f}", flush=True)
    print(f"{'elbo':<11} {'seed':>4} {'log p(x)':>10} {'+- se':>7} {'ELBO':>9} {'k-hat>0.7':>9} {'max k-hat':>9} "
          f"{'train s':>8} {'eval s':>7} {'load':>5}", flush=True)
    rows = {}
    for elbo in args.elbos:
        for seed in args.seeds:
            t0 = time.perf_counter()
            model = DiscreteVAE(num_codes=args.num_codes, code_size=args.code_size, hidden=200, depth=2)
            options = {"anneal_rate": args.anneal_rate} if elbo.startswith("relaxed") else {}
            fit = ppvae.fit(model, train, elbo=elbo, epochs=args.epochs, batch_size=100, lr=1e-3, seed=seed,
                            elbo_options=options, progress=False)
            t1 = time.perf_counter()
            lm = ppvae.log_marginal(fit, test, num_particles=args.num_particles, seed=0, warn=False)
            t2 = time.perf_counter()
            rows.setdefault(elbo, []).append(lm.mean)
            print(f"{elbo:<11} {seed:>4} {lm.mean:>10.2f} {lm.stderr:>7.2f} {lm.elbo_mean:>9.2f} "
                  f"{lm.num_khat_over_0_7:>9d} {float(lm.khat.max()):>9.2f} {t1 - t0:>8.0f} {t2 - t1:>7.0f} "
                  f"{os.getloadavg()[0]:>5.1f}", flush=True)
    for elbo, values in rows.items():
        t = torch.tensor(values)
        spread = f" (seeds {', '.join(f'{v:.2f}' for v in values)})" if len(values) > 1 else ""
        print(f"{elbo:<11} mean over seeds {t.mean():.2f}{spread}")


if __name__ == "__main__":
    main()
