"""NUTS on the Gaussian mixture (K=2, diagonal) on standardized Old Faithful: ppvae against plain Pyro.

Both sample the same posterior (same priors as ``models/gmm.py``), same number of chains, warm-up and
draws, in this process, chains one after another, one intra-op thread (ppvae with ``cores=1``: its
default would run the chains in parallel worker processes, which plain Pyro does not do on a machine
with fewer cores than chains + 1; ``--cores`` measures that separately):

* **plain Pyro**: a hand-written model with ``@config_enumerate`` over the assignments, Pyro's
  ``NUTS(model, max_plate_nesting=1, jit_compile=True)``, default initialization (uniform in
  unconstrained space), chains run by ``MCMC`` (sequential here: Pyro does so itself when the
  machine has fewer cores than chains + 1);
* **ppvae**: ``ppvae.infer.mcmc.sampler.run_mcmc``: the potential sums the assignments in closed form
  (log-sum-exp) and its gradient comes in closed form too (``GMM.closed_form_potential``: the Fisher
  identity, no autograd graph), all latents are one flat site for Pyro's kernel, the computation is
  compiled with ``torch.jit.trace``, every chain starts at the EM fit (plus jitter), and
  ``order=("locs", 0)`` removes label switching where it is set.

Reported: wall and CPU time of the sampling (warm-up + draws + compilation; CPU time is less
disturbed by other processes on a shared machine), the bulk ESS (ArviZ, over all chains) of each
component mean, and min ESS per second. ppvae also runs with a dense mass matrix, and with a third of
the warm-up (its chains start at the EM fit, which is what the shorter warm-up relies on), and
without the ordering constraint (chains from the EM fit stay in one labelling; draws relabelled). Plain
Pyro's draws switch labels between chains, so its ESS is given raw and after relabelling each draw
by ordering locs[:, 0] (the fair number); the ratios use the relabelled one. The EM fit's time is charged to ppvae.

    python benchmarks/bench_nuts.py            # 4 chains x (500 warm-up + 1000 draws)
    python benchmarks/bench_nuts.py --quick    # 2 chains x (150 + 300)
    python benchmarks/bench_nuts.py --chains 4 --warmup 150 --draws 300
    python benchmarks/bench_nuts.py --chains 2 --warmup 300 --draws 500 --leapfrogs   # + cost per leapfrog step

    python benchmarks/bench_nuts.py --cores 2 --chains 4 --warmup 500 --draws 1000   # parallel chains

``--cores N`` runs only ppvae's default NUTS (the EM fit done once, outside the timing) with the chains
in this process (1 core), on N worker processes of one thread each (cold: the first such call starts
the worker server, an interpreter importing torch and Pyro; warm: the server is up), and on 1 core
again; it checks that the draws are identical bit for bit and prints both speed-ups (goal >= 1.7x for
4 chains on 2 cores). The parallel times include forking the workers and building and compiling the
potential in each.

``--leapfrogs`` counts the gradient evaluations (Pyro's ``potential_grad``, one per leapfrog step plus
one per initialization) of every run, to split ESS/s into steps per iteration, seconds per step and
ESS per draw.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS, config_enumerate

from ppvae import load_dataset
from ppvae.infer.em import fit_em
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.models import GMM


def plain_pyro_model(x, K, loc_mean, loc_scale, scale_median):
    """The same GMM written directly in Pyro (what a user would write without ppvae)."""
    D = x.shape[1]
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(K)))
    locs = pyro.sample("locs", dist.Normal(loc_mean, loc_scale).expand([K, D]).to_event(2))
    scales = pyro.sample("scales", dist.LogNormal(scale_median.log(), 1.0).expand([K, D]).to_event(2))
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], scales[z]).to_event(1), obs=x)


class _LeapfrogCounter:
    """Counts calls of Pyro's ``potential_grad`` (one per leapfrog step) by wrapping it where NUTS looks it up."""

    def __init__(self):
        import pyro.infer.mcmc.hmc
        import pyro.infer.mcmc.nuts
        import pyro.ops.integrator

        self.count, self._modules = 0, (pyro.ops.integrator, pyro.infer.mcmc.nuts, pyro.infer.mcmc.hmc)
        original = pyro.ops.integrator.potential_grad

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        for module in self._modules:
            module.potential_grad = counted


