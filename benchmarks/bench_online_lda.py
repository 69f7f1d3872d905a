"""Online LDA (natural-gradient SVI, ``ppvae.fit_svi_natural``) against batch CAVI and scikit-learn's online LDA.

Corpus: Reuters (the ``lda`` package's 395 stories, 4,258 words) replicated ``--replicate`` times (default 10:
3,950 documents), the case where a batch pass over the corpus is the cost to avoid. LDA with K = 20,
alpha = 0.1, eta = 0.01 for every method. Side by side in one process, one thread each:

* ppvae online LDA: minibatches of ``--batch-size`` documents (a fresh permutation each epoch), rho_t =
  (tau0 + t)^-kappa, ``--steps`` updates from the Gamma(100, 1/100) start; per-document E step to a mean
  |change| of gamma below 1e-3 (at most 100 sweeps);
* ppvae batch CAVI from the same kind of start (``fit_cavi``'s ``init="random"`` iterations: a warm-started E
  step over every document, then the lambda update), ``--cavi-iter`` iterations; with ``--cvb0`` also
  ``fit_cavi``'s default (300 CVB0 sweeps, then CAVI to a relative gain of 1e-5, at most 15 iterations), timed as
  a whole;
* scikit-learn ``LatentDirichletAllocation(learning_method="online")`` driven by ``partial_fit`` on the same
  kind of minibatches, with ``total_samples`` = D, ``learning_offset`` = tau0 - 1 and ``learning_decay`` = kappa
  (its update counter starts at 1 where ours starts at 0, so the step sizes are identical), same priors.

Each run's lambda is snapshotted (a copy, inside the timed loop; about 1/1000 of a step) ``--snapshots``
times; afterwards, outside the timing, every snapshot is scored by the same evaluator: the per-word ELBO on the
replicated corpus (ppvae's ``lda_elbo`` with gamma from a full E step at that lambda; float64), and the mean
NPMI of the top-10 words of E_q[beta] on the original corpus. "Time to target" is the first snapshot whose
per-word ELBO is within 1% of batch CAVI's final one (random start). Seeds vary the start and the minibatch
order; the summary gives mean and sample sd over seeds.

    python benchmarks/bench_online_lda.py [--replicate 10] [--seeds 0,1,2] [--steps 600] [--batch-size 64]
        [--tau0 10] [--kappa 0.7] [--cavi-iter 40] [--snapshots 12] [--cvb0]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load: one BLAS thread for every method

import numpy as np  # noqa: E402
import torch  # noqa: E402

import ppvae  # noqa: E402
from models.lda import LDA  # noqa: E402
from models.lda_cavi import _Sparse, e_step, expected_log_dirichlet, lambda_update, lda_elbo  # noqa: E402
from ppvae.evaluate.topics import npmi_coherence  # noqa: E402

ALPHA, ETA, K = 0.1, 0.01, 20


def _every(total: int, count: int) -> set[int]:
    return {int(round(v)) for v in np.linspace(0, total, count)}


def run_online(model, data, args, seed):
    snaps, keep = [], _every(args.steps, args.snapshots)
    state = {}

    def callback(step, lam):
        if step == 0:
            state["t0"] = time.perf_counter()
        if step in keep:
            snaps.append((step, time.perf_counter() - state["t0"], lam["lambda"].clone()))

    ppvae.fit_svi_natural(model, data, batch_size=args.batch_size, num_steps=args.steps, tau0=args.tau0,
                          kappa=args.kappa, eval_every=0, seed=seed, callback=callback)
    return snaps


def run_sklearn(x, args, seed):
    from sklearn.decomposition import LatentDirichletAllocation

    ref = LatentDirichletAllocation(n_components=K, doc_topic_prior=ALPHA, topic_word_prior=ETA,
                                    learning_method="online", learning_offset=args.tau0 - 1, learning_decay=args.kappa,
                                    batch_size=args.batch_size, total_samples=len(x), random_state=seed, n_jobs=1)
    xn = x.numpy()
    gen = torch.Generator().manual_seed(seed)
    snaps, keep, step = [], _every(args.steps, args.snapshots), 0
    start = time.perf_counter()
    while step < args.steps:
        for idx in torch.randperm(len(x), generator=gen).split(args.batch_size):
            ref.partial_fit(xn[idx.numpy()])
            step += 1
            if step in keep:
                snaps.append((step, time.perf_counter() - start, torch.tensor(ref.components_, dtype=torch.float64)))
            if step == args.steps:
                break
    return snaps


def run_batch_cavi(x, args, seed):
    """fit_cavi(init="random")'s iterations (E step warm-started over every document, then lambda), snapshots."""
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    sp = _Sparse(x)
    lam = torch._standard_gamma(torch.full((K, x.shape[1]), 100.0, dtype=torch.float64), generator=gen) / 100.0
    gamma = torch._standard_gamma(torch.full((len(x), K), 100.0, dtype=torch.float64), generator=gen) / 100.0
    snaps, keep = [(0, time.perf_counter() - start, lam.clone())], _every(args.cavi_iter, args.snapshots)
    for it in range(1, args.cavi_iter + 1):
        elog_beta = expected_log_dirichlet(lam)
        gamma = e_step(None, elog_beta, ALPHA, gamma, 100, 1e-3, sp)
        lam = lambda_update(sp, gamma, elog_beta, ETA)
        if it in keep:
            snaps.append((it, time.perf_counter() - start, lam.clone()))
    return snaps


