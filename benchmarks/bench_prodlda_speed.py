"""Milliseconds per step: ppvae's ProdLDA trainer vs the same network in plain PyTorch, side by side in one process.

The network and loss are ProdLDA's (models/prodlda.py, Srivastava & Sutton 2017) on reuters (395 stories,
V = 4,258 words), K = 20: encoder V-100-100 softplus MLP, dropout 0.2, batch-normalized mu and log sigma^2
(no affine); decoder softmax(BN(dropout(theta) beta)), multinomial likelihood of the counts, analytic
Gaussian KL to the Laplace prior, likelihood and KL scaled by N/M; batch 200 (two batches per epoch: 200 and
195 stories), Adam lr 0.002, betas (0.99, 0.999), torch's fused kernel in both loops. ppvae runs
``ppvae.fit(ProdLDA(), ...)`` with the model's ``train_defaults`` (meanfield ELBO, objective traced: jit).

The plain loop is the floor: the same tensor operations written once by hand, each batch's loss from
``log_softmax`` (no log of a softmax) and without the multinomial coefficient log(n_d! / prod_w c_dw!)
(constant in the parameters: no gradient). ``--encoder sparse`` (the default since ProdLDA's
``sparse_input=True``) feeds the first encoder layer only the nonzero counts of each document
(``embedding_bag`` with the counts as weights: the same sums as the dense product, about 4% of its
multiplications on this corpus); the plain loop then uses the same sparse layer, so the ratio stays like for
like. ``--encoder dense`` measures both with the dense ``nn.Linear`` (``ProdLDA(sparse_input=False)``).

Timing: ``torch.set_num_threads`` fixed (default 1); ``ppvae.fit`` runs ``(1 + chunks) * steps`` steps and,
after every ``steps`` of its steps (in a callback, time excluded), ``steps`` steps of the plain loop, so the two
alternate under the same machine load; the first chunk of each (validation, tracing, warm-up) is dropped and
the medians and the median of adjacent-chunk ratios are compared. ``--profile`` prints torch.profiler's table
of one chunk of ppvae's steps instead.

    python benchmarks/bench_prodlda_speed.py [--repeats 3] [--chunks 6] [--steps 20] [--threads 1]
                                             [--encoder sparse|dense] [--profile] [--npmi 0,1,...]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from _timing import print_ratios, run_repeats  # benchmarks/_timing.py, beside this script
from torch import nn

import ppvae
import ppvae.infer.svi.config
from ppvae.models import ProdLDA
from ppvae.models.prodlda import SparseLinear, laplace_dirichlet_prior


class PlainProdLDA(nn.Module):
    """ProdLDA's encoder and decoder as one plain module; ``neg_elbo`` is the scaled negative ELBO."""

    def __init__(self, V, K=20, hidden=100, dropout=0.2, sparse=True):
        super().__init__()
        self.fc1 = SparseLinear(V, hidden) if sparse else nn.Linear(V, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc_mu, self.fc_logvar = nn.Linear(hidden, K), nn.Linear(hidden, K)
        self.bn_mu, self.bn_logvar = nn.BatchNorm1d(K, affine=False), nn.BatchNorm1d(K, affine=False)
        self.drop = nn.Dropout(dropout)
        self.beta = nn.Linear(K, V, bias=False)
        self.bn_words = nn.BatchNorm1d(V, affine=False)
        mu0, sigma0 = laplace_dirichlet_prior(torch.ones(K))
        self.register_buffer("mu0", mu0)
        self.register_buffer("logvar0", 2 * sigma0.log())

    def neg_elbo(self, x, scale):
        h = self.drop(nn.functional.softplus(self.fc2(nn.functional.softplus(self.fc1(x)))))
        mu, logvar = self.bn_mu(self.fc_mu(h)), self.bn_logvar(self.fc_logvar(h))
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
        log_probs = nn.functional.log_softmax(self.bn_words(self.beta(self.drop(nn.functional.softmax(z, -1)))), -1)
        rec = (x * log_probs).sum(-1)
        kl = 0.5 * ((logvar.exp() + (mu - self.mu0) ** 2) / self.logvar0.exp() - 1 + self.logvar0 - logvar).sum(-1)
        return scale * (kl - rec).sum()


class PlainLoop:
    """The plain loop over ppvae's own batch order (``ppvae.infer.svi.config.epoch_order``),
    run ``n`` steps at a time."""

    def __init__(self, x, seed, sparse, bs=200):
        torch.manual_seed(seed)
        self.x, self.bs, self.seed, self.step = x, bs, seed, 0
        self.net = PlainProdLDA(x.shape[1], sparse=sparse)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.002, betas=(0.99, 0.999), fused=True)

    def run(self, n) -> float:
        start = time.perf_counter()
        num, per_epoch = len(self.x), math.ceil(len(self.x) / self.bs)
        for _ in range(n):
            epoch, b = divmod(self.step, per_epoch)
            index = ppvae.infer.svi.config.epoch_order(num, self.seed, epoch)[b * self.bs : (b + 1) * self.bs]
            loss = self.net.neg_elbo(self.x[index], num / len(index))
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.step += 1
        return time.perf_counter() - start


