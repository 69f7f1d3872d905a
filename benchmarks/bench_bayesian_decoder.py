"""Test log p(x) of the VAE with a Bayesian decoder (Kingma & Welling 2013, app. F) on mnist5k, and the VAE on
half-missing test images (log p(x_obs) and completion).

Protocol (the mnist5k log p(x) table's): 784-200-200-50 tanh Bernoulli VAE, 4,000 fixed-binarized training images,
batch 100, one sample per point (``elbo="trace"``), Adam 1e-3, ``--epochs`` epochs (10: the budget a 2-core machine
under load 13 allows), ``jit=True``; test = the first ``--test-size`` (100) test images; estimator seed 0.

``--part bayes``: ``VAE(bayesian_decoder=True, prior_scale=1)``: q(theta) mean-field Gaussian over the decoder's
weights, the weight KL entering each step with weight M/N (once per epoch). Test log p(x | D) on the test
images by nested importance sampling, ``--num-draws`` S draws theta_s ~ q(theta) x ``--num-particles`` K draws
z ~ q(z | x) each (S K = 5,000 joint weights per image; ``ppvae.log_marginal(..., num_draws=S)``), with the Pareto
k-hat of the pooled weights; with ``--plugin`` also log p(x | theta = posterior mean) at the same S K.

``--part missing``: a point-decoder VAE trained on the full training images; on the test images with the bottom
half (rows 14-27) missing: log p(x_obs) by IS (K = ``--num-particles-missing``) beside log p(x) of the full images,
and completion of the first ``--impute-points`` images: the mean of ``fit.impute``'s S = 100 posterior predictive
draws (z ~ q(z | x_obs)) and ``ppvae.impute_weighted`` (self-normalized IS, K as above), scored by the Bernoulli
log-likelihood per missing pixel (probabilities clamped to [1e-3, 1 - 1e-3]) and the accuracy of thresholding at 0.5,
beside the training pixel means; the figure shows input / weighted mean / one predictive draw / truth.

    python benchmarks/bench_bayesian_decoder.py --part bayes --seeds 0 1 --threads 1
    python benchmarks/bench_bayesian_decoder.py --part missing --epochs 5 --threads 1 --figure completion.png
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

import ppvae
from ppvae.models import VAE


def train(train_data, epochs: int, seed: int, bayesian: bool):
    model = VAE(latent_dim=50, hidden=200, depth=2, activation="tanh", bayesian_decoder=bayesian, prior_scale=1.0)
    return ppvae.fit(model, train_data, epochs=epochs, batch_size=100, lr=1e-3, seed=seed, elbo="trace",
                     jit=True, progress=False, check_convergence=False)


def row(lm) -> dict:
    return {"mean": lm.mean, "stderr": lm.stderr, "mc_stderr": lm.mc_stderr_mean, "elbo": lm.elbo_mean,
            "khat_max": lm.khat_max, "khat_over_0_7": lm.num_khat_over_0_7, "ess_mean": lm.ess_mean,
            "num_particles": lm.num_particles}


def part_bayes(args, train_data, test) -> list[dict]:
    out = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        fit = train(train_data, args.epochs, seed, bayesian=True)
        t1 = time.perf_counter()
        lm = ppvae.log_marginal(fit, test, num_particles=args.num_particles, num_draws=args.num_draws, seed=0,
                                warn=False)
        t2 = time.perf_counter()
        plug = None
        if args.plugin:  # the plug-in log p(x | theta = E_q theta), the same S K weights from q(z | x)
            means = {f"decoder.{k}": v.detach() for k, v in fit.model.decoder_weights.mean().items()}
            plug = row(ppvae.log_marginal(fit, test, num_particles=args.num_particles * args.num_draws, seed=0,
                                          warn=False, global_values=means))
        res = {"part": "bayes", "seed": seed, "epochs": args.epochs, "train_s": t1 - t0, "eval_s": t2 - t1,
               "weight_kl": float(fit.model.decoder_weights.kl()), "log_px_given_D": row(lm),
               "log_px_at_posterior_mean": plug, "load": os.getloadavg()[0]}
        print(json.dumps(res), flush=True)
        out.append(res)
    return out


def part_missing(args, train_data, test) -> dict:
    t0 = time.perf_counter()
    fit = train(train_data, args.epochs, args.seeds[0], bayesian=False)
    t1 = time.perf_counter()
    mask = torch.ones(len(test), 28, 28, dtype=torch.bool)
    mask[:, 14:] = False
    masked = ppvae.Dataset(test.x, name="mnist5k-test-bottom-half-missing", kind=test.kind, meta=test.meta,
                           mask=mask.reshape(test.x.shape))
    K = args.num_particles_missing
    obs = ppvae.log_marginal(fit, masked, num_particles=K, seed=0, warn=False)
    full = ppvae.log_marginal(fit, test, num_particles=K, seed=0, warn=False)
    t2 = time.perf_counter()
    sub = masked.subset(torch.arange(args.impute_points))
    imp = fit.impute(sub, num_draws=100, seed=0)
    miss = ~sub.mask
    truth = test.x[: args.impute_points]  # the complete images (the masked data set holds 0 at missing pixels)
    weighted = ppvae.impute_weighted(fit, sub, num_particles=K, seed=0)

    def loglik(mean):  # Bernoulli log-likelihood per missing pixel of a completion's probabilities
        p = mean.clamp(1e-3, 1 - 1e-3).expand_as(truth)
        return float((truth * p.log() + (1 - truth) * (1 - p).log())[miss].mean())

    def accuracy(mean):
        return float(((mean.expand_as(truth) > 0.5).float() == truth)[miss].float().mean())

    completions = {"predictive_draws_mean": imp["mean"], "weighted_is": weighted["mean"],
                   "train_pixel_means": train_data.x.mean(0, keepdim=True)}
    res = {"part": "missing", "seed": args.seeds[0], "epochs": args.epochs, "train_s": t1 - t0, "eval_s": t2 - t1,
           "log_px_obs": row(obs), "log_px_full": row(full), "impute_points": args.impute_points,
           "missing_pixel_loglik": {k: loglik(v) for k, v in completions.items()},
           "missing_pixel_accuracy": {k: accuracy(v) for k, v in completions.items()},
           "weighted_ess_mean": float(weighted["ess"].mean()), "load": os.getloadavg()[0]}
    print(json.dumps(res), flush=True)
    if args.figure:
        n = 8
        ppvae.plots.plot_imputations(truth[:n], sub.mask[:n], weighted["mean"][:n], imp["draws"][0, :n], args.figure)
        print(f"wrote {args.figure}")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=("bayes", "missing"), default="bayes")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--num-draws", type=int, default=50, help="S draws of the decoder weights from q(theta)")
    p.add_argument("--num-particles", type=int, default=100, help="K draws of z per weight draw (S K = 5,000)")
    p.add_argument("--num-particles-missing", type=int, default=1000)
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--impute-points", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--figure", default=None)
    p.add_argument("--plugin", action="store_true", help="also log p(x | theta = posterior mean)")
    p.add_argument("--out", default=None, help="also write the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train_data = ppvae.load_dataset("mnist5k", split="train", binarize="fixed")
    test = ppvae.load_dataset("mnist5k", split="test", binarize="fixed").subset(torch.arange(args.test_size))
    print(f"load average {os.getloadavg()}", flush=True)
    res = part_bayes(args, train_data, test) if args.part == "bayes" else part_missing(args, train_data, test)
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
