"""The ``ppvae`` command line: parse, validate, call the Python API, print a summary, exit 2 on errors.

Every command that writes results builds them in a temporary directory beside ``--out`` and renames
it into place only when everything succeeded, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time

from ._validation import PPVAEError

EXIT_USAGE = 2
CHECKPOINTS = "checkpoints"  # the folder of a run directory written during `fit` (ppvae/checkpoint.py)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr and exits 2."""

    def error(self, message):
        raise PPVAEError(f"{self.prog}: {message}")


def _kv_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PPVAEError(f"hyperparameter: expected KEY=VALUE after the model name; got '{item}'")
        out[key] = value
    return out


def check_out(out: str, overwrite: bool = False, checkpoints: bool = False, resume: bool = False) -> str:
    """Check that ``out`` may receive a run; with ``checkpoints`` a ``checkpoints/`` folder may already be
    there (an interrupted run), which only ``resume`` continues and ``overwrite`` starts over."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise PPVAEError(f"--out: expected a directory path; got an existing file {out}")
        others = [n for n in os.listdir(out) if not (checkpoints and n == CHECKPOINTS)]
        if others and not overwrite:
            raise PPVAEError(f"--out: expected a new or empty directory; {out} already has files (pass --overwrite)")
        stale = os.path.join(out, CHECKPOINTS)
        if checkpoints and not resume and os.path.isdir(stale) and os.listdir(stale) and not overwrite:
            raise PPVAEError(f"--out: {stale} holds checkpoints of an earlier run; pass --resume {out} to "
                             "continue it or --overwrite to start over")
    return out


@contextlib.contextmanager
def run_directory(out: str, overwrite: bool = False, checkpoints: bool = False, resume: bool = False):
    """Yield a temporary directory; on success move it to ``out`` (which must be new or empty).

    With ``checkpoints``, ``out/checkpoints/`` is written directly during the run (so a killed run
    leaves it for ``--resume``) and is moved into the finished run directory at the end; a failed run
    leaves only that folder."""
    out = check_out(out, overwrite, checkpoints, resume)
    if checkpoints and overwrite and not resume:
        shutil.rmtree(os.path.join(out, CHECKPOINTS), ignore_errors=True)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ppvae-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if checkpoints and os.path.isdir(os.path.join(out, CHECKPOINTS)):
        os.replace(os.path.join(out, CHECKPOINTS), os.path.join(tmp, CHECKPOINTS))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_metrics(directory: str, metrics: dict) -> None:
    from .results import atomic_write

    atomic_write(os.path.join(directory, "metrics.json"), lambda fh: json.dump(metrics, fh, indent=2))


def _load_data(args):
    from .data import load_dataset

    options = {"mmap": True} if getattr(args, "mmap", False) else {}
    name = args.data
    if ":" in name and not os.path.exists(name):  # NAME:KEY=VALUE[,KEY=VALUE], e.g. reuters:split=train
        name, _, extra = name.partition(":")
        options.update(_kv_pairs(extra.split(",")))
    return load_dataset(name, standardize=getattr(args, "standardize", False), **options)


# -- commands -----------------------------------------------------------------------------------------
def cmd_models(args) -> int:
    from .model import list_models

    for name, desc in list_models().items():
        print(f"{name:14s} {desc}")
    return 0


def cmd_datasets(args) -> int:
    from .data import list_datasets

    for name, desc in list_datasets().items():
        print(f"{name:14s} {desc}")
    return 0


def _mixture_plot(model, values, data, resp, path, title):
    from .plots import plot_mixture_2d

    if data.x.shape[1] != 2 or not hasattr(model, "mixture_components"):
        return
    w, locs, covs = model.mixture_components(values)
    plot_mixture_2d(data.x.cpu(), resp.cpu(), w.cpu(), locs.cpu(), covs.cpu(), path,
                    columns=data.meta.get("columns"), title=title)


def _betas(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise PPVAEError(f"--betas: expected two numbers B1,B2 such as 0.9,0.999; got '{text}'")
    return values


def cmd_fit(args) -> int:
    import torch

    from .model import build_model
    from .plots import plot_loss
    from .train import fit

    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    defaults = getattr(model, "train_defaults", {})  # a model's own defaults for flags left unset
    batch_size = args.batch_size if args.batch_size is not None else defaults.get("batch_size")
    lr = args.lr if args.lr is not None else defaults.get("lr", 0.01)
    betas = _betas(args.betas) if args.betas is not None else defaults.get("betas", (0.9, 0.999))
    elbo = args.elbo if args.elbo != "auto" else defaults.get("elbo", "auto")
    steps = args.steps if args.steps is not None or args.epochs is not None else defaults.get("steps")
    ckpt, resume = args.checkpoint_every is not None or args.resume is not None, args.resume is not None
    options = dict(
        guide=args.guide, elbo=elbo, steps=steps, epochs=args.epochs, batch_size=batch_size, lr=lr, betas=betas,
        seed=args.seed, device=args.device, num_particles=args.num_particles, patience=args.patience,
        beta=args.beta, kl_warmup_steps=args.kl_warmup_steps,
        jit=args.jit if args.jit is not None else defaults.get("jit", False),
        checkpoint_dir=os.path.join(os.path.abspath(args.out), CHECKPOINTS) if ckpt else None,  # written directly
        checkpoint_every=args.checkpoint_every, resume=args.resume, distributed=args.distributed,
    )
    if args.distributed and _rank(args) != 0:  # the other ranks train beside rank 0, which alone writes
        check_out(args.out, args.overwrite, ckpt, resume)
        fit(model, data, progress=False, **options)
        return 0
    with run_directory(args.out, args.overwrite, ckpt, resume) as tmp:
        callbacks = model.fit_callbacks(data) if hasattr(model, "fit_callbacks") else None
        result = fit(model, data, callbacks=callbacks, progress=False if args.quiet else None, **options)
        result.save(tmp)
        ll, exact = None, False
        try:
            ll_points = result.log_likelihood(data)
            ll, exact = float(ll_points.double().sum()), True
        except PPVAEError:
            pass  # continuous local latents: the evaluation layer estimates log p(x)
        metrics = {
            "model": args.model, "method": result.method, "elbo": result.elbo_name, "num_data": len(data),
            "data": data.name, "time_s": result.history["time_s"], "steps": result.history["steps"],
            "loss_final": result.history["loss"][-1], "log_likelihood": ll, "log_likelihood_exact": exact,
            "config": {"hparams": model.hparams, "train": vars(result.config)},
        }
        write_metrics(tmp, metrics)
        plot_loss(result.history["loss"], os.path.join(tmp, "loss.png"))
        if ll is not None and result.model.discrete_latent_sites(data.batch()):
            with torch.no_grad():
                resp = next(iter(result.discrete_posterior(data).values()))
            _mixture_plot(model, result.global_values(data), data, resp, os.path.join(tmp, "mixture.png"),
                          f"{args.model} by {result.method}")
        if hasattr(model, "report"):  # model-specific figures (e.g. the VAE's reconstructions)
            extra = model.report(result, data, tmp)
            if isinstance(extra, dict):  # model-specific metrics (e.g. topic coherence) join metrics.json
                metrics.update(extra)
                write_metrics(tmp, metrics)
    _summary(metrics, args.out)
    return 0


def _rank(args) -> int:
    """Join the torchrun process group (ppvae/distributed.py); this process's rank."""
    from .distributed import init_from_env

    return init_from_env(args.device)[0]


