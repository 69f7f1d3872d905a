"""Simulation-based calibration at larger S than the tests, and what it costs (simulations per minute).

Runs ``ppvae.comparison.calibration.sbc`` on:

* Bayesian linear regression (examples/blr.py, noise sd 0.5 known, 12 points with two covariates correlated 0.98):
  ``exact`` (the closed-form posterior) and the KL-optimal mean-field Gaussian in closed form (PRML eq. 10.13; its
  share of extreme ranks is predicted exactly, printed beside the observed share); then ``svi:auto_normal``
  (``--steps`` Adam steps at lr 0.05 per simulation);
* Normal-Gamma (20 points): ``exact`` and ``nuts`` (one chain, 150 warm-up steps);
* a two-component 1-D GMM (40 points): ``em`` (a point estimate, so every parameter must fail).

Each block prints the verdicts, the wall time and simulations per minute at ``--cores`` worker processes (one
thread each), with the load average. The ECDF figure of the closed-form regression block is written to
docs/_static/sbc_blr_ecdf.png (``--figure``).

    python benchmarks/bench_sbc.py --sims 200 --svi-sims 20 --nuts-sims 10 --steps 300 --cores 2
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import shutil
import tempfile
import time

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from scipy.stats import binom, norm

import ppvae
from ppvae.comparison.calibration import sbc

ROOT = pathlib.Path(__file__).resolve().parents[1]
BLR = ppvae.import_model(str(ROOT / "examples" / "blr.py:BayesianLinearRegression"))
blr_module = __import__(BLR.__module__, fromlist=["exact"])


class ExactBLR(BLR, ppvae.ExactPosterior):
    """examples/blr.py with its closed-form posterior as a guide (as in tests/comparison/test_sbc.py)."""

    def posterior_guide(self, x, y=None):
        mean, cov = (t.float() for t in blr_module.exact(self, x, y)[:2])
        d = x.shape[1]
        k = torch.linalg.solve(cov[:d, :d], cov[:d, d])
        v = cov[d, d] - cov[d, :d] @ k

        def guide(batch):
            w = pyro.sample("w", dist.MultivariateNormal(mean[:d], cov[:d, :d]))
            pyro.sample("b", dist.Normal(mean[d] + ((w - mean[:d]) * k).sum(-1), v.sqrt()))

        return guide


def mean_field_optimum(model, data, num_draws, seed):
    mean, cov = blr_module.exact(model, data.x, data.y)[:2]
    sd = torch.linalg.inv(cov).diagonal().rsqrt()
    g = torch.Generator().manual_seed(seed)
    theta = mean + sd * torch.randn(num_draws, 3, generator=g, dtype=torch.float64)
    return {"w": theta[:, :2].float(), "b": theta[:, 2].float()}


def covariates(n=12, eps=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g)
    return ppvae.Dataset(torch.cat([z, z + eps * torch.randn(n, 1, generator=g)], 1), torch.zeros(n))


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def block(title, model, data, methods, sims, cores, **options):
    start = time.perf_counter()
    res = sbc(model, data, methods, num_sims=sims, cores=cores, **options)
    wall = time.perf_counter() - start
    names = ", ".join(m if isinstance(m, str) else m.__name__ for m in methods)
    print(f"\n## {title}: {names}; {sims} simulations in {wall:.1f} s = {60 * sims / wall:.1f} simulations/min "
          f"at cores={cores} ({load()})")
    print(res.to_markdown())
    return res


def predicted_tail_share(model, data, L=99):
    """P(rank in {0,1,2} u {L-2..L}) per parameter for the mean-field optimum (see tests/comparison/test_sbc.py)."""
    _, cov = blr_module.exact(model, data.x, data.x[:, 0])[:2]
    lam = torch.linalg.inv(cov).diagonal()
    z = np.linspace(-8, 8, 4001)
    out = {}
    for j, key in enumerate(("w[0]", "w[1]", "b")):
        u = norm.cdf(math.sqrt(float(cov[j, j] * lam[j])) * z)
        out[key] = float(np.trapezoid((binom.cdf(2, L, u) + binom.sf(L - 3, L, u)) * norm.pdf(z), z))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sims", type=int, default=200, help="simulations of the closed-form methods")
    p.add_argument("--svi-sims", type=int, default=60, help="simulations with an SVI fit each")
    p.add_argument("--nuts-sims", type=int, default=60, help="simulations with a NUTS run each")
    p.add_argument("--steps", type=int, default=500, help="SVI steps per simulation")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--figure", default=str(ROOT / "docs" / "_static" / "sbc_blr_ecdf.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    data = covariates()
    model = ExactBLR(noise_sd=0.5)
    model.setup(data)
    out = tempfile.mkdtemp(prefix="bench_sbc_")
    try:
        res = block("Bayesian linear regression, closed forms", model, data, ["exact", mean_field_optimum], args.sims,
                    args.cores, out=out)
        if args.figure:
            os.makedirs(os.path.dirname(args.figure), exist_ok=True)
            shutil.copy(os.path.join(out, "sbc_ecdf.png"), args.figure)
            print(f"wrote {args.figure} (the ECDF figure of this block)")
    finally:
        shutil.rmtree(out, ignore_errors=True)
    predicted = predicted_tail_share(model, data)
    for key, p_tail in predicted.items():
        r = res.ranks["mean_field_optimum"][key]
        obs = float(((r <= 2) | (r >= 97)).mean())
        print(f"mean-field {key}: extreme-rank share {obs:.3f} observed, {p_tail:.3f} predicted "
              f"(binomial sd {math.sqrt(p_tail * (1 - p_tail) / len(r)):.3f}); uniform ranks give 0.060")
    block("Bayesian linear regression, SVI", model, data, ["svi:auto_normal"], args.svi_sims, args.cores,
          svi_steps=args.steps, svi_lr=0.05)
    x = torch.randn(20, 1, generator=torch.Generator().manual_seed(1))
    block("Normal-Gamma", "normal_gamma", ppvae.Dataset(x), ["exact", "nuts"], args.nuts_sims, args.cores,
          warmup=150)
    gx = torch.randn(40, 1, generator=torch.Generator().manual_seed(0))
    block("GMM K=2", ppvae.build_model("gmm", K=2, covariance="diag"), ppvae.Dataset(gx), ["em"], 40, args.cores,
          em_restarts=2)


if __name__ == "__main__":
    main()
