"""The notes' experiment (003 sec. 3.6): estimator A against estimator B with a 128-dimensional code, test log p(x)
curves over training, several seeds.

Estimator A is ``trace`` (Monte Carlo KL, Kingma & Welling 2013 eq. 6), estimator B ``meanfield`` (the Gaussian KL
in closed form, eq. 7); both are unbiased for the same ELBO gradient, B with lower variance in the KL part
(benchmarks/bench_grad_variance.py measures it). Network: the Burda et al. (2015) MLP with z_dim = ``--z-dim``
(784-200-200-128 tanh encoder and decoder, Bernoulli likelihood) on mnist5k (4,000 fixed-binarized training
images), batch 100, Adam 1e-3, ``--epochs`` epochs, seeds ``--seeds`` (the same seed gives A and B the same
initial weights and minibatch order). At the end of each epoch in ``--checkpoints`` the test log p(x) is estimated
by importance sampling from the encoder with K = ``--curve-particles`` on the first ``--test-size`` test images
(Burda et al. 2015, eq. 8; ``log_marginal``, seed 0, the training RNG state put back afterwards), and at the end
with K = ``--num-particles`` and Pareto k-hat. Prints the curves, the final table and the paired difference
A - B per seed; saves the figure ``--figure``. The defaults are sized for the shared 2-core machine (10 epochs,
3 seeds, 50 test images: ~25 minutes at load average ~18); the notes ask for long training, which these
defaults are not.

    python benchmarks/bench_a_vs_b.py [--epochs 10] [--checkpoints 1 2 5 10] [--test-size 50] [--seeds 0 1 2]
        [--num-particles 5000] [--figure a_vs_b.png]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import pyro
import torch

import ppvae
from ppvae import Callback
from ppvae.evaluate.marginal import log_marginal
from ppvae.models import VAE

ESTIMATORS = {"A": "trace", "B": "meanfield"}


class Curve(Callback):
    """Test log p(x) by IS at the end of the chosen epochs, the training RNG state put back afterwards."""

    def __init__(self, test, checkpoints, num_particles):
        self.test, self.checkpoints, self.num_particles, self.points = test, set(checkpoints), num_particles, []

    def on_epoch_end(self, trainer) -> None:
        epoch = trainer.step // trainer.steps_per_epoch
        if epoch not in self.checkpoints:
            return
        state = pyro.util.get_rng_state()
        lm = log_marginal((trainer.model, trainer.guide), self.test, num_particles=self.num_particles, seed=0,
                          warn=False)
        pyro.util.set_rng_state(state)
        self.points.append((epoch, lm.mean))


def run(estimator, seed, args, train, test) -> dict:
    curve = Curve(test, args.checkpoints, args.curve_particles)
    t0 = time.perf_counter()
    fit = ppvae.fit(VAE(latent_dim=args.z_dim, hidden=200, depth=2, activation="tanh"), train, epochs=args.epochs,
                    batch_size=100, lr=1e-3, seed=seed, elbo=ESTIMATORS[estimator], callbacks=[curve],
                    progress=False, check_convergence=False)
    t1 = time.perf_counter()
    final = log_marginal(fit, test, num_particles=args.num_particles, seed=0, warn=False)
    return {"curve": curve.points, "final": final, "train_s": t1 - t0, "eval_s": time.perf_counter() - t1}


def figure(results, args, path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    for estimator, colour in (("A", "tab:blue"), ("B", "tab:orange")):
        runs = results[estimator]
        for r in runs:
            ax.plot(*zip(*r["curve"], strict=True), color=colour, alpha=0.35, lw=1, marker="o", ms=3)
        epochs = [e for e, _ in runs[0]["curve"]]
        mean = [statistics.mean(r["curve"][i][1] for r in runs) for i in range(len(epochs))]
        ax.plot(epochs, mean, color=colour, lw=2.5, label=f"{estimator} ({ESTIMATORS[estimator]}), mean of "
                f"{len(runs)} seeds")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"test log p(x), IS K={args.curve_particles} (nats)")
    ax.set_title(f"estimator A vs B, z_dim={args.z_dim}, mnist5k ({args.test_size} test images)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--checkpoints", type=int, nargs="+", default=[1, 2, 5, 10])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--z-dim", type=int, default=128)
    p.add_argument("--curve-particles", type=int, default=1000)
    p.add_argument("--num-particles", type=int, default=5000)
    p.add_argument("--test-size", type=int, default=50)
    p.add_argument("--train-size", type=int, default=4000, help="fewer training images: for a quick check only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--figure", default="a_vs_b.png")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    train = train.subset(torch.arange(args.train_size)) if args.train_size < len(train) else train
    test = ppvae.load_dataset("mnist5k", split="test").subset(torch.arange(args.test_size))
    results: dict[str, list] = {"A": [], "B": []}
    for seed in args.seeds:
        for estimator in ("A", "B"):
            r = run(estimator, seed, args, train, test)
            results[estimator].append(r)
            print(f"seed {seed} {estimator} ({ESTIMATORS[estimator]}): curve "
                  f"{', '.join(f'ep {e}: {v:.2f}' for e, v in r['curve'])}; final K={args.num_particles}: "
                  f"{r['final'].mean:.2f} +- {r['final'].stderr:.2f} (k-hat>0.7: {r['final'].num_khat_over_0_7}); "
                  f"train {r['train_s']:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    print(f"\nmnist5k, 784-200-200-{args.z_dim} tanh Bernoulli VAE, batch 100, Adam 1e-3, {args.epochs} epochs, "
          f"seeds {args.seeds}; test log p(x) on the first {args.test_size} test images")
    for estimator in ("A", "B"):
        runs = results[estimator]
        finals = [r["final"].mean for r in runs]
        print(f"{estimator} ({ESTIMATORS[estimator]:9s}): final K={args.num_particles} mean "
              f"{statistics.mean(finals):.2f} (per seed {', '.join(f'{v:.2f}' for v in finals)})")
    wins = 0
    for i, seed in enumerate(args.seeds):
        diff = results["A"][i]["final"].values - results["B"][i]["final"].values  # paired over the same images
        se = (diff.std() / math.sqrt(len(diff))).item()
        wins += diff.mean().item() > 0
        print(f"seed {seed}: A - B = {diff.mean().item():+.3f} +- {se:.3f} nats per image")
    print(f"A ahead in {wins} of {len(args.seeds)} seeds")
    figure(results, args, args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
