"""Benchmark: per-image log p(x) of an MNIST-sized VAE by importance sampling, three ways in one process.

    python benchmarks/bench_log_marginal.py            # 1,000 test images, K = 1,000
    python benchmarks/bench_log_marginal.py --quick    # 100 images, K = 200

VAE 784-200-200-50 (encoder and decoder MLPs, Bernoulli likelihood; untrained weights: the cost does
not depend on them). log p(x_i) ~ log (1/K) sum_k p(x_i | z_k) p(z_k) / q(z_k | x_i), z_k ~ q(z | x_i)
(Burda et al. 2015, eq. 8). Compared, on the same model, data and chunk size:

(a) the floor: the same weights hand-written in vectorized PyTorch (no diagnostics), fused as tightly
    as we could (a') and the same written with ``torch.distributions`` densities, as the model is;
(b) ``pyro.infer.Importance`` (one model/guide trace per sample in Python) on a few images, scaled;
(c) ``ppvae.log_marginal`` (vectorized particle plate; also ESS, PSIS k-hat and ELBO per image).
(a) and (c) draw the same standard normals from the same seed, so their estimates coincide.

Prints seconds per 1,000 images, the ratios (c)/(a) (goal: <= 1.2) and (b)/(c), the largest
difference between (a) and (c), and the peak resident memory after each phase
(``resource.getrusage``, the process-wide high-water mark).
"""

from __future__ import annotations

import argparse
import math
import resource
import time

import pyro
import pyro.distributions as dist
import torch
from torch import nn

import ppvae

D, H, L = 784, 200, 50


