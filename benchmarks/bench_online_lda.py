"""Online LDA (natural-gradient SVI, ``ppvae.fit_svi_natural``) against batch CAVI and scikit-learn's online LDA.

Corpus: Reuters (the ``lda`` package's 395 stories, 4,258 words, 84,010 tokens) replicated ``--replicate`` times
(default 10: 3,950 documents), the memory-bound case where a pass over the corpus is the cost to avoid. LDA with
K = 20, alpha = 0.1, eta = 0.01 for every method. Side by side in one process, one thread each, per seed:

* batch CAVI started the best way ppvae starts it: ``fit_cavi``'s default, ``--init-sweeps`` (300) CVB0 sweeps on the
  whole corpus then ``--cavi-iter`` (15) iterations of a warm-started E step over every document and the lambda
  update (the loop of ``models.lda_cavi.fit_cavi``, its per-iteration ELBO left out of the clock);
* ppvae online LDA as ``fit_svi_natural`` runs it by default: lambda ~ Gamma(100, 1/100), minibatches of
  ``--batch-size`` (64) documents (a fresh permutation each epoch), rho_t = (tau0 + t)^-kappa with tau0 = 10,
  kappa = 0.7, ``--steps`` (400) updates, the first pass over the corpus (62 steps; ``warmup``, at most a quarter of
  the steps) with the stochastic-CVB0 local step (Foulds et al. 2013), then the mean-field local step to a mean
  |change| of gamma_d below 1e-3, at most 100 sweeps;
* ppvae online LDA with ``warmup=0`` (mean field from the first step: Hoffman, Blei & Bach 2010, alg. 2 exactly,
  scikit-learn's algorithm), otherwise the same -- the comparison with scikit-learn;
* scikit-learn ``LatentDirichletAllocation(n_components=20, doc_topic_prior=0.1, topic_word_prior=0.01,
  learning_method="online", learning_offset=tau0 - 1, learning_decay=kappa, batch_size=64, total_samples=D,
  max_doc_update_iter=100, mean_change_tol=1e-3, random_state=seed, n_jobs=1)`` driven by ``partial_fit`` on the
  same kind of minibatches (its update counter starts at 1 where ours starts at 0, so learning_offset = tau0 - 1
  gives identical step sizes rho_t; its local step starts gamma_d at a Gamma(100, 1/100) draw, ours at alpha + n_d / K).

Each run's lambda is snapshotted ``--snapshots`` times inside the clock (a copy); afterwards every snapshot is scored
by one evaluator: the per-word ELBO L(gamma, lambda) / tokens on the replicated corpus with gamma from the batched E
step at lambda (tolerance 1e-3; 1e-6 moves it by < 1e-5 relative), computed exactly on the original 395 documents
(copies share gamma_d: L_R = R sum_d B_d - KL(q(beta) || p(beta))), and the mean NPMI of the top 10 words of
E_q[beta] on the original corpus. Clocks: wall time and the thread's CPU time (less sensitive to the machine's load).
"Target" = batch CAVI's final per-word ELBO less 1% of its size; "to target" = the first snapshot at or above it.

    python benchmarks/bench_online_lda.py [--replicate 10] [--seeds 0,1,2] [--steps 400] [--batch-size 64]
        [--tau0 10] [--kappa 0.7] [--cavi-iter 15] [--init-sweeps 300] [--snapshots 11]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch load: one BLAS thread for every method

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.distributions import Dirichlet, kl_divergence  # noqa: E402

import ppvae  # noqa: E402
from models.lda import LDA  # noqa: E402
from models.lda_cavi import _Sparse, cvb0_init, doc_elbo, e_step, expected_log_dirichlet, lambda_update  # noqa: E402
from models.lda_online import minibatch_e_step  # noqa: E402
from ppvae.evaluate.topics import npmi_coherence  # noqa: E402

ALPHA, ETA, K = 0.1, 0.01, 20


class Clock:
    """Wall and thread-CPU seconds since start; snapshots of lambda at the chosen steps."""

    def __init__(self, keep):
        self.keep, self.snaps = keep, []
        self.wall, self.cpu = time.perf_counter(), time.thread_time()

    def snap(self, step, lam):
        if step in self.keep:
            self.snaps.append((step, time.perf_counter() - self.wall, time.thread_time() - self.cpu, lam.clone()))


def _every(total: int, count: int) -> set[int]:
    return {int(round(v)) for v in np.linspace(0, total, count)}


def run_online(data, x, args, seed, warmup):
    model = LDA(topics=K, alpha=ALPHA, eta=ETA)
    clock = Clock(_every(args.steps, args.snapshots))
    offset = (0.0, 0.0)

    def callback(step, lam):
        if step == 0:  # after fit_svi_natural's initial full-data ELBO, which is not part of the algorithm
            clock.wall, clock.cpu = time.perf_counter() - offset[0], time.thread_time() - offset[1]
        clock.snap(step, lam["lambda"])

    ppvae.fit_svi_natural(model, data, batch_size=args.batch_size, num_steps=args.steps, tau0=args.tau0,
                          kappa=args.kappa, eval_every=0, seed=seed, callback=callback, warmup=warmup)
    return clock.snaps


def run_sklearn(x, args, seed):
    from sklearn.decomposition import LatentDirichletAllocation

    ref = LatentDirichletAllocation(n_components=K, doc_topic_prior=ALPHA, topic_word_prior=ETA,
                                    learning_method="online", learning_offset=args.tau0 - 1, learning_decay=args.kappa,
                                    batch_size=args.batch_size, total_samples=len(x), max_doc_update_iter=100,
                                    mean_change_tol=1e-3, random_state=seed, n_jobs=1)
    xn, gen = x.numpy(), torch.Generator().manual_seed(seed)
    clock, step = Clock(_every(args.steps, args.snapshots)), 0
    while step < args.steps:
        for idx in torch.randperm(len(x), generator=gen).split(args.batch_size):
            ref.partial_fit(xn[idx.numpy()])
            step += 1
            clock.snap(step, torch.from_numpy(ref.components_))
            if step == args.steps:
                break
    return clock.snaps


def run_batch_cavi(x, args, seed):
    """fit_cavi's default: CVB0 sweeps, then E step (warm) + lambda update per iteration; ELBO not in the clock."""
    clock = Clock({0, 1, 2, 3, 5, 8, 12, args.cavi_iter})  # scoring a snapshot costs about an iteration
    sp = _Sparse(x)
    gamma, lam = cvb0_init(sp, K, ALPHA, ETA, args.init_sweeps, torch.Generator().manual_seed(seed))
    clock.snap(0, lam)
    for it in range(1, args.cavi_iter + 1):
        elog_beta = expected_log_dirichlet(lam)
        gamma = e_step(None, elog_beta, ALPHA, gamma, 100, 1e-3, sp)
        lam = lambda_update(sp, gamma, elog_beta, ETA)
        clock.snap(it, lam)
    return clock.snaps