def cmd_em(args) -> int:
    import torch

    from .em import fit_em
    from .model import build_model
    from .plots import plot_em_trace

    model = build_model(args.model, **_kv_pairs(args.hparams))
    if not hasattr(model, "em_step"):
        raise PPVAEError(f"model: '{args.model}' has no closed-form EM; models with EM: {', '.join(_em_models())}")
    data = _load_data(args)
    with run_directory(args.out, args.overwrite) as tmp:
        result = fit_em(model, data, restarts=args.restarts, max_iter=args.max_iter, tol=args.tol, seed=args.seed)
        result.save(tmp)
        metrics = {
            "model": args.model, "method": "em", "num_data": len(data), "data": data.name, "time_s": result.time_s,
            "iterations": result.num_iterations, "converged": result.converged,
            "log_likelihood": result.log_likelihood, "log_likelihood_exact": True,
            "params": {k: v.tolist() for k, v in result.params.items()},
            "config": {"hparams": model.hparams, **result.config},
        }
        write_metrics(tmp, metrics)
        plot_em_trace(result.history, os.path.join(tmp, "em_trace.png"))
        if hasattr(model, "mixture_components"):
            with torch.no_grad():
                x = data.x.double()
                values = model.em_to_sites(result.params)
                resp = model.em_responsibilities(x, result.params)
            _mixture_plot(model, values, data, resp, os.path.join(tmp, "mixture.png"), f"{args.model} by EM")
    _summary(metrics, args.out)
    return 0


