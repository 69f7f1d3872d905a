"""Reference posteriors for three examples of issue 29, from an independent sampler: NumPyro's NUTS.

For each of ``examples/hier_logistic.py:HierLogistic``, ``examples/ordinal.py:Ordinal`` and
``examples/annotation.py:DawidSkene`` on their data in ``examples/data/``, the same model written in NumPyro (the
definitions in ``benchmarks/bench_nuts_general.py``, :data:`NUMPYRO_MODELS`, imported from there; the Dawid-Skene
true class is summed out in closed form) is sampled by NumPyro's NUTS with its defaults (target_accept_prob=0.8,
max_tree_depth=10, diagonal mass matrix, init_to_uniform), 4 chains x (1000 warm-up + 2000 draws), float64,
``PRNGKey(SEED)``. Before sampling, the log joint of the NumPyro model and of ppvae's model at a prior draw must agree
(``check_same_density``, 1e-3 relative), else the script stops.

Written per model to ``tests/reference/<model>.json``: for every scalar of every latent site (``site[i,j]``), the
posterior mean, sd, the Monte Carlo standard error of the mean (ArviZ ``mcse``, mean method), bulk ESS and R-hat;
plus the command, versions and settings. ``tests/test_example_references.py`` reads these files (no NumPyro needed).

    /work/wt/nuts/.venv/bin/python tests/reference/make_references.py              # all three, ~1-3 min each
    /work/wt/nuts/.venv/bin/python tests/reference/make_references.py --models ordinal

It needs numpyro and jax (not ppvae dependencies): run it with a Python that has them and this checkout first on
``sys.path`` (the script puts the repository root there, so the ppvae imported is this one).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.chdir(ROOT)  # the benchmark's specs are relative to the repository root

import arviz as az  # noqa: E402
import bench_nuts_general as bench  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
import numpyro  # noqa: E402
from numpyro.infer import MCMC, NUTS  # noqa: E402

numpyro.enable_x64()
MODELS = {"hier_logistic": "hier", "ordinal": "ordinal", "annotation": "annotation"}  # file name -> benchmark key
CHAINS, WARMUP, DRAWS, SEED = 4, 1000, 2000, 0


def summarize(samples: dict) -> dict:
    """site[i,...] -> mean, sd, mcse (of the mean), ess_bulk, rhat over (chains, draws); constants get sd 0."""
    out = {}
    for site, v in samples.items():
        v = np.asarray(v, dtype=np.float64)
        flat = v.reshape(v.shape[0], v.shape[1], -1)
        for j, idx in enumerate(np.ndindex(*v.shape[2:]) if v.ndim > 2 else [()]):
            d = np.ascontiguousarray(flat[..., j])
            name = site + ("[" + ",".join(map(str, idx)) + "]" if idx else "")
            entry = {"mean": float(d.mean()), "sd": float(d.std())}
            if entry["sd"] > 1e-9:
                entry.update(mcse=float(az.mcse(d, method="mean")), ess_bulk=float(az.ess(d, method="bulk")),
                             rhat=float(az.rhat(d)))
            out[name] = entry
    return out


def reference(name: str) -> dict:
    key = MODELS[name]
    model, data = bench.load(key)
    gap = bench.check_same_density(key, model, data)
    x, y = data.x.numpy().astype(np.float64), None if data.y is None else data.y.numpy().astype(np.float64)
    start = time.perf_counter()
    mcmc = MCMC(NUTS(bench.NUMPYRO_MODELS[key]), num_warmup=WARMUP, num_samples=DRAWS, num_chains=CHAINS,
                chain_method="sequential", progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(jax.random.PRNGKey(SEED), x, y, extra_fields=("diverging",))
    wall = time.perf_counter() - start
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    return {
        "model": bench.SPECS[key][0], "data": bench.SPECS[key][1],
        "sampler": "numpyro NUTS (defaults: target_accept_prob=0.8, max_tree_depth=10, diagonal mass, "
                   "init_to_uniform), chain_method='sequential', float64",
        "chains": CHAINS, "warmup": WARMUP, "draws": DRAWS, "seed": SEED,
        "divergences": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
        "log_joint_rel_gap_vs_ppvae": gap, "wall_s": round(wall, 1),
        "command": "/work/wt/nuts/.venv/bin/python tests/reference/make_references.py --models " + name,
        "versions": {"numpyro": numpyro.__version__, "jax": jax.__version__, "arviz": az.__version__,
                     "numpy": np.__version__},
        "summary": summarize(samples),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated: " + ", ".join(MODELS))
    args = parser.parse_args(argv)
    for name in args.models.split(","):
        ref = reference(name)
        path = ROOT / "tests" / "reference" / f"{name}.json"
        path.write_text(json.dumps(ref, indent=1) + "\n")
        worst = max(e.get("rhat", 1.0) for e in ref["summary"].values())
        print(f"{name}: {ref['wall_s']} s, {ref['divergences']} divergences, max rhat {worst:.4f} -> {path}")


if __name__ == "__main__":
    main()
