"""Which start or local step closes online LDA's gap to batch CAVI (docs/guide/cavi.md, "Warm-up"): one seed, one
corpus size, every row scored as ``bench_online_lda.py`` scores (per-word ELBO on the replicated corpus, NPMI of the
top 10 words on the original), thread CPU seconds.

Rows: batch CAVI from its CVB0 start (300 sweeps + 15 iterations); batch CAVI (30 iterations) from online LDA's
Gamma(100, 1/100) start; online LDA (``fit_svi_natural``, batch 64, tau0 10, kappa 0.7) with ``warmup=0`` from that
start; batch CAVI (15 iterations) from online LDA's end point; online LDA from batch CAVI's CVB0 start; online LDA
with a tight local step (tol 1e-6, 1,000 sweeps) for the first quarter of the steps; online LDA with tau0 = 1024;
online LDA with SCVB0 warm-ups of an eighth of the steps, one pass (ceil(D / 64) steps, the default's length when
under a quarter), a quarter and a half of the steps, and SCVB0 throughout.

    PYTHONPATH=. python benchmarks/online_lda_starts.py [--replicate 10] [--seed 0] [--steps 400]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from bench_online_lda import ALPHA, ETA, K, score  # noqa: E402

import ppvae  # noqa: E402
from models.lda import LDA  # noqa: E402
from models.lda_cavi import _Sparse, cvb0_init, e_step, expected_log_dirichlet, lambda_update  # noqa: E402
from models.lda_online import minibatch_e_step  # noqa: E402


class TightStart(LDA):
    """LDA whose mean-field local step runs to tol 1e-6 (at most 1,000 sweeps) for the first ``tight`` steps."""

    tight = 0

    def ce_local(self, xb, lam):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls > self.tight:
            return super().ce_local(xb, lam)
        _, stats = minibatch_e_step(xb, expected_log_dirichlet(lam["lambda"]), self.alpha, max_iter=1000, tol=1e-6)
        return {"word_topic": stats}


def show(name, snaps, original, replicate, unit):
    rows = score(snaps, original, replicate)
    print(f"{name:58s} " + "  ".join(f"{unit}{r['step']} {r['elbo']:.4f} ({r['cpu']:.1f} s)" for r in rows)
          + f"  NPMI {rows[-1]['npmi']:+.3f}  [{os.popen('uptime').read().strip()}]", flush=True)


def online(data, args, start_cpu=0.0, tight=0, **options):
    model = TightStart(topics=K, alpha=ALPHA, eta=ETA)
    model.tight, snaps, begin = tight, [], [0.0]

    def callback(step, lam):
        if step == 0:
            begin[0] = time.thread_time()
        if step in (args.steps // 4, args.steps // 2, args.steps):
            snaps.append((step, 0.0, start_cpu + time.thread_time() - begin[0], lam["lambda"].clone()))

    options = {"tau0": 10.0, **options}
    ppvae.fit_svi_natural(model, data, batch_size=64, num_steps=args.steps, kappa=0.7, eval_every=0, seed=args.seed,
                          callback=callback, **options)
    return snaps


def cavi(x, lam, gamma, iters, start_cpu=0.0):
    sp, begin = _Sparse(x), time.thread_time()
    snaps = [(0, 0.0, start_cpu, lam.clone())]
    for it in range(1, iters + 1):
        elog_beta = expected_log_dirichlet(lam)
        gamma = e_step(None, elog_beta, ALPHA, gamma, 100, 1e-3, sp)
        lam = lambda_update(sp, gamma, elog_beta, ETA)
        if it in (1, iters // 2, iters):
            snaps.append((it, 0.0, start_cpu + time.thread_time() - begin, lam.clone()))
    return snaps


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicate", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = ppvae.load_dataset("reuters")
    original = base.x.double()
    x = original.repeat(args.replicate, 1)
    data = ppvae.Dataset(x.float(), kind="counts", meta=dict(base.meta))
    s, n = args.steps, args.replicate
    print(f"reuters x{n}, seed {args.seed}, {s} steps; {os.popen('uptime').read().strip()}", flush=True)
    begin = time.thread_time()
    gamma, lam_cvb0 = cvb0_init(_Sparse(x), K, ALPHA, ETA, 300, torch.Generator().manual_seed(args.seed))
    cvb0_cpu = time.thread_time() - begin
    show("batch CAVI from its CVB0 start", cavi(x, lam_cvb0, gamma, 15, cvb0_cpu), original, n, "i")
    flat = LDA(topics=K, alpha=ALPHA, eta=ETA).ce_init(x, torch.Generator().manual_seed(args.seed))["lambda"]
    show("batch CAVI from online's Gamma start", cavi(x, flat, None, 30), original, n, "i")
    end = online(data, args, warmup=0)
    show("online, warmup=0 (Hoffman et al. 2010, alg. 2)", end, original, n, "s")
    show("batch CAVI from online's end point", cavi(x, end[-1][3], None, 15), original, n, "i")
    show("online from batch CAVI's CVB0 start (start CPU added)",
         online(data, args, cvb0_cpu, warmup=0, init={"lambda": lam_cvb0}), original, n, "s")
    show("online, tight local step for the first quarter", online(data, args, tight=s // 4, warmup=0), original, n, "s")
    show("online, tau0 = 1024", online(data, args, warmup=0, tau0=1024.0), original, n, "s")
    for warm in (s // 8, -(-len(x) // 64), s // 4, s // 2, s):
        show(f"online, SCVB0 warm-up of {warm} steps", online(data, args, warmup=warm), original, n, "s")


if __name__ == "__main__":
    main()