def cmd_compare(args) -> int:
    from .compare import compare, parse_methods
    from .model import build_model

    methods = parse_methods(args.methods)
    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    check_out(args.out, args.overwrite)
    result = compare(model, data, methods, test_fraction=args.test_fraction, seed=args.seed, svi_steps=args.steps,
                     svi_lr=args.lr, num_draws=args.draws, num_samples=args.samples, warmup=args.warmup,
                     num_chains=args.chains, jit=not args.no_jit, progress=False if args.quiet else None,
                     cores=args.cores)
    with run_directory(args.out, args.overwrite) as tmp:
        result.save(tmp)
    print(result.to_markdown())
    failed = [r["method"] for r in result.records if r["status"] != "ok"]
    print(f"written to {args.out}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if len(failed) == len(result.records) else 0


def cmd_mcmc(args) -> int:
    import torch

    from .inference_data import summary, to_inference_data
    from .mcmc import run_mcmc
    from .model import build_model
    from .results import atomic_write

    if args.rhat and args.chains < 2:
        raise PPVAEError(f"--rhat: R-hat compares chains; expected --chains >= 2; got {args.chains}")
    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    check_out(args.out, args.overwrite)
    order = None
    if args.order:
        site, _, column = args.order.partition(":")
        if not column.isdigit():
            raise PPVAEError(f"--order: expected SITE:COLUMN, e.g. locs:0; got '{args.order}'")
        order = (site, int(column))
    init = None
    if args.init == "em":
        from .em import fit_em

        init = fit_em(model, data, restarts=5, seed=args.seed)
    elif args.init == "prior":
        init = "prior"
    result = run_mcmc(model, data, kernel=args.kernel, num_samples=args.samples, warmup=args.warmup,
                      num_chains=args.chains, init=init, order=order, jit=args.jit, seed=args.seed,
                      target_accept=args.target_accept, progress=False if args.quiet else None, cores=args.cores)
    idata = to_inference_data(result, data)
    table = summary(idata)
    with run_directory(args.out, args.overwrite) as tmp:
        table.to_csv(os.path.join(tmp, "summary.csv"))
        samples = {k: v.cpu() for k, v in result.samples.items()}
        atomic_write(os.path.join(tmp, "samples.pt"), lambda fh: torch.save(samples, fh), mode="wb")
        metrics = {"model": args.model, "method": args.kernel, "data": data.name, "num_data": len(data),
                   "time_s": result.time_s, "num_divergences": result.num_divergences,
                   "ess_bulk_min": float(table["ess_bulk"].min()), "rhat_max": float(table["r_hat"].max())
                   if result.num_chains >= 2 else None, "label_alignment": idata.posterior.attrs.get("label_alignment"),
                   "config": {"hparams": model.hparams, **result.config}}
        write_metrics(tmp, metrics)
    print(table.to_string())
    print(f"{args.kernel}: {result.num_chains} x {result.num_draws} draws in {result.time_s:.1f} s, "
          f"{result.num_divergences} divergences; written to {args.out}")
    return 0


def cmd_cavi(args) -> int:
    """Coordinate-ascent mean-field VI for a model that provides it (``fit_cavi``; LDA)."""
    from .model import build_model
    from .plots import plot_em_trace

    model = build_model(args.model, **_kv_pairs(args.hparams))
    if not hasattr(model, "fit_cavi"):
        raise PPVAEError(f"model: '{args.model}' has no coordinate-ascent VI (fit_cavi); use lda")
    data = _load_data(args)
    with run_directory(args.out, args.overwrite) as tmp:
        result = model.fit_cavi(data, max_iter=args.max_iter, tol=args.tol, seed=args.seed,
                                update_alpha=args.update_alpha)
        result.save(tmp)
        metrics = {"model": args.model, "method": "cavi", "num_data": len(data), "data": data.name,
                   "time_s": result.time_s, "iterations": result.num_iterations, "converged": result.converged,
                   "elbo": result.elbo, "alpha": result.alpha, "log_likelihood": None,
                   "config": {"hparams": model.hparams, **result.config}}
        metrics.update(model.report(result, data, tmp))
        write_metrics(tmp, metrics)
        plot_em_trace([result.history], os.path.join(tmp, "elbo_trace.png"))
    print(f"{args.model} on {data.name} ({len(data)} documents) by CAVI: {result.num_iterations} iterations, "
          f"converged: {result.converged}, ELBO {result.elbo:.2f}, time {result.time_s:.2f} s\n  written to {args.out}")
    return 0


def _em_models() -> list[str]:
    from .model import get_model_class, list_models

    return [n for n in list_models() if hasattr(get_model_class(n), "em_step")]


def _summary(metrics: dict, out: str) -> None:
    ll = metrics.get("log_likelihood")
    if ll is None:
        ll_text = "n/a (use ppvae evaluate)"
    else:
        ll_text = f"{ll:.4f}" + ("" if metrics.get("log_likelihood_exact") else " (estimate)")
    lines = [f"{metrics['model']} on {metrics['data']} ({metrics['num_data']} points) by {metrics['method']}"]
    if "loss_final" in metrics:
        lines.append(f"  steps {metrics['steps']}, final loss {metrics['loss_final']:.4f}")
    if "iterations" in metrics:
        lines.append(f"  {metrics['iterations']} iterations, converged: {metrics['converged']}")
    lines.append(f"  log-likelihood {ll_text}, time {metrics['time_s']:.2f} s")
    lines.append(f"  written to {out}")
    print("\n".join(lines))


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run

    if not os.path.isdir(args.run_dir):
        raise PPVAEError(f"run_dir: expected a run directory written by `ppvae fit`; got {args.run_dir}")
    _, entry = evaluate_run(args.run_dir, args.data, num_samples=args.num_samples, proposal=args.proposal,
                            chunk_size=args.chunk_size, seed=args.seed)
    se = entry["stderr"] if entry["stderr"] is not None else float("nan")
    print(f"log p(x): mean {entry['mean']:.4f} +- {se:.4f} over {entry['num_points']} points, "
          f"total {entry['total']:.3f} (K={entry['num_samples']}, {entry['proposal']} proposal); "
          f"ELBO mean {entry['elbo_mean']:.4f}")
    khat = "n/a (weights exact or K too small)" if entry["khat_max"] is None else f"{entry['khat_max']:.3f}"
    print(f"ESS mean {entry['ess_mean']:.1f}; k-hat max {khat}; {entry['num_khat_over_0_7']} points with k-hat > 0.7")
    for warning in entry["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {os.path.join(args.run_dir, 'metrics.json')} and log_marginal.png")
    return 0


# -- parser -------------------------------------------------------------------------------------------
def _common(p, with_model=True):
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch intra-op threads (default {DEFAULT_THREADS}: fastest for small models on a shared "
                        "machine; try more for a large network on an idle one)")
    if with_model:
        p.add_argument("model", help="model name (see `ppvae models`)")
        p.add_argument("hparams", nargs="*", metavar="KEY=VALUE", help="model hyperparameters, e.g. K=3")
    p.add_argument("--data", required=True, help="data set name (see `ppvae datasets`; NAME:KEY=VALUE passes "
                   "loader options, e.g. reuters:split=train) or a CSV/NPY path")
    p.add_argument("--standardize", action="store_true", help="scale each column to mean 0, sd 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")


DEFAULT_THREADS = 1  # measured: small models run 1.3-3.4x slower at 2 threads on a busy 2-core machine (README)


def _set_threads(args) -> None:
    """``--threads``: torch intra-op threads of this process (worker processes always use one)."""
    import torch

    threads = getattr(args, "threads", None)
    threads = DEFAULT_THREADS if threads is None else threads
    if threads < 1:
        raise PPVAEError(f"--threads: expected an integer >= 1; got {threads}")
    torch.set_num_threads(threads)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppvae", description="Latent-variable models on Pyro: fit, evaluate, compare.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("models", help="list the models").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the bundled data sets").set_defaults(func=cmd_datasets)

    p = sub.add_parser("fit", help="fit a model by SVI")
    _common(p)
    p.add_argument("--guide", default="auto",
                   help="auto_delta, auto_normal, auto_lowrank_mvn, auto_mvn, auto_iaf, amortized, model")
    p.add_argument("--elbo", default="auto", help="auto, trace, meanfield, enum")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None)
    steps.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01, or the model's own)")
    p.add_argument("--betas", default=None, metavar="B1,B2",
                   help="Adam's decay rates (default 0.9,0.999, or the model's own: prodlda 0.99,0.999)")
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--beta", type=float, default=1.0, help="weight of the local latents' KL term (beta-VAE)")
    p.add_argument("--kl-warmup-steps", type=int, default=0, help="ramp the KL weight linearly over these steps")
    p.add_argument("--patience", type=int, default=None, help="early stopping after this many steps without gain")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=None,
                   help="trace the objective once per batch shape (default: the model's choice; on for vae, m2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint-every", type=int, default=None, metavar="N",
                   help="write OUT/checkpoints/checkpoint-<step>.pt every N steps (and at the end)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue from the newest checkpoint in RUN_DIR (or RUN_DIR/checkpoints)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel SVI; launch with torchrun --nproc_per_node=N -m ppvae.cli fit ...")
    p.add_argument("--mmap", action="store_true", help="memory-map an .npy --data file instead of reading it")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("em", help="fit a model by closed-form EM")
    _common(p)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--tol", type=float, default=1e-10, help="stop when a step gains less than this per point")
    p.set_defaults(func=cmd_em)

    p = sub.add_parser("cavi", help="coordinate-ascent mean-field VI (LDA: Blei et al. 2003; ELBO never decreases)")
    _common(p)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-5, help="stop when an iteration gains less than tol x |ELBO|")
    p.add_argument("--update-alpha", action="store_true", help="Newton updates of the Dirichlet alpha")
    p.set_defaults(func=cmd_cavi)

    p = sub.add_parser("compare", help="run a model with several methods (em, svi:<guide>, nuts, hmc); one table")
    _common(p)
    p.add_argument("--methods", required=True, help="comma-separated, e.g. em,svi:auto_normal,svi:auto_mvn,nuts")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the data")
    p.add_argument("--steps", type=int, default=2000, help="SVI steps")
    p.add_argument("--lr", type=float, default=0.01, help="SVI learning rate")
    p.add_argument("--draws", type=int, default=1000, help="draws from each SVI guide")
    p.add_argument("--samples", type=int, default=500, help="MCMC draws per chain")
    p.add_argument("--warmup", type=int, default=500, help="MCMC warm-up steps per chain")
    p.add_argument("--chains", type=int, default=2, help="MCMC chains")
    p.add_argument("--cores", type=int, default=None,
                   help="worker processes for the MCMC chains (default: the available cores, at most --chains)")
    p.add_argument("--no-jit", action="store_true", help="do not compile the MCMC potential")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("mcmc", help="sample the posterior with NUTS or HMC (discrete latents summed out)")
    _common(p)
    p.add_argument("--kernel", default="nuts", choices=("nuts", "hmc"))
    p.add_argument("--samples", type=int, default=1000, help="draws per chain")
    p.add_argument("--warmup", type=int, default=500, help="warm-up steps per chain")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--cores", type=int, default=None,
                   help="worker processes for the chains, one thread each (default: the available cores, at most "
                        "--chains); draws are identical for any value")
    p.add_argument("--init", default="model", choices=("model", "prior", "em"), help="where chains start")
    p.add_argument("--order", default=None, metavar="SITE:COLUMN", help="order a location column, e.g. locs:0")
    p.add_argument("--target-accept", type=float, default=0.8)
    p.add_argument("--jit", action="store_true", help="compile the potential with torch.jit.trace")
    p.add_argument("--rhat", action="store_true", help="require R-hat (needs --chains >= 2)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_mcmc)

    p = sub.add_parser("evaluate", help="per-point log p(x) of a fitted run by importance sampling")
    p.add_argument("run_dir", help="a run directory written by `ppvae fit`")
    p.add_argument("--data", default=None, help="data set name or path (default: the run's data set)")
    p.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data point")
    p.add_argument("--proposal", default="guide", choices=("guide", "prior"))
    p.add_argument("--threads", type=int, default=None, help=f"torch intra-op threads (default {DEFAULT_THREADS})")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="data points per vectorized pass (default: from free memory)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        _set_threads(args)
        return args.func(args)
    except PPVAEError as exc:
        print(f"ppvae: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ppvae: interrupted after {time.perf_counter() - start:.1f} s; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