def score(snaps, original, replicate):
    """Per-word ELBO on the replicated corpus (exactly, from the original documents) and NPMI, per snapshot."""
    words, sp = replicate * float(original.sum()), _Sparse(original)
    rows = []
    for step, wall, cpu, lam in snaps:
        lam = lam.double()
        elog_beta = expected_log_dirichlet(lam)
        gamma, _ = minibatch_e_step(original, elog_beta, ALPHA)
        docs = doc_elbo(sp, gamma, elog_beta, ALPHA).sum().item()
        kl = kl_divergence(Dirichlet(lam), Dirichlet(torch.full_like(lam, ETA))).sum().item()
        npmi = npmi_coherence(lam / lam.sum(-1, keepdim=True), original).mean().item()
        rows.append({"step": step, "wall": wall, "cpu": cpu, "elbo": (replicate * docs - kl) / words, "npmi": npmi})
    return rows


def report_seed(seed, results, steps):
    target = results[CAVI][-1]["elbo"]
    target -= 0.01 * abs(target)
    print(f"\nseed {seed}: target per-word ELBO {target:.4f} (batch CAVI's final less 1%); load average "
          f"{os.getloadavg()[0]:.2f}")
    out = {}
    for name, rows in results.items():
        hit = next((r for r in rows if r["elbo"] >= target), None)
        final = rows[-1]
        per_step = final["wall"] / steps if name != CAVI else float("nan")
        cpu_step = final["cpu"] / steps if name != CAVI else float("nan")
        print(f"  {name:38s} step {final['step']:4d} wall {final['wall']:7.1f} s cpu {final['cpu']:7.1f} s  ELBO/word "
              f"{final['elbo']:.4f}  NPMI {final['npmi']:+.4f}  to target: "
              + (f"step {hit['step']} wall {hit['wall']:.1f} s cpu {hit['cpu']:.1f} s" if hit else "not reached"),
              flush=True)
        out[name] = [final["elbo"], final["npmi"], per_step * 1e3, cpu_step * 1e3,
                     hit["wall"] if hit else np.nan, hit["cpu"] if hit else np.nan]
    return out


