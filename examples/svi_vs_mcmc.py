"""SVI against MCMC in three short acts (about a minute on a laptop core).

1. A Gaussian mixture on Old Faithful by EM, MAP (svi:auto_delta), mean-field and full-rank SVI and
   NUTS: one table (log-likelihoods, PSIS-LOO, posterior mean/sd, ESS/s, R-hat) and a figure.
2. The Normal-Gamma model, whose posterior is known exactly: NUTS recovers the dependence between mu
   and tau (the spread of mu shrinks as tau grows) that a mean-field guide cannot represent.
3. HMC over one data point's local latent with the model held fixed (here PPCA, where p(z | x) is
   known): the gold standard an amortized encoder is judged against.

    python examples/svi_vs_mcmc.py [--out runs/svi_vs_mcmc]
"""

import argparse

import torch

import ppvae
from ppvae.models import PPCA


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/svi_vs_mcmc")
    args = parser.parse_args()
    torch.set_num_threads(1)

    faithful = ppvae.load_dataset("faithful", standardize=True)
    table = ppvae.compare("gmm", faithful, "em,svi:auto_delta,svi:auto_normal,svi:auto_mvn,nuts",
                          hparams={"K": 2, "covariance": "diag"}, svi_steps=1000, svi_lr=0.02,
                          num_mcmc_draws=300, warmup=200, num_chains=2)
    paths = table.save(f"{args.out}/gmm")
    print(table.to_markdown())
    print("written:", ", ".join(paths.values()))

    x = torch.randn(12, 1, generator=torch.Generator().manual_seed(1)) * 1.5 + 0.5
    ng = ppvae.compare("normal_gamma", ppvae.Dataset(x, name="12 normal draws"),
                       "exact,svi:auto_normal,svi:auto_mvn,nuts",
                       svi_steps=1000, svi_lr=0.02, num_draws=2000, num_mcmc_draws=500, warmup=300)
    ng.save(f"{args.out}/normal_gamma")
    print(ng.to_markdown())

    gen = torch.Generator().manual_seed(0)
    ppca = PPCA(latent_dim=2).set_parameters(torch.randn(5, 2, generator=gen), torch.zeros(5), 0.7)
    point = torch.randn(5, generator=gen)
    run = ppvae.local_posterior(ppca, point, num_draws=1000, warmup=300, progress=False)
    z = run.flat_samples()["z"].reshape(-1, 2)
    mean, cov = ppca.exact_posterior(point[None])
    print("PPCA p(z | x): NUTS mean", z.mean(0).tolist(), "exact", mean[0].tolist())
    print("               NUTS cov ", torch.cov(z.T).flatten().tolist(), "exact", cov.flatten().tolist())


if __name__ == "__main__":
    main()
