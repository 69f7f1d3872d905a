"""NUTS on four general models: ppvae against NumPyro, the same model, data, chains, warm-up and draws, side by side.

Models: the files in ``examples/`` (imported as ``examples/FILE.py:CLASS``, ``ppvae.import_model``) on their data in
``examples/data/``, and the same model written in NumPyro below (:data:`NUMPYRO_MODELS`). Before timing, the log
joint density of both at the same constrained point (ppvae's ``Potential.log_joint`` with the discrete latents summed
out; NumPyro's ``log_density``) must agree to 1e-3 relative, else the script stops:

* ``hier``: hierarchical logistic regression with correlated group effects (LKJ), ``examples/hier_logistic.py``;
* ``ordinal``: ordinal regression with ordered cutpoints, ``examples/ordinal.py``;
* ``hmm``: a two-state Gaussian HMM of one 60-step sequence, forward algorithm, ``examples/hmm.py`` (NumPyro: the
  same recursion by ``jax.lax.scan``);
* ``annotation``: Dawid-Skene crowd annotation, 40 items x 4 annotators, ``examples/annotation.py`` (ppvae sums the
  true classes by enumeration; NumPyro by the same sum written out, ``logsumexp`` over classes: funsor, which
  NumPyro's enumeration needs, is not installed, and the closed form is the faster of the two for NumPyro).

Configurations (printed with the results):

* **NumPyro** (if installed; else skipped with a line): ``NUTS(model)`` with its defaults (target_accept_prob=0.8,
  max_tree_depth=10, diagonal mass matrix adapted in Stan's windows, init_to_uniform), ``MCMC(num_chains=4,
  chain_method='sequential')`` (one JAX CPU device: 'parallel' needs one per chain), one XLA CPU thread
  (``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``), the time of the first
  ``mcmc.run`` (its compilation counted), float32.
* **ppvae vectorized**: ``run_mcmc(model, data, num_chains=4, vectorized=True, jit=True, compile=C, cores=1)``
  (``--compile``, default "auto": compiled from 1,000 warm-up + draws per chain on): the four chains in lockstep,
  every leapfrog step one evaluation of the potential and its gradient over all chains, compiled by TorchInductor
  into C++ (:mod:`ppvae.infer.mcmc.compiled`; with ``compile=False`` the ``torch.jit.trace`` graph), NumPyro's NUTS
  and Stan's warm-up per chain (:mod:`ppvae.infer.mcmc.vectorized`), one torch thread, float32, model's init plus
  uniform(-0.5, 0.5) jitter, tracing and compilation counted, inductor's on-disk cache empty at the start (a fresh
  ``TORCHINDUCTOR_CACHE_DIR``; ``--warm-cache`` keeps the user's).

Order: the two run one after the other in one process, NumPyro first on the 1st and 3rd model, ppvae first on the
2nd and 4th (``--models``' order), so that a load that changes during the run favours neither side; compare the
ratios, and CPU seconds, which depend less on the load.
* **ppvae per chain** (``--per-chain``): ``run_mcmc(..., jit=True, cores=1)``, Pyro's NUTS on each chain in turn.

Reported per model: wall and CPU seconds (this process and its children: the C++ compiler), min bulk ESS over every
scalar of every latent (ArviZ), min ESS per wall second, leapfrog steps, divergences, the wall-time and CPU-time
ratios ppvae / NumPyro and the ESS/s ratio.

    python benchmarks/bench_nuts_general.py                      # 4 chains x (1000 warm-up + 1000 draws)
    python benchmarks/bench_nuts_general.py --warmup 300 --draws 300 --models hier,hmm
    python benchmarks/bench_nuts_general.py --quick               # 4 chains x (100 + 100), a smoke run
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
import warnings

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
if "--warm-cache" not in sys.argv:  # inductor's on-disk cache starts empty: every compile is counted in full
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_nuts_inductor_")
    atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import ppvae  # noqa: E402
from ppvae.infer.mcmc.potential import Potential  # noqa: E402
from ppvae.infer.mcmc.sampler import run_mcmc  # noqa: E402

try:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as nd
    from numpyro.infer import MCMC, NUTS
    from numpyro.infer.util import log_density
except ImportError:  # the benchmark runs ppvae alone
    numpyro = None

SPECS = {  # name: (model spec, data spec, constructor options)
    "hier": ("examples/hier_logistic.py:HierLogistic", "examples/data/hier_logistic.csv:target=y"),
    "ordinal": ("examples/ordinal.py:Ordinal", "examples/data/ordinal.csv:target=y"),
    "hmm": ("examples/hmm.py:HMM", "examples/data/hmm.csv"),
    "annotation": ("examples/annotation.py:DawidSkene", "examples/data/annotation.csv"),
}


# -- the same models in NumPyro ----------------------------------------------------------------------
def np_hier(x, y, groups=8, lkj_eta=2.0):
    mu = numpyro.sample("mu", nd.Normal(jnp.zeros(2), 2.0).to_event(1))
    sigma = numpyro.sample("sigma", nd.HalfNormal(jnp.ones(2)).to_event(1))
    corr = numpyro.sample("L", nd.LKJCholesky(2, lkj_eta))
    z = numpyro.sample("z", nd.Normal(jnp.zeros((groups, 2)), 1.0).to_event(2))
    b = mu + z @ (sigma[:, None] * corr).T
    rows = b[x[:, 0].astype(jnp.int32)]
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", nd.Bernoulli(logits=rows[:, 0] + rows[:, 1] * x[:, 1]), obs=y)


def np_ordinal(x, y, K=3, prior_sd=2.0, cut_sd=5.0):
    beta = numpyro.sample("beta", nd.Normal(jnp.zeros(x.shape[1]), prior_sd).to_event(1))
    base = nd.Normal(jnp.zeros(K - 1), cut_sd).to_event(1)
    cut = numpyro.sample("cutpoints", nd.TransformedDistribution(base, nd.transforms.OrderedTransform()))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", nd.OrderedLogistic((x * beta).sum(-1), cut), obs=y.astype(jnp.int32))


def np_hmm(x, y, sd=1.0):
    x = x[:, 0]
    trans = numpyro.sample("trans", nd.Dirichlet(jnp.ones((2, 2))).to_event(1))
    mu = numpyro.sample("mu", nd.Normal(jnp.array([-1.0, 1.0]), 1.0).to_event(1))
    emit = nd.Normal(mu, sd).log_prob(x[:, None])  # (T, 2)
    log_trans = jnp.log(trans)

    def step(alpha, e):
        return jax.nn.logsumexp(alpha[:, None] + log_trans, 0) + e, None

    alpha, _ = jax.lax.scan(step, jnp.log(jnp.full(2, 0.5)), emit)
    numpyro.factor("x", jax.nn.logsumexp(alpha))


def np_annotation(x, y, K=3, diag=4.0):
    num_annotators = x.shape[1]
    pi = numpyro.sample("pi", nd.Dirichlet(jnp.ones(K)))
    conc = jnp.broadcast_to(1.0 + (diag - 1.0) * jnp.eye(K), (num_annotators, K, K))
    theta = numpyro.sample("theta", nd.Dirichlet(conc).to_event(2))
    labels = x.astype(jnp.int32)  # (I, A)
    # log p(y_i) = log sum_k pi_k prod_a theta[a, k, y_ia]: the true class summed out
    per_class = jnp.log(theta)[jnp.arange(num_annotators), :, labels].sum(1)  # (I, K)
    with numpyro.plate("data", x.shape[0]):
        numpyro.factor("y", jax.nn.logsumexp(jnp.log(pi) + per_class, -1))


NUMPYRO_MODELS = {"hier": np_hier, "ordinal": np_ordinal, "hmm": np_hmm, "annotation": np_annotation}


# -- running both --------------------------------------------------------------------------------------
def load(name):
    model_spec, data_spec = SPECS[name]
    model = ppvae.import_model(model_spec)()
    data = ppvae.load_dataset(data_spec)
    return model, data


def check_same_density(name, model, data, seed=0) -> float:
    """|log p_ppvae - log p_numpyro| / (1 + |log p|) at a prior draw of the continuous latents (stops if > 1e-3)."""
    model.setup(data)
    batch = data.batch()
    potential = Potential(model, batch, max_plate_nesting=model.structure(batch).max_plate_nesting, model=model)
    torch.manual_seed(seed)
    trace = model.trace(batch)
    values = {n: trace.nodes[n]["value"].detach() for n in potential.sites}
    ours = float(potential.log_joint(values))
    x, y = data.x.numpy(), None if data.y is None else data.y.numpy()
    theirs = float(log_density(NUMPYRO_MODELS[name], (x, y), {}, {k: jnp.asarray(v.numpy()) for k, v in
                                                                    values.items()})[0])
    gap = abs(ours - theirs) / (1 + abs(ours))
    if not gap <= 1e-3:
        raise SystemExit(f"{name}: log joint differs: ppvae {ours:.6f}, NumPyro {theirs:.6f}")
    return gap


def min_ess(samples: dict) -> float:
    """Min bulk ESS (ArviZ) over every non-constant scalar of every site; samples: site -> (chains, draws, ...)."""
    values = []
    for v in samples.values():
        v = np.asarray(v, dtype=np.float64).reshape(v.shape[0], v.shape[1], -1)
        for j in range(v.shape[-1]):
            if v[..., j].std() > 1e-9:
                values.append(float(az.ess(np.ascontiguousarray(v[..., j]), method="bulk")))
    return min(values)


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (inductor runs the C++ compiler as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_numpyro(name, data, chains, warmup, draws, seed):
    x, y = data.x.numpy(), None if data.y is None else data.y.numpy()
    start, cpu = time.perf_counter(), cpu_seconds()
    mcmc = MCMC(NUTS(NUMPYRO_MODELS[name]), num_warmup=warmup, num_samples=draws, num_chains=chains,
                chain_method="sequential", progress_bar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mcmc.run(jax.random.PRNGKey(seed), x, y, extra_fields=("num_steps", "diverging"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    extra = mcmc.get_extra_fields()
    return {"wall": wall, "cpu": cpu, "ess": min_ess(samples), "steps": int(np.asarray(extra["num_steps"]).sum()),
            "div": int(np.asarray(extra["diverging"]).sum()), "samples": samples}


def run_ppvae(model, data, chains, warmup, draws, seed, vectorized, compile="auto"):
    start, cpu = time.perf_counter(), cpu_seconds()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_mcmc(model, data, num_draws=draws, warmup=warmup, num_chains=chains, jit=True,
                          vectorized=vectorized, seed=seed, progress=False, cores=1,
                          compile=compile if vectorized else False)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    steps = int(sum(result.mcmc.diagnostics().get("leapfrog steps", {}).values()))  # 0: Pyro's kernel counts none
    samples = {k: v.numpy() for k, v in result.samples.items()}
    return {"wall": wall, "cpu": cpu, "ess": min_ess(samples), "steps": steps, "div": result.num_divergences,
            "samples": samples, "compiled": result.config.get("compiled")}


def mean_gap(ours: dict, theirs: dict) -> float:
    """max over scalars of |posterior mean (ppvae) - posterior mean (NumPyro)| / NumPyro's posterior sd: the two
    samplers agree on the posterior (a few Monte Carlo standard errors, ~0.1 for ESS ~ 400)."""
    gaps = []
    for k, a in theirs.items():
        a, b = a.reshape(-1, *a.shape[2:]), ours[k].reshape(-1, *ours[k].shape[2:])
        sd = a.std(0)
        ok = sd > 1e-9
        gaps.append(float((np.abs(b.mean(0) - a.mean(0))[ok] / sd[ok]).max()) if ok.any() else 0.0)
    return max(gaps)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(SPECS), help="comma-separated: " + ", ".join(SPECS))
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="100 warm-up + 100 draws")
    parser.add_argument("--per-chain", action="store_true", help="also ppvae's per-chain sampler (Pyro's NUTS)")
    parser.add_argument("--compile", default="auto", choices=("auto", "true", "false"),
                        help="run_mcmc's compile= for the vectorized sampler (auto: from 1,000 iterations per chain)")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk cache (default: empty)")
    args = parser.parse_args(argv)
    warmup, draws = (100, 100) if args.quick else (args.warmup, args.draws)
    torch.set_num_threads(1)
    print(f"{args.chains} chains x ({warmup} warm-up + {draws} draws); one thread each side; load average "
          f"{os.getloadavg()[0]:.1f} at start")
    if numpyro is None:
        print("NumPyro not installed (pip install numpyro jax jaxlib): ppvae only")
    else:
        print(f"NumPyro {numpyro.__version__} (jax {jax.__version__}): NUTS defaults (target_accept_prob=0.8, "
              "max_tree_depth=10, diagonal mass), chain_method='sequential', XLA one thread, compile counted")
    compile = {"auto": "auto", "true": True, "false": False}[args.compile]
    print(f"ppvae: run_mcmc(vectorized=True, jit=True, compile={compile!r}, cores=1): chains in lockstep, NUTS "
          "defaults (target_accept 0.8, max_tree_depth 10, diagonal mass), tracing and compile counted, inductor "
          f"cache {'warm' if args.warm_cache else 'empty'} ({os.environ.get('TORCHINDUCTOR_CACHE_DIR', 'default')})")
    rows = []
    for i, name in enumerate(args.models.split(",")):
        model, data = load(name)
        line = {"model": name}
        if numpyro is not None:
            line["density gap"] = check_same_density(name, model, data, args.seed)
        if i % 2:  # ppvae first on every other model (module docstring)
            line["ppvae"] = run_ppvae(model, data, args.chains, warmup, draws, args.seed, True, compile)
        if numpyro is not None:
            line["numpyro"] = run_numpyro(name, data, args.chains, warmup, draws, args.seed)
        if not i % 2:
            line["ppvae"] = run_ppvae(model, data, args.chains, warmup, draws, args.seed, True, compile)
        if args.per_chain:
            line["ppvae per chain"] = run_ppvae(model, data, args.chains, warmup, draws, args.seed, vectorized=False)
        rows.append(line)
        report(line)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if numpyro is not None:
        print("| model | NumPyro wall / CPU s | ppvae wall / CPU s | ratio ppvae/NumPyro wall / CPU | NumPyro ESS/s | "
              "ppvae ESS/s | ESS/s ratio |")
        print("|---|---|---|---|---|---|---|")
        for line in rows:
            a, b = line["numpyro"], line["ppvae"]
            print(f"| {line['model']} | {a['wall']:.1f} / {a['cpu']:.1f} | {b['wall']:.1f} / {b['cpu']:.1f} | "
                  f"{b['wall'] / a['wall']:.2f} / {b['cpu'] / a['cpu']:.2f} | "
                  f"{a['ess'] / a['wall']:.1f} | {b['ess'] / b['wall']:.1f} | "
                  f"{(b['ess'] / b['wall']) / (a['ess'] / a['wall']):.2f} |")


def report(line):
    for key, r in line.items():
        if isinstance(r, dict):
            print(f"  {line['model']:10s} {key:16s} wall {r['wall']:7.1f} s  CPU {r['cpu']:7.1f} s  min ESS "
                  f"{r['ess']:7.0f}  ESS/s {r['ess'] / r['wall']:7.1f}  leapfrog steps {r['steps'] or '-'}  "
                  f"divergences {r['div']}" + (f"  ({r['compiled']})" if r.get("compiled") else "") +
                  f"  [load {os.getloadavg()[0]:.1f}]", flush=True)
    if "numpyro" in line:
        print(f"  {line['model']:10s} posterior means, max |ppvae - NumPyro| / NumPyro's sd: "
              f"{mean_gap(line['ppvae']['samples'], line['numpyro']['samples']):.2f}", flush=True)
    if "density gap" in line:
        print(f"  {line['model']:10s} log joint ppvae vs NumPyro at a prior draw: relative gap "
              f"{line['density gap']:.1e}", flush=True)


if __name__ == "__main__":
    main()