class BenchVAE(ppvae.Model):
    """z ~ N(0, I_50); x ~ Bernoulli(logits = decoder(z)); the encoder is the model's guide."""

    def __init__(self):
        super().__init__()
        act = nn.Softplus
        self.decoder = nn.Sequential(nn.Linear(L, H), act(), nn.Linear(H, H), act(), nn.Linear(H, D))
        self.encoder = nn.Sequential(nn.Linear(D, H), act(), nn.Linear(H, H), act(), nn.Linear(H, 2 * L))

    def forward(self, batch):
        with self.data_plate(batch):
            z = pyro.sample("z", dist.Normal(batch.x.new_zeros(L), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=batch.x)

    def encode(self, x):
        loc, raw = self.encoder(x).chunk(2, -1)
        return loc, nn.functional.softplus(raw) + 1e-4

    def guide(self, batch):
        loc, scale = self.encode(batch.x)
        with self.data_plate(batch):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


@torch.no_grad()
def floor(model: BenchVAE, x: torch.Tensor, K: int, chunk: int, densities: bool = False) -> torch.Tensor:
    """(a) Hand-written vectorized log-mean-exp of the weights, float64 accumulation. Fused: the
    Bernoulli term as -sum(BCE) (the negation after the pixel sum). ``densities=True``: the same
    weights written with ``torch.distributions`` (Bernoulli / Normal ``log_prob``), as the model does."""
    out = []
    for start in range(0, len(x), chunk):
        xb = x[start:start + chunk]
        loc, scale = model.encode(xb)
        z = loc + scale * torch.randn((K,) + loc.shape)
        logits = model.decoder(z)
        if densities:
            log_lik = dist.Bernoulli(logits=logits).log_prob(xb).sum(-1)
            log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        else:
            bce = nn.functional.binary_cross_entropy_with_logits(logits, xb.expand_as(logits), reduction="none")
            log_lik = -bce.sum(-1)
            log_prior = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
        log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
        lw = (log_lik + log_prior - log_q).double()
        out.append(torch.logsumexp(lw, 0) - math.log(K))
    return torch.cat(out)


def pyro_importance(model: BenchVAE, x: torch.Tensor, K: int) -> torch.Tensor:
    """(b) pyro.infer.Importance, one image at a time (it gives one number per data set)."""
    values = []
    for i in range(len(x)):
        batch = ppvae.Batch(x[i:i + 1], None, None, 1)
        with torch.no_grad(), pyro.validation_enabled(False):
            posterior = pyro.infer.Importance(model, model.guide, num_samples=K).run(batch)
            values.append(float(posterior.get_log_normalizer()))
    return torch.tensor(values, dtype=torch.float64)


def _timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 images, K = 200, Importance on 1 image")
    parser.add_argument("--images", type=int, default=None)
    parser.add_argument("--num-particles", type=int, default=None)
    parser.add_argument("--chunk-size", type=int, default=50)
    parser.add_argument("--importance-images", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=None, help="timed runs of (a), (a'), (c); best is kept")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    n = args.images or (100 if args.quick else 1000)
    K = args.num_samples or (200 if args.quick else 1000)
    n_imp = args.importance_images or (1 if args.quick else 3)
    args.repeat = args.repeat or (3 if args.quick else 1)
    data = ppvae.load_dataset("mnist5k", split="test", binarize="fixed").subset(range(n))
    torch.manual_seed(0)
    model = BenchVAE()
    print(f"VAE {D}-{H}-{H}-{L}, Bernoulli; {n} mnist5k test images, K = {K}, chunk {args.chunk_size}, "
          f"{torch.get_num_threads()} thread(s); peak RSS at start {peak_mib():.0f} MiB")
    ppvae.log_marginal((model, model.guide), data.subset(range(2)), num_particles=K, chunk_size=2)  # warm up (imports)
    floor(model, data.x[:2], K, 2)

    runs = {"a": [], "a2": [], "c": []}
    for _ in range(args.repeat):  # interleaved, best of --repeat: the machine may be shared
        torch.manual_seed(1)
        a, t = _timed(lambda: floor(model, data.x, K, args.chunk_size))
        runs["a"].append(t)
        torch.manual_seed(1)
        a2, t = _timed(lambda: floor(model, data.x, K, args.chunk_size, densities=True))
        runs["a2"].append(t)
        c, t = _timed(lambda: ppvae.log_marginal((model, model.guide), data, num_particles=K,
                                                 chunk_size=args.chunk_size, seed=1, warn=False))
        runs["c"].append(t)
    t_floor, t_floor2, t_ppvae = (min(runs[k]) for k in ("a", "a2", "c"))
    print(f"(a) plain PyTorch floor : {t_floor:8.2f} s  ({1000 * t_floor / n:8.2f} s per 1,000 images)  "
          f"mean {a.mean():.3f}; runs {[round(v, 2) for v in runs['a']]}")
    print(f"(a') torch.distributions: {t_floor2:8.2f} s  ({1000 * t_floor2 / n:8.2f} s per 1,000 images)  "
          f"mean {a2.mean():.3f}; runs {[round(v, 2) for v in runs['a2']]}")
    print(f"(c) ppvae.log_marginal  : {t_ppvae:8.2f} s  ({1000 * t_ppvae / n:8.2f} s per 1,000 images)  "
          f"mean {c.mean:.3f} +- {c.mc_stderr_mean:.3f} (MC); ESS mean {c.ess_mean:.1f}, k-hat max {c.khat_max:.2f}; "
          f"runs {[round(v, 2) for v in runs['c']]}; peak RSS {peak_mib():.0f} MiB")

    t = time.perf_counter()
    b = pyro_importance(model, data.x[:n_imp], K)
    t_imp = (time.perf_counter() - t) / n_imp * n
    print(f"(b) pyro Importance     : {t_imp:8.2f} s  ({1000 * t_imp / n:8.2f} s per 1,000 images; {n_imp} image(s) "
          f"timed and scaled)  first values {[round(v, 2) for v in b.tolist()]} vs ppvae "
          f"{[round(v, 2) for v in c.values[:n_imp].tolist()]}; peak RSS {peak_mib():.0f} MiB")
    print(f"ratio ppvae / floor      = {t_ppvae / t_floor:.3f}   (goal <= 1.2)")
    print(f"ratio ppvae / floor (a') = {t_ppvae / t_floor2:.3f}   (the same densities as the model's)")
    print(f"ratio Importance / ppvae = {t_imp / t_ppvae:.1f}")
    # both draw eps ~ N(0, 1) of shape (K, chunk, 50) per chunk from the same seed, so the weights coincide
    diff = float((c.values - a).abs().max())
    print(f"max |ppvae - floor| over images = {diff:.2e} (same seed and draw order: the same weights)")


if __name__ == "__main__":
    main()
