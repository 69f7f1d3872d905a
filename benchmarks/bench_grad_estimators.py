"""Test log p(x) of the Gaussian VAE trained by each gradient estimator: trace, stl, iwae and iwae_dreg at k = 5, 50.

Protocol (benchmarks/bench_vae.py's): mnist5k, 4,000 fixed-binarized training images; the Burda et al. (2015)
one-stochastic-layer network (784-200-200-50 tanh encoder and decoder, Bernoulli likelihood); batch 100, Adam
1e-3, the same number of epochs for every row (``--epochs``; ``--epochs-k50`` for the k = 50 rows, whose steps
cost ~50x, stated in the output when it differs); seeds ``--seeds``. Each fit's test log p(x) is estimated by
importance sampling with K = ``--num-particles`` draws from its encoder (Burda et al. 2015, eq. 8;
``ppvae.evaluate.marginal.log_marginal``, seed 0) on the first ``--test-size`` test images, with the number of
images whose Pareto k-hat exceeds 0.7 (Vehtari et al. 2015). Rows: ``trace`` (estimator A, Kingma & Welling
2013), ``stl`` (Roeder et al. 2017), ``iwae`` (Burda et al. 2015) and ``iwae_dreg`` (Tucker et al. 2019) at
num_particles k. Published direction: DReG improves IWAE's test log p(x) by ~0.3 nats at k = 5 and 50 (Tucker et
al. 2019, MNIST, long training); printed beside each seed's paired difference.

One JSON line per (seed, row) is appended to ``--out`` as soon as it is measured, so seeds can run in separate
processes and ``--summarize FILE`` prints the table from them:

    python benchmarks/bench_grad_estimators.py --seeds 0 --out /tmp/est.jsonl &
    python benchmarks/bench_grad_estimators.py --seeds 1 --out /tmp/est.jsonl
    python benchmarks/bench_grad_estimators.py --summarize /tmp/est.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

import torch

import ppvae
from ppvae.evaluate.marginal import log_marginal
from ppvae.models import VAE

ROWS = [("trace", "trace", 1), ("stl", "stl", 1), ("iwae k=5", "iwae", 5), ("iwae_dreg k=5", "iwae_dreg", 5),
        ("iwae k=50", "iwae", 50), ("iwae_dreg k=50", "iwae_dreg", 50)]


def run_row(label, elbo, k, seed, epochs, train, test, num_particles) -> dict:
    t0 = time.perf_counter()
    fit = ppvae.fit(VAE(latent_dim=50, hidden=200, depth=2, activation="tanh"), train, epochs=epochs, batch_size=100,
                    lr=1e-3, seed=seed, elbo=elbo, num_particles=k, progress=False, check_convergence=False)
    t1 = time.perf_counter()
    lm = log_marginal(fit, test, num_particles=num_particles, seed=0, warn=False)
    t2 = time.perf_counter()
    return {"row": label, "elbo": elbo, "k": k, "seed": seed, "epochs": epochs, "log_px": lm.mean,
            "stderr": lm.stderr, "elbo_test": lm.elbo_mean, "khat_over_0_7": int(lm.num_khat_over_0_7),
            "values": [float(v) for v in lm.values], "train_s": t1 - t0, "eval_s": t2 - t1,
            "test_size": len(test), "num_particles": num_particles, "load": os.getloadavg()[0]}


def summarize(records: list[dict]) -> None:
    by_row: dict[str, list[dict]] = {}
    for r in records:
        by_row.setdefault(r["row"], []).append(r)
    first = records[0]
    print(f"mnist5k, 784-200-200-50 tanh Bernoulli VAE, batch 100, Adam 1e-3; test log p(x) by IS at "
          f"K={first['num_particles']} on the first {first['test_size']} test images")
    print(f"{'row':16s} {'epochs':>6s} {'seeds':>6s} {'log p(x) mean':>14s} {'per seed':>24s} {'k-hat>0.7':>9s} "
          f"{'train s':>8s}")
    for label, _, _ in ROWS:
        rs = sorted(by_row.get(label, []), key=lambda r: r["seed"])
        if not rs:
            continue
        vals = [r["log_px"] for r in rs]
        print(f"{label:16s} {rs[0]['epochs']:6d} {len(rs):6d} {statistics.mean(vals):14.2f} "
              f"{' '.join(f'{v:.2f}' for v in vals):>24s} {sum(r['khat_over_0_7'] for r in rs):9d} "
              f"{statistics.mean(r['train_s'] for r in rs):8.0f}")
    for k in (5, 50):
        a = {r["seed"]: r for r in by_row.get(f"iwae_dreg k={k}", [])}
        b = {r["seed"]: r for r in by_row.get(f"iwae k={k}", [])}
        for seed in sorted(set(a) & set(b)):
            diff = torch.tensor(a[seed]["values"]) - torch.tensor(b[seed]["values"])  # paired over the same images
            se = diff.std().item() / math.sqrt(len(diff))
            print(f"k={k} seed {seed}: DReG - IWAE = {diff.mean().item():+.3f} +- {se:.3f} nats per image "
                  f"(published: about +0.3)")
    loads = [r["load"] for r in records]
    print(f"load average (1 min) while measuring: {min(loads):.1f} - {max(loads):.1f}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--epochs-k50", type=int, default=None, help="epochs of the k = 50 rows (default: --epochs)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS])
    p.add_argument("--test-size", type=int, default=100)
    p.add_argument("--train-size", type=int, default=4000, help="fewer training images: for a quick check only")
    p.add_argument("--num-particles", type=int, default=5000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="append one JSON line per measured row to this file")
    p.add_argument("--summarize", default=None, help="print the table from this JSON-lines file and exit")
    args = p.parse_args(argv)
    if args.summarize:
        with open(args.summarize) as fh:
            summarize([json.loads(line) for line in fh if line.strip()])
        return
    torch.set_num_threads(args.threads)
    train = ppvae.load_dataset("mnist5k", split="train")
    train = train.subset(torch.arange(args.train_size)) if args.train_size < len(train) else train
    test = ppvae.load_dataset("mnist5k", split="test").subset(torch.arange(args.test_size))
    records = []
    for seed in args.seeds:
        for label, elbo, k in ROWS:
            if label not in args.rows:
                continue
            epochs = args.epochs_k50 if k == 50 and args.epochs_k50 is not None else args.epochs
            rec = run_row(label, elbo, k, seed, epochs, train, test, args.num_particles)
            records.append(rec)
            print(f"seed {seed} {label:16s} {epochs} epochs: log p(x) {rec['log_px']:.3f} +- {rec['stderr']:.3f} "
                  f"(ELBO {rec['elbo_test']:.3f}, k-hat>0.7: {rec['khat_over_0_7']}; train {rec['train_s']:.0f} s, "
                  f"evaluate {rec['eval_s']:.0f} s, load {rec['load']:.1f})", flush=True)
            if args.out:
                with open(args.out, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
    summarize(records)


if __name__ == "__main__":
    main()