def min_ess_of_means(locs: np.ndarray) -> tuple[float, list[float]]:
    """Bulk ESS of every component-mean coordinate from (chains, draws, K, D) draws."""
    C, S, K, D = locs.shape
    values = [float(az.ess(np.ascontiguousarray(locs[:, :, k, d]), method="bulk")) for k in range(K) for d in range(D)]
    return min(values), values


def relabel(locs: np.ndarray, column: int = 0) -> np.ndarray:
    order = np.argsort(locs[..., column], axis=-1)  # (C, S, K)
    return np.take_along_axis(locs, order[..., None], axis=2)


def run_plain(data, model, chains, warmup, draws, seed):
    pyro.set_rng_seed(seed)
    kernel = NUTS(config_enumerate(plain_pyro_model), max_plate_nesting=1, jit_compile=True, ignore_jit_warnings=True)
    mcmc = MCMC(kernel, num_samples=draws, warmup_steps=warmup, num_chains=chains, disable_progbar=True)
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pyro: "num_chains=4 is more than available_cpu=1 ... sequentially"
        mcmc.run(data.x, model.K, model.loc_mean, model.loc_scale, model.scale_median)
    return mcmc.get_samples(group_by_chain=True)["locs"].numpy(), time.perf_counter() - start, time.process_time() - cpu


def run_ppvae(data, chains, warmup, draws, seed, full_mass, order=("locs", 0)):
    start, cpu = time.perf_counter(), time.process_time()
    model = GMM(K=2, covariance="diag")
    em = fit_em(model, data, restarts=5, seed=seed)
    result = run_mcmc(model, data, num_draws=draws, warmup=warmup, num_chains=chains, init=em, order=order,
                      jit=True, full_mass=full_mass, seed=seed, progress=False, cores=1)
    locs = result.samples["locs"].numpy()
    return (locs if order else relabel(locs), time.perf_counter() - start, time.process_time() - cpu,
            result.num_divergences)