def interleaved(data, chunks, steps, seed, sparse):
    """One ``ppvae.fit`` of ``(chunks + 1) * steps`` steps; after each ``steps`` of them, ``steps`` plain
    steps in a callback (time excluded from ppvae's). The first chunk of each is dropped. Returns ms per
    step of ppvae's chunks and of the plain ones."""
    plain = PlainLoop(data.x.float(), seed, sparse)
    ours, theirs, clock = [], [], {"start": None}

    def between(trainer):
        if trainer.step % steps:
            return
        now = time.perf_counter()
        if trainer.step > steps:
            ours.append((now - clock["start"]) / steps * 1e3)
        t = plain.run(steps)
        if trainer.step > steps:
            theirs.append(t / steps * 1e3)
        clock["start"] = time.perf_counter()

    defaults = {k: v for k, v in ProdLDA.train_defaults.items() if k != "steps"}
    ppvae.fit(ProdLDA(topics=20, sparse_input=sparse), data, guide="model", steps=(chunks + 1) * steps, seed=seed,
              callbacks=[between], progress=False, **defaults)
    return ours, theirs


def profile(data, steps, sparse):
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    defaults = {k: v for k, v in ProdLDA.train_defaults.items() if k != "steps"}
    state = {}

    def between(trainer):
        if trainer.step == steps:
            state["prof"] = torch_profile(activities=[ProfilerActivity.CPU])
            state["prof"].__enter__()
        elif trainer.step == 2 * steps:
            state["prof"].__exit__(None, None, None)

    ppvae.fit(ProdLDA(topics=20, sparse_input=sparse), data, guide="model", steps=2 * steps, seed=0,
              callbacks=[between], progress=False, **defaults)
    print(state["prof"].key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def npmi(data, seeds, sparse):
    """bench_topics.py's ProdLDA run (the model's train_defaults, 1,000 steps, ``seed``) and its NPMI (top 10,
    reference = the training documents) per seed, then their mean and sd."""
    from ppvae.evaluate.topics import topic_summary

    values = []
    defaults = {k: v for k, v in ProdLDA.train_defaults.items() if k not in ("elbo", "steps")}
    for seed in seeds:
        prod = ProdLDA(topics=20, sparse_input=sparse)
        start = time.perf_counter()
        fit = ppvae.fit(prod, data, guide="model", elbo="meanfield", steps=1000, seed=seed, progress=False, **defaults)
        seconds = time.perf_counter() - start
        values.append(topic_summary(prod.topic_word(fit), data.x, data.meta["vocab"])["npmi_mean"])
        print(f"seed {seed}: NPMI {values[-1]:+.4f} ({seconds:.1f} s)", flush=True)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    print(f"encoder={'sparse' if sparse else 'dense'} seeds {seeds}: NPMI mean {statistics.mean(values):+.4f} "
          f"(sd {sd:.4f})")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--chunks", type=int, default=6, help="measured chunks per repeat")
    p.add_argument("--steps", type=int, default=20, help="steps per chunk")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--encoder", default="sparse", choices=("sparse", "dense"),
                   help="first encoder layer of both: sparse (embedding_bag over the nonzero counts) or dense")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of ppvae's steps instead")
    p.add_argument("--npmi", default=None, help="comma-separated seeds: NPMI of bench_topics.py's ProdLDA runs instead")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = ppvae.load_dataset("reuters")
    sparse = args.encoder == "sparse"
    if args.npmi:
        npmi(data, [int(v) for v in args.npmi.split(",")], sparse)
        return
    if args.profile:
        profile(data, args.steps, sparse)
        return
    ours, plain = run_repeats(args.repeats, lambda r: interleaved(data, args.chunks, args.steps, r, sparse),
                              "ms/step", ".2f")
    print(f"ProdLDA K=20 on reuters, batch 200, threads={torch.get_num_threads()}, encoder={args.encoder}, "
          f"{len(ours)} chunks of {args.steps} steps each")
    print_ratios(ours, plain, "ms/step", "chunk", ".2f")


if __name__ == "__main__":
    main()