def summarize(summary):
    print("\nmean (sd) over seeds: per-word ELBO, NPMI, ms per step wall / cpu, to target wall / cpu s")
    stats = {}
    for name, rows in summary.items():
        a = np.array(rows)
        sd = a.std(0, ddof=1) if len(a) > 1 else np.zeros(a.shape[1])
        stats[name] = (a.mean(0), sd)
        m = stats[name][0]
        print(f"  {name:38s} {m[0]:.4f} ({sd[0]:.4f})  {m[1]:+.4f} ({sd[1]:.4f})  {m[2]:6.1f} / {m[3]:6.1f}  "
              f"{m[4]:7.1f} / {m[5]:7.1f}")
    (o, so), (s, ss) = stats[ONLINE], stats[SKLEARN]
    print(f"\nppvae online vs scikit-learn online (same start kind, schedule, batch, priors, local tolerance):\n"
          f"  per-word ELBO difference {o[0] - s[0]:+.4f} (seed sd {so[0]:.4f} / {ss[0]:.4f}); NPMI difference "
          f"{o[1] - s[1]:+.4f} (sd {so[1]:.4f} / {ss[1]:.4f}); time per step ratio ppvae / sklearn wall "
          f"{o[2] / s[2]:.2f}x, cpu {o[3] / s[3]:.2f}x")
    (c, sc), (v, sv) = stats[CAVI], stats[WARM_ONLINE]
    print(f"online (default, SCVB0 warm-up) vs batch CAVI (CVB0 start): per-word ELBO "
          f"{100 * (v[0] - c[0]) / abs(c[0]):+.2f}% "
          f"(CAVI seed sd {sc[0]:.4f}); NPMI {v[1]:+.4f} (sd {sv[1]:.4f}) vs {c[1]:+.4f} (sd {sc[1]:.4f}); "
          f"to target wall {v[4]:.1f} s vs {c[4]:.1f} s ({c[4] / v[4]:.1f}x sooner), cpu {v[5]:.1f} s vs {c[5]:.1f} s")


CAVI, WARM_ONLINE, ONLINE, SKLEARN = ("batch CAVI (CVB0 start)", "ppvae online (default: SCVB0 warm-up)",
                                      "ppvae online (warmup=0)", "sklearn online (Gamma start)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicate", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tau0", type=float, default=10.0)
    parser.add_argument("--kappa", type=float, default=0.7)
    parser.add_argument("--cavi-iter", type=int, default=15)
    parser.add_argument("--init-sweeps", type=int, default=300)
    parser.add_argument("--snapshots", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = ppvae.load_dataset("reuters")
    original = base.x.double()
    x = original.repeat(args.replicate, 1)
    data = ppvae.Dataset(x.float(), kind="counts", meta=dict(base.meta))
    print(f"reuters x {args.replicate}: {len(x)} documents, {int(x.sum())} tokens, K = {K}; batch {args.batch_size}, "
          f"tau0 {args.tau0}, kappa {args.kappa}, {args.steps} steps ({args.steps * args.batch_size / len(x):.1f} "
          f"epochs); CAVI: {args.init_sweeps} CVB0 sweeps + {args.cavi_iter} iterations; torch threads "
          f"{torch.get_num_threads()}; uptime: {os.popen('uptime').read().strip()}", flush=True)
    summary = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        runs = {CAVI: lambda s=seed: run_batch_cavi(x, args, s),
                WARM_ONLINE: lambda s=seed: run_online(data, x, args, s, None),
                ONLINE: lambda s=seed: run_online(data, x, args, s, 0),
                SKLEARN: lambda s=seed: run_sklearn(x, args, s)}
        results = {}
        for name, fn in runs.items():
            snaps = fn()
            print(f"  seed {seed}: {name} ran in {snaps[-1][1]:.1f} s wall (load average {os.getloadavg()[0]:.2f})",
                  flush=True)
            results[name] = score(snaps, original, args.replicate)
        for name, row in report_seed(seed, results, args.steps).items():
            summary.setdefault(name, []).append(row)
    summarize(summary)
    print(f"uptime at the end: {os.popen('uptime').read().strip()}")


if __name__ == "__main__":
    main()
