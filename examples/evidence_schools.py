"""log p(X) of a hierarchical normal model three ways, against its closed form (about 20 s on one core).

Eight schools (Rubin 1981) with the between-school spread tau known::

    mu ~ N(0, s0^2),   theta_i ~ N(mu, tau^2),   y_i ~ N(theta_i, sigma_i^2),   i = 1..8,

so that y ~ N(0, s0^2 1 1^T + diag(tau^2 + sigma_i^2)) exactly. The script prints that, bridge sampling
from NUTS draws (``ppvae.log_evidence(run, data, method="bridge")``), AIS over mu and the eight thetas
from a mean-field guide (``method="ais"``) and from the NUTS draws, each with its standard error.

    python examples/evidence_schools.py [--samples 1000] [--warmup 500] [--steps 200] [--chains 64] [--seeds 8]
"""

import argparse

import pyro
import pyro.distributions as dist
import torch

import ppvae

Y = [28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]
SIGMA = [15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]


class HierarchicalNormal(ppvae.Model):
    """mu ~ N(0, s0^2), theta_i ~ N(mu, tau^2), y_i ~ N(theta_i, sigma_i^2), tau known; x = (y, sigma)."""

    def __init__(self, s0: float = 5.0, tau: float = 4.0):
        super().__init__()
        self.s0, self.tau = s0, tau

    def forward(self, batch):
        x = batch.x
        mu = pyro.sample("mu", dist.Normal(x.new_tensor(0.0), self.s0))
        with self.data_plate(batch):
            theta = pyro.sample("theta", dist.Normal(mu, self.tau))
            pyro.sample("y", dist.Normal(theta, x[:, 1]), obs=x[:, 0])

    def log_evidence_exact(self, x) -> float:
        """log N(y; 0, s0^2 1 1^T + diag(tau^2 + sigma_i^2)): theta and mu integrated out in closed form."""
        y, s = x[:, 0].double(), x[:, 1].double()
        cov = self.s0 ** 2 * torch.ones(len(y), len(y), dtype=torch.float64) + torch.diag(self.tau ** 2 + s ** 2)
        return float(dist.MultivariateNormal(torch.zeros_like(y), cov).log_prob(y))


def schools() -> torch.Tensor:
    return torch.tensor([Y, SIGMA], dtype=torch.float64).T


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=1000, help="NUTS draws")
    parser.add_argument("--warmup", type=int, default=500, help="NUTS warm-up steps")
    parser.add_argument("--steps", type=int, default=200, help="AIS annealing steps")
    parser.add_argument("--chains", type=int, default=64, help="AIS chains")
    parser.add_argument("--seeds", type=int, default=1, help="repeat AIS from the guide over this many seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    x, model = schools(), HierarchicalNormal()
    exact = model.log_evidence_exact(x)
    run = ppvae.run_mcmc(model, x, num_draws=args.samples, warmup=args.warmup, init="prior", jit=True, seed=0,
                         progress=False)
    fit = ppvae.fit(model, x, guide="auto_normal", steps=1000, lr=0.05, seed=0, progress=False)
    rows = [("bridge (NUTS draws)", ppvae.log_evidence(run, x, method="bridge")),
            ("ais (mean-field guide)", ppvae.log_evidence(fit, x, method="ais", num_steps=args.steps,
                                                          num_chains=args.chains)),
            ("ais (NUTS draws)", ppvae.log_evidence(run, x, method="ais", num_steps=args.steps,
                                                    num_chains=args.chains))]
    print(f"{'exact':24s} {exact:.4f}")
    for name, est in rows:
        print(f"{name:24s} {est.value:.4f} +- {est.stderr:.4f}   (error {est.value - exact:+.4f}, "
              f"{abs(est.value - exact) / est.stderr:.1f} SE)")
    if args.seeds > 1:  # is one run's standard error the spread over runs?
        runs = [ppvae.log_evidence(fit, x, method="ais", num_steps=args.steps, num_chains=args.chains, seed=s)
                for s in range(args.seeds)]
        err = torch.tensor([r.value - exact for r in runs])
        se = torch.tensor([r.stderr for r in runs])
        print(f"ais (guide) over {args.seeds} seeds: mean error {float(err.mean()):+.4f}, spread "
              f"{float(err.std()):.4f}, mean SE {float(se.mean()):.4f}, z {[round(float(z), 1) for z in err / se]}")


if __name__ == "__main__":
    main()
