"""A VAE on real MNIST digits with ppvae: fit, estimate test log p(x), split the inference gap, draw figures.

    python examples/vae_mnist.py [--epochs 20] [--out runs/vae_example]

The same from the command line:

    ppvae fit vae --data mnist5k --epochs 50 --out runs/vae        # batch 100, Adam 1e-3 (the VAE's defaults)
    ppvae evaluate runs/vae --num-particles 5000

Steps:
1. ``ppvae.fit(VAE(), train, ...)``: the VAE's own amortized encoder is its guide (``guide="auto"``);
   ``elbo="trace"`` is Kingma & Welling's estimator A, ``"meanfield"`` estimator B; ``beta`` and
   ``kl_warmup_steps`` weight the KL term; ``load_dataset("mnist5k", binarize="dynamic")`` redraws the
   binary pixels every batch.
2. ``ppvae.evaluate.marginal.log_marginal(fit, test, num_particles=K)``: per-image importance-sampled log p(x)
   (Burda et al. 2015), with the ELBO, ESS and Pareto k-hat.
3. ``ppvae.evaluate.gaps.inference_gaps(fit, test)``: log p(x) - ELBO = approximation gap + amortization gap
   (Cremer et al. 2018).
4. ``model.report(fit, train, out)``: reconstructions, prior samples, latent scatter, loss curves.
"""

from __future__ import annotations

import argparse
import json
import os

import torch

import ppvae
from ppvae.evaluate.gaps import inference_gaps
from ppvae.evaluate.marginal import log_marginal
from ppvae.models import VAE


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--num-particles", type=int, default=1000)
    p.add_argument("--gap-images", type=int, default=100)
    p.add_argument("--out", default="runs/vae_example")
    args = p.parse_args(argv)

    train = ppvae.load_dataset("mnist5k", split="train")
    test = ppvae.load_dataset("mnist5k", split="test")
    model = VAE(latent_dim=50, hidden=200, depth=2, activation="tanh", likelihood="bernoulli")
    fit = ppvae.fit(model, train, epochs=args.epochs, batch_size=100, lr=1e-3, elbo="trace", seed=0,
                    callbacks=model.fit_callbacks(train))
    print(fit)

    lm = log_marginal(fit, test, num_particles=args.num_samples)
    print(f"test log p(x) at K={args.num_samples}: {lm.mean:.2f} +- {lm.stderr:.2f} nats (ELBO {lm.elbo_mean:.2f})")

    gaps = inference_gaps(fit, test.subset(torch.arange(args.gap_images)), num_particles=args.num_samples)
    print("inference gaps (nats per image):", json.dumps(gaps.to_dict(), indent=1))

    os.makedirs(args.out, exist_ok=True)
    fit.save(args.out)
    model.report(fit, train, args.out)
    print(f"run and figures written to {args.out}")


if __name__ == "__main__":
    main()
