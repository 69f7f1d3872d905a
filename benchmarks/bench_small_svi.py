"""SVI on small models, side by side in one process: ppvae's potential path, ppvae's Pyro path, plain Pyro, a
hand-written PyTorch floor and NumPyro (issue 24).

Every implementation fits the same model (the same priors, written five ways) with a mean-field Gaussian guide over
the unconstrained globals, one particle, Adam at lr 0.01, the discrete assignments summed out, one thread:

* **ppvae (potential)**: ``ppvae.fit(model, data, guide="auto_normal", lr=0.01)``, which takes the potential path
  (``fit.info["svi_path"] == "potential"``, ppvae/infer/svi/potential_svi.py), timed twice: ``compile=False`` (the
  traced potential, autograd in PyTorch's eager dispatch) and ``compile=True`` (the whole step compiled by
  TorchInductor to C++, ppvae/infer/svi/compiled.py); ``compile="auto"`` (the default) takes the compiled step from
  5,000 steps on when autograd differentiates the potential and from 50,000 when the model gives its gradient in
  closed form (both GMMs), so **ppvae (auto)** is the traced row at 1,000 steps, and at 10,000 the compiled row
  except for the GMMs (the script asks ``Trainer`` which, and prints it);
* **ppvae (Pyro path)**: the same call with the dispatch switched off (``train.potential_path`` patched to decline):
  Pyro's ``TraceEnum_ELBO`` / ``Trace_ELBO`` through ppvae's trainer, today's path;
* **plain Pyro**: ``pyro.infer.SVI(model, AutoNormal(model without its discrete sites), pyro.optim.Adam({"lr": 0.01}),
  TraceEnum_ELBO(max_plate_nesting=1))`` (``Trace_ELBO()`` without discrete sites) on the ppvae model's ``forward``
  as a plain Pyro function (``config_enumerate``'d);
* **PyTorch floor**: the log joint written with ``torch.distributions`` (assignments summed by ``logsumexp``), the
  ``biject_to`` transforms, u = loc + softplus(rho) eps, autograd, ``torch.optim.Adam(fused=True)``; eager;
* **NumPyro** (when installed): the model in NumPyro with the assignments marginalized by ``MixtureSameFamily`` (its
  ``TraceEnum_ELBO`` needs funsor), ``AutoNormal``, ``Trace_ELBO()``, ``optax``-free ``numpyro.optim.Adam(0.01)``,
  ``SVI.run(PRNGKey(0), num_steps, progress_bar=False)`` (one ``lax.scan``, compiled on every call), JAX on CPU
  with ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``.

End to end (``E2E``) is the wall time of one call that fits from scratch (ppvae: ``fit``, trainer construction and
tracing included; NumPyro: ``SVI.run``, compilation included). Per model, ppvae runs once cold at the smaller step
count, traced and compiled (the first fit of that model in the process: what a user pays; inductor's cache starts in
a fresh temporary directory, so the cold compiled fit compiles from nothing); NumPyro runs cold at the smaller count,
then warm at both (each call recompiles: ``SVI.run`` jits per call). NumPyro's steady state per step is (warm E2E at
the larger count - warm at the smaller) / (difference in steps); ppvae's is timed directly on a trainer (3 x
--slow-steps traced steps, 20 x --slow-steps compiled ones, after 10 warm-up steps): a warm compiled fit's time is
mostly loading inductor's cache, which varies by more than the steps cost. Compile time is the cold E2E minus that
many steady steps; E2E at the larger count is the cold E2E + (difference in steps) x steady, for ppvae and NumPyro
alike. One untimed fit of each, first, pays the process's one-time costs (imports: JAX's backend start-up,
inductor's import and first compilation, of a different, trivial function).
The Pyro path, plain Pyro and the floor are timed per
step over ``--slow-steps`` steps after 10 warm-up steps (they have no compilation). Models: GMM K=2 full covariance
and K=3 diagonal on Old Faithful (unstandardized), Bayesian linear regression on examples/data/regression.csv
(noise_sd 0.5), eight schools non-centered (examples/eight_schools.py), mixture of two regressions on
examples/data/mixreg.csv (examples/mixreg.py).

    python benchmarks/bench_small_svi.py             # 1,000 and 10,000 steps
    python benchmarks/bench_small_svi.py --quick     # 200 and 1,000 steps, 50 slow steps
    python benchmarks/bench_small_svi.py --models gmm_full,blr
    python benchmarks/bench_small_svi.py --models gmm_full_autograd   # the full GMM without its closed form
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:  # compile from nothing: no cache of an earlier run
    import tempfile

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_small_svi_inductor_")

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro import poutine  # noqa: E402
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO, config_enumerate  # noqa: E402
from pyro.infer.autoguide import AutoNormal  # noqa: E402

import ppvae  # noqa: E402
from ppvae.infer.svi import train as svi_train  # noqa: E402
from ppvae.infer.svi.compiled import compile_step  # noqa: E402
from ppvae.models import GMM  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from _small_models import FLOORS, NUMPYRO_MODELS  # noqa: E402

LR = 0.01


class AutogradGMM(GMM):
    """The full-covariance GMM without its closed-form gradient (``gmm_full_autograd``): the generic potential,
    enumeration and autograd, as a model without a ``ClosedFormPotential`` hook runs."""

    def closed_form_potential(self, x, order=None):
        return None


def cases() -> dict:
    blr = ppvae.import_model(str(ROOT / "examples" / "blr.py:BayesianLinearRegression"))
    schools = ppvae.import_model(str(ROOT / "examples" / "eight_schools.py:EightSchools"))
    mixreg = ppvae.import_model(str(ROOT / "examples" / "mixreg.py:MixtureOfRegressions"))
    faithful = ppvae.load_dataset("faithful")
    regression = ppvae.load_dataset(f"{ROOT / 'examples' / 'data' / 'regression.csv'}:target=y")
    mix = ppvae.load_dataset(f"{ROOT / 'examples' / 'data' / 'mixreg.csv'}:target=y")
    school_data = __import__(schools.__module__, fromlist=["schools"]).schools()
    return {
        "gmm_full": (lambda: GMM(K=2), faithful),
        "gmm_full_autograd": (lambda: AutogradGMM(K=2), faithful),
        "gmm_diag": (lambda: GMM(K=3, covariance="diag"), faithful),
        "blr": (lambda: blr(noise_sd=0.5), regression),
        "schools": (lambda: schools(), school_data),
        "mixreg": (lambda: mixreg(K=2), mix),
    }


# -- ppvae ---------------------------------------------------------------------------------------------
def ppvae_e2e(make_model, data, steps: int, path: str) -> tuple[float, float, str]:
    """(seconds for fit() from scratch, final loss, the path that ran); ``path``: "traced" or "compiled" (the
    potential path with compile=False / True) or "pyro"."""
    original = svi_train.potential_path
    if path == "pyro":
        svi_train.potential_path = lambda trainer: (None, "switched off by the benchmark")
    try:
        start = time.perf_counter()
        fit = ppvae.fit(make_model(), data, guide="auto_normal", steps=steps, lr=LR, seed=0, progress=False,
                        check_convergence=False, compile=path == "compiled")
        seconds = time.perf_counter() - start
        ran = fit.info["svi_path"] + (" compiled" if (fit.info["svi_compile"] or "").startswith("compiled") else "")
        return seconds, fit.history["loss"][-1], ran
    finally:
        svi_train.potential_path = original


def _seconds_per_step(trainer, steps: int) -> float:
    """Seconds per ``trainer.run_step()`` over ``steps`` steps, after 10 untimed warm-up steps."""
    for _ in range(10):
        trainer.run_step()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.run_step()
    return (time.perf_counter() - start) / steps


def ppvae_pyro_step(make_model, data, steps: int) -> float:
    """Seconds per step of ppvae's Pyro path (after 10 warm-up steps)."""
    original = svi_train.potential_path
    svi_train.potential_path = lambda trainer: (None, "switched off by the benchmark")
    try:
        trainer = ppvae.Trainer(make_model(), data, guide="auto_normal", steps=steps + 10, lr=LR, seed=0)
    finally:
        svi_train.potential_path = original
    return _seconds_per_step(trainer, steps)


