"""Gradient variance and bias of the discrete-code estimators at fixed parameters, against the exact gradient.

Model: ``DiscreteVAE(num_codes=4, code_size=4)`` (4^4 = 256 joint codes, so ``enum`` -- TraceEnum_ELBO summing the
guide's codes -- gives the exact gradient of the ELBO), 784-200-200 tanh networks, Bernoulli likelihood, on one
fixed batch of 100 mnist5k training images. Parameters: at initialization and after ``--epochs`` of ``relaxed``
training (batch 100, Adam 1e-3). At those FIXED parameters we draw R single-sample gradients of -ELBO with respect
to the encoder's parameters for each estimator (ppvae.infer.discrete_elbos, through the objectives registry):
``relaxed`` and ``relaxed_st`` at tau = 1 and 0.5, ``reinforce`` with its neural baseline (first fitted for
``--baseline-steps`` Adam steps at the fixed model parameters, as during training) and without a baseline. Reported
over the encoder's P parameters: the total variance sum_j Var[g_j] of one draw, the squared bias ||E g - g_exact||^2
(less its Monte Carlo part, sum_j Var[g_j] / R), the mean squared error of one draw (variance + bias^2), each
relative to ||g_exact||^2, and the cosine between the mean gradient and the exact one. ``enum`` is the
zero-variance reference (two draws must agree exactly).

    python benchmarks/bench_discrete_grad_variance.py [--draws 200] [--epochs 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import time

import pyro
import torch

import ppvae
from ppvae.infer.svi import make_elbo
from ppvae.models import DiscreteVAE

NAMES = [("relaxed", {"temperature": 1.0, "temperature_min": 1.0, "anneal_rate": 0.0}, "relaxed tau=1"),
         ("relaxed", {"temperature": 0.5, "temperature_min": 0.5, "anneal_rate": 0.0}, "relaxed tau=0.5"),
         ("relaxed_st", {"temperature": 1.0, "temperature_min": 1.0, "anneal_rate": 0.0}, "relaxed_st tau=1"),
         ("relaxed_st", {"temperature": 0.5, "temperature_min": 0.5, "anneal_rate": 0.0}, "relaxed_st tau=0.5"),
         ("reinforce", {"baseline": "neural"}, "reinforce, neural baseline"),
         ("reinforce", {"baseline": "none"}, "reinforce, no baseline")]


def objective(name: str, **options):
    return make_elbo(name, has_discrete=True, max_plate_nesting=1, **options)[1]


def grad(model, elbo, fn, batch) -> torch.Tensor:
    params = list(model.encoder.parameters())
    loss = elbo.differentiable_loss(fn, model.guide, batch)
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()


def fit_baseline(model, elbo, batch, steps: int) -> None:
    """Fit reinforce's baseline network alone (the model's parameters fixed) by its own loss term."""
    elbo.differentiable_loss(model, model.guide, batch)  # builds the network
    opt = torch.optim.Adam(elbo.net.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad()
        elbo.differentiable_loss(model, model.guide, batch).backward()  # model grads accumulate, unused
        opt.step()
    model.zero_grad(set_to_none=True)


def compare(model, batch, draws: int, baseline_steps: int, label: str) -> None:
    with pyro.validation_enabled(False):
        enum = objective("enum")
        exact = grad(model, enum, model.enumerated(), batch)
        again = grad(model, enum, model.enumerated(), batch)
        norm2 = exact.pow(2).sum().item()
        print(f"\n{label}: P = {exact.numel()} encoder parameters, ||g_exact||^2 = {norm2:.4g}; enum: two draws "
              f"differ by {float((exact - again).abs().max()):.2g} (zero variance)", flush=True)
        print(f"{'estimator':<28} {'Var/|g|^2':>10} {'bias^2/|g|^2':>13} {'MSE/|g|^2':>10} {'cosine':>7} {'s':>5}")
        for name, options, text in NAMES:
            t0 = time.perf_counter()
            elbo = objective(name, **options)
            if name == "reinforce" and options["baseline"] == "neural":
                fit_baseline(model, elbo, batch, baseline_steps)
            g = torch.stack([grad(model, elbo, model, batch) for _ in range(draws)])
            var = g.var(0).sum().item()
            mean = g.mean(0)
            bias2 = max((mean - exact).pow(2).sum().item() - var / draws, 0.0)
            cos = torch.nn.functional.cosine_similarity(mean, exact, dim=0).item()
            print(f"{text:<28} {var / norm2:>10.4g} {bias2 / norm2:>13.4g} {(var + bias2) / norm2:>10.4g} "
                  f"{cos:>7.3f} {time.perf_counter() - t0:>5.0f}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--baseline-steps", type=int, default=300)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    batch = train.batch(torch.arange(100))
    print(f"dvae 4x4, 784-200-200 tanh, one batch of 100 mnist5k images, {args.draws} draws per estimator; "
          f"load average {os.getloadavg()[0]:.1f}")
    torch.manual_seed(0)
    model = DiscreteVAE(num_codes=4, code_size=4)
    model.setup(train)
    compare(model, batch, args.draws, args.baseline_steps, "at initialization")
    fit = ppvae.fit(DiscreteVAE(num_codes=4, code_size=4), train, elbo="relaxed", epochs=args.epochs, seed=0,
                    progress=False)
    compare(fit.model, batch, args.draws, args.baseline_steps, f"after {args.epochs} epochs of relaxed training")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
