"""A model written from scratch and fitted with no other code: a mixture of Poissons.

Run:  python examples/custom_model.py

The story (20 lines): mixture weights w ~ Dirichlet(1), rates lambda_k ~ Gamma(2, 0.1), and for each
count x_i a component z_i ~ Categorical(w) (summed out by enumeration) and x_i ~ Poisson(lambda_z).
ppvae supplies the data plate, minibatch scaling, enumeration, guides, the trainer, the exact
per-point log-likelihood and the posterior over assignments.
"""

import pyro
import pyro.distributions as dist
import torch

import ppvae


@ppvae.register_model("poisson_mixture", "mixture of K Poisson distributions (example)")
class PoissonMixture(ppvae.Model, ppvae.Mixture):
    def __init__(self, K: int = 2):
        super().__init__()
        self.K = ppvae.check_int("K", K, low=1)

    def num_components(self):  # ppvae.Mixture: K exchangeable components, labels aligned across draws
        return self.K

    def forward(self, batch):
        weights = pyro.sample("weights", dist.Dirichlet(batch.x.new_ones(self.K)))
        rates = pyro.sample("rates", dist.Gamma(batch.x.new_full((self.K,), 2.0), 0.1).to_event(1))
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Categorical(weights))
            pyro.sample("obs", dist.Poisson(rates[z]), obs=batch.x[:, 0])

    def init_values(self, data, generator):
        q = torch.linspace(0.1, 0.9, self.K, dtype=data.x.dtype)
        return {"rates": torch.quantile(data.x[:, 0], q) + 0.5}


def simulate(n=400, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.rand(n, generator=gen) < 0.3
    rates = torch.where(z, torch.tensor(3.0), torch.tensor(20.0))
    return torch.poisson(rates, generator=gen).unsqueeze(-1)


def main(steps=500):
    counts = ppvae.Dataset(simulate(), name="poisson-sim", kind="counts")
    fit = ppvae.fit(PoissonMixture(K=2), counts, guide="auto_delta", steps=steps, lr=0.05, progress=False)
    values = fit.global_values(counts)
    print("weights", values["weights"].numpy().round(3), "rates", values["rates"].numpy().round(2))
    print("log-likelihood", round(fit.log_likelihood(counts).sum().item(), 3))
    return fit, counts


if __name__ == "__main__":
    main()