def run_cores(data, chains, warmup, draws, seed, cores):
    """``chains`` chains on 1 core and on ``cores`` workers: wall time of each, identical draws, speed-up.

    Order: 1 core, ``cores`` cold (this process's first parallel call: it starts the worker server, whose
    import of torch and Pyro is on the clock), ``cores`` warm (the server is up, as for every later call
    in a session), 1 core again. The speed-ups divide the mean of the two 1-core times, which brackets the
    parallel runs against drift in the machine's load (printed before and after)."""
    model = GMM(K=2, covariance="diag")
    em = fit_em(model, data, restarts=5, seed=seed)
    print(f"load average before: {os.getloadavg()[0]:.2f}; {chains} chains x ({warmup} + {draws}) draws, "
          "one intra-op thread per chain", flush=True)
    times, runs = {}, {}
    for label, c in (("1 core", 1), ("cold", cores), ("warm", cores), ("1 core again", 1)):
        start = time.perf_counter()
        runs[label] = run_mcmc(model, data, num_draws=draws, warmup=warmup, num_chains=chains, init=em,
                               order=("locs", 0), jit=True, seed=seed, progress=False, cores=c)
        times[label] = time.perf_counter() - start
        print(f"ppvae NUTS, cores {c} ({label}): {times[label]:.1f} s wall", flush=True)
    same = all(torch.equal(runs["1 core"].samples[k], runs[label].samples[k])
               for label in ("cold", "warm", "1 core again") for k in runs["1 core"].samples)
    one = (times["1 core"] + times["1 core again"]) / 2
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"draws identical on 1 and {cores} cores: {same}")
    for label in ("cold", "warm"):
        speedup = one / times[label]
        print(f"speed-up {label}: {speedup:.2f}x (goal >= 1.7x for 4 chains on 2 cores: "
              f"{'met' if same and speedup >= 1.7 else 'NOT met'})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 chains x (150 warm-up + 300 draws)")
    parser.add_argument("--chains", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--draws", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-plain", action="store_true", help="run only ppvae (for profiling)")
    parser.add_argument("--leapfrogs", action="store_true", help="count leapfrog steps (gradient evaluations)")
    parser.add_argument("--cores", type=int, default=None, help="only: chains on 1 core vs on this many workers")
    args = parser.parse_args(argv)
    chains, warmup, draws = (2, 150, 300) if args.quick else (4, 500, 1000)
    chains, warmup, draws = args.chains or chains, args.warmup or warmup, args.draws or draws
    torch.set_num_threads(1)
    data = load_dataset("faithful", standardize=True)
    if args.cores:
        run_cores(data, chains, warmup, draws, args.seed, args.cores)
        return
    ref = GMM(K=2, covariance="diag")
    ref.setup(data)
    print(f"GMM K=2 diag, standardized Old Faithful (N={len(data)}); {chains} chains x ({warmup} warm-up + {draws} "
          f"draws); torch threads 1; shared machine: absolute times vary with its load, the ratio is the measure")
    rows, steps = [], []
    counter = _LeapfrogCounter() if args.leapfrogs else None
    if not args.skip_plain:
        locs, t, cpu = run_plain(data, ref, chains, warmup, draws, args.seed)
        steps.append(counter.count if counter else 0)
        raw, _ = min_ess_of_means(locs)
        fair, per = min_ess_of_means(relabel(locs))
        rows.append((f"plain Pyro NUTS (enum, JIT), warm-up {warmup}", t, cpu, raw, fair, per, None))
    short = max(warmup // 3, 50)
    variants = ((False, warmup, ("locs", 0)), (True, warmup, ("locs", 0)), (True, short, ("locs", 0)),
                (False, warmup, None))
    for full, w, order in variants:
        before = counter.count if counter else 0
        locs, t, cpu, div = run_ppvae(data, chains, w, draws, args.seed, full, order)
        steps.append(counter.count - before if counter else 0)
        ess, per = min_ess_of_means(locs)
        label = f"ppvae NUTS{' dense' if full else ''}{'' if order else ' unordered'}, warm-up {w}"
        rows.append((label, t, cpu, ess, ess, per, div))
    print("ppvae NUTS = closed-form potential (log-sum-exp over z) and gradient, JIT, EM init; locs[:, 0] ordered "
          "unless 'unordered' (then relabelled after sampling, as plain Pyro's draws)")
    print(f"{'method':44s} {'wall s':>7s} {'CPU s':>7s} {'ESS raw':>8s} {'ESS':>7s} {'ESS/s':>7s} {'ESS/CPUs':>8s}"
          "  per-mean ESS")
    for name, t, cpu, raw, fair, per, div in rows:
        extra = "" if div is None else f"  divergences {div}"
        print(f"{name:44s} {t:7.1f} {cpu:7.1f} {raw:8.0f} {fair:7.0f} {fair / t:7.1f} {fair / cpu:8.1f}  "
              f"{[round(v) for v in per]}{extra}")
    if counter:
        for (name, t, _, _, fair, _, _), n, w in zip(rows, steps, [warmup] * (not args.skip_plain) +
                                                     [v[1] for v in variants], strict=True):
            iterations = chains * (w + draws)
            print(f"{name}: {n / iterations:.2f} leapfrog steps per iteration, {t / n * 1e3:.3f} ms per step "
                  f"(all of the run's time / steps), ESS per draw {fair / (chains * draws):.2f}")
    if not args.skip_plain:
        base, base_cpu = rows[0][4] / rows[0][1], rows[0][4] / rows[0][2]
        met = []
        for name, t, cpu, _, fair, _, _ in rows[1:]:
            print(f"ratio to plain Pyro (relabelled ESS): {name}: {fair / t / base:.2f}x per wall second, "
                  f"{fair / cpu / base_cpu:.2f}x per CPU second")
            if fair / t / base >= 3 and f"warm-up {warmup}" in name:
                met.append(name)
        print(f"goal (>= 3x plain Pyro's ESS/s at the same warm-up and draws): "
              f"{'met by ' + '; '.join(met) if met else 'NOT met'}")


if __name__ == "__main__":
    main()