def score(snaps, x, sp, words, original):
    rows = []
    for step, seconds, lam in snaps:
        gamma = e_step(None, expected_log_dirichlet(lam), ALPHA, _sp=sp)
        elbo = lda_elbo(x, gamma, lam, ALPHA, ETA, sp)
        npmi = npmi_coherence(lam / lam.sum(-1, keepdim=True), original).mean().item()
        rows.append({"step": step, "time_s": seconds, "elbo_per_word": elbo / words, "npmi": npmi})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicate", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tau0", type=float, default=10.0)
    parser.add_argument("--kappa", type=float, default=0.7)
    parser.add_argument("--cavi-iter", type=int, default=40)
    parser.add_argument("--snapshots", type=int, default=12)
    parser.add_argument("--cvb0", action="store_true", help="also fit_cavi's default (300 CVB0 sweeps + CAVI)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = ppvae.load_dataset("reuters")
    original = base.x.double()
    x = original.repeat(args.replicate, 1)
    data = ppvae.Dataset(x.float(), kind="counts", meta=dict(base.meta))
    sp, words = _Sparse(x), float(x.sum())
    print(f"reuters x {args.replicate}: {len(x)} documents, {int(words)} words, K = {K}; batch {args.batch_size}, "
          f"tau0 {args.tau0}, kappa {args.kappa}, {args.steps} steps ({args.steps * args.batch_size / len(x):.1f} "
          f"epochs); torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}", flush=True)
    summary = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        results = {}
        runs = [("batch CAVI (random start)", lambda s=seed: run_batch_cavi(x, args, s)),
                ("ppvae online LDA", lambda s=seed: run_online(LDA(topics=K, alpha=ALPHA, eta=ETA), data, args, s)),
                ("sklearn online LDA", lambda s=seed: run_sklearn(x.float(), args, s))]
        for name, fn in runs:
            snaps = fn()
            print(f"  seed {seed}: {name} ran in {snaps[-1][1]:.1f} s (load average {os.getloadavg()[0]:.2f})",
                  flush=True)
            results[name] = score(snaps, x, sp, words, original)
        if args.cvb0:
            default = LDA(topics=K, alpha=ALPHA, eta=ETA).fit_cavi(data, max_iter=15, seed=seed)
            results["fit_cavi default (CVB0 start)"] = [{
                "step": default.num_iterations, "time_s": default.time_s, "elbo_per_word": default.elbo / words,
                "npmi": npmi_coherence(default.topic_word(), original).mean().item()}]
        target = results["batch CAVI (random start)"][-1]["elbo_per_word"]
        target -= 0.01 * abs(target)
        print(f"\nseed {seed}: target per-word ELBO {target:.4f} (batch CAVI's final, less 1%); "
              f"load average {os.getloadavg()[0]:.2f}")
        for name, rows in results.items():
            hit = next((r for r in rows if r["elbo_per_word"] >= target), None)
            final = rows[-1]
            print(f"  {name:32s} final: step {final['step']:5d} {final['time_s']:8.2f} s  per-word ELBO "
                  f"{final['elbo_per_word']:.4f}  NPMI {final['npmi']:+.4f}   to target: "
                  + (f"step {hit['step']} at {hit['time_s']:.2f} s" if hit else "not reached"), flush=True)
            summary.setdefault(name, []).append((final["time_s"], final["elbo_per_word"], final["npmi"],
                                                 hit["time_s"] if hit else float("nan")))
    print("\nmean (sd) over seeds:")
    for name, rows in summary.items():
        a = np.array(rows)
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(4)
        print(f"  {name:32s} time {a[:, 0].mean():8.2f} s  per-word ELBO {a[:, 1].mean():.4f} ({sd[1]:.4f})  "
              f"NPMI {a[:, 2].mean():+.4f} ({sd[2]:.4f})  time to target {np.nanmean(a[:, 3]):.2f} s")


if __name__ == "__main__":
    main()