def plain_pyro_step(make_model, data, steps: int) -> float:
    """Seconds per step of pyro.infer.SVI with TraceEnum_ELBO on the same model."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = make_model()
    model.setup(data)
    batch = data.batch()
    plain = lambda b: model.forward(b)  # noqa: E731  (a plain Pyro function: no PyroModule, the global param store)
    discrete = bool(model.structure(batch).discrete_sites)
    guide = AutoNormal(poutine.block(plain, hide_fn=lambda m: m["type"] == "sample" and not m["is_observed"]
                                     and getattr(m["fn"], "support", None) is not None
                                     and m["fn"].support.is_discrete))
    elbo = TraceEnum_ELBO(max_plate_nesting=1) if discrete else Trace_ELBO()
    svi = SVI(config_enumerate(plain, default="parallel") if discrete else plain, guide,
              pyro.optim.Adam({"lr": LR}), elbo)
    for _ in range(10):
        svi.step(batch)
    start = time.perf_counter()
    for _ in range(steps):
        svi.step(batch)
    return (time.perf_counter() - start) / steps


# -- NumPyro -------------------------------------------------------------------------------------------
def numpyro_e2e(name: str, make_model, data, steps: int) -> tuple[float, float]:
    import jax
    from numpyro.infer import SVI as NSVI
    from numpyro.infer import Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal as NAutoNormal
    from numpyro.optim import Adam as NAdam

    model_fn, args = NUMPYRO_MODELS[name](make_model(), data)
    start = time.perf_counter()
    svi = NSVI(model_fn, NAutoNormal(model_fn), NAdam(LR), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), steps, *args, progress_bar=False)
    loss = float(result.losses[-1])  # blocks until the computation is done
    return time.perf_counter() - start, loss


def have_numpyro() -> bool:
    try:
        import jax  # noqa: F401
        import numpyro  # noqa: F401
    except ImportError:
        return False
    return True


# -- the report ----------------------------------------------------------------------------------------
def split(cold_small: float, warm_small: float, warm_large: float, small: int, large: int) -> dict:
    """Steady seconds per step from two warm calls, compile seconds from the cold one, E2E at both counts."""
    steady = (warm_large - warm_small) / (large - small)
    compile_s = cold_small - small * steady
    return {"step": steady, "compile": compile_s, small: cold_small, large: compile_s + large * steady}


def ppvae_step(make_model, data, steps: int, compiled: bool) -> float:
    """Seconds per step of the potential path (compile=True or False), timed directly over ``steps`` steps after 10
    warm-up steps (the first of which compiles, from inductor's cache: this model's cold fit ran before)."""
    trainer = ppvae.Trainer(make_model(), data, guide="auto_normal", steps=steps + 10, lr=LR, seed=0,
                            compile=compiled)
    return _seconds_per_step(trainer, steps)


def auto_compiles(make_model, data, steps: int) -> bool:
    """Whether ``compile="auto"`` (the default) compiles this model's step for a run of ``steps`` steps (the rule of
    ppvae/infer/svi/compiled.py: from 5,000 steps with autograd, from 50,000 with a closed-form gradient)."""
    return ppvae.Trainer(make_model(), data, guide="auto_normal", steps=steps, lr=LR, seed=0).fast.compile


def run_model(name: str, make_model, data, small: int, large: int, slow: int, numpyro: bool) -> dict:
    """One model: ppvae's cold fits at the small count (traced and compiled: what a user's first fit pays), NumPyro's
    cold call, then NumPyro's warm calls at both counts (each recompiles: the difference is its steady state) and
    ppvae's steady steps timed directly (a warm fit's cost is dominated by loading inductor's cache, whose time
    varies by more than 9,000 steps cost, so a difference of two warm fits is noise)."""
    times: dict = {"np": []}
    losses: dict = {}
    for path, want in (("traced", "potential"), ("compiled", "potential compiled")):
        seconds, losses[(path, small)], ran = ppvae_e2e(make_model, data, small, path)
        assert ran == want, f"{name}: {ran} ran, not {want}"
        times[path] = seconds
    if numpyro:
        for steps in (small, small, large):
            seconds, losses[("np", steps)] = numpyro_e2e(name, make_model, data, steps)
            times["np"].append(seconds)
    row = {"np": split(*times["np"], small, large)} if numpyro else {}
    for path, count in (("traced", 3 * slow), ("compiled", 20 * slow)):
        step = ppvae_step(make_model, data, count, path == "compiled")
        row[path] = {"step": step, "compile": times[path] - small * step, small: times[path],
                     large: times[path] + (large - small) * step}
    row["auto_path"] = {n: "compiled" if auto_compiles(make_model, data, n) else "traced" for n in (small, large)}
    row["auto"] = {n: row[row["auto_path"][n]][n] for n in (small, large)}
    row["losses"] = losses
    row["pyro_path"] = ppvae_pyro_step(make_model, data, slow)
    row["plain_pyro"] = plain_pyro_step(make_model, data, slow)
    row["floor"] = FLOORS[name](make_model(), data, slow, LR)
    return row


def print_row(name: str, row: dict, small: int, large: int, numpyro: bool) -> None:
    ms = lambda s: f"{1e3 * s:.3f}"  # noqa: E731
    tr, co = row["traced"], row["compiled"]
    print(f"\n== {name} ==")
    print(f"ms/step: traced {ms(tr['step'])} | compiled {ms(co['step'])} | Pyro path {ms(row['pyro_path'])} | "
          f"plain Pyro {ms(row['plain_pyro'])} | PyTorch floor {ms(row['floor'])}"
          + (f" | NumPyro {ms(row['np']['step'])}" if numpyro else ""))
    print(f"compile s: traced {tr['compile']:.2f} | compiled {co['compile']:.2f}"
          + (f" | NumPyro {row['np']['compile']:.2f}" if numpyro else ""))
    print(f"speed-up per step vs Pyro path: traced {row['pyro_path'] / tr['step']:.1f}x, compiled "
          f"{row['pyro_path'] / co['step']:.1f}x; compiled vs plain Pyro {row['plain_pyro'] / co['step']:.1f}x, "
          f"vs floor {row['floor'] / co['step']:.2f}x")
    for steps in (small, large):
        auto = row["auto"][steps]
        line = (f"E2E {steps} steps: traced {tr[steps]:.2f} s, compiled {co[steps]:.2f} s, ppvae auto "
                f"({row['auto_path'][steps]}) {auto:.2f} s")
        if numpyro:
            line += f", NumPyro {row['np'][steps]:.2f} s, NumPyro / ppvae auto {row['np'][steps] / auto:.2f}x"
        print(line, flush=True)
    print("final losses: " + ", ".join(f"{k[0]}@{k[1]} {v:.2f}" for k, v in sorted(row["losses"].items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 and 1,000 steps; 50 slow steps")
    parser.add_argument("--models", default="gmm_full,gmm_diag,blr,schools,mixreg")
    parser.add_argument("--slow-steps", type=int, default=None, help="steps timed on the paths without compilation")
    args = parser.parse_args()
    torch.set_num_threads(1)
    small, large = (200, 1000) if args.quick else (1000, 10000)
    slow = args.slow_steps or (50 if args.quick else 200)
    numpyro = have_numpyro()
    if not numpyro:
        print("NumPyro is not installed (pip install numpyro jax): its columns are skipped")
    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, pyro {pyro.__version__}")
    all_cases = cases()
    warm_model, warm_data = all_cases["blr"]  # one untimed fit each: the process's first-call costs (lazy imports,
    ppvae_e2e(warm_model, warm_data, 10, "traced")  # JAX's backend start-up, inductor's import) are no model's compile
    compile_step(lambda x: (x * 2 + 1,), (torch.zeros(3),))  # time; a trivial function, so nothing is cached
    if numpyro:
        numpyro_e2e("blr", warm_model, warm_data, 10)
    for name in args.models.split(","):
        make_model, data = all_cases[name]
        row = run_model(name, make_model, data, small, large, slow, numpyro)
        print_row(name, row, small, large, numpyro)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
