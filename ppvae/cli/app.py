"""The ``ppvae`` command line: parse, validate, call the Python API, print a summary, exit 2 on errors.

Every command that writes results builds them in a temporary directory beside ``--out`` and renames
it into place only when everything succeeded, so a failed run leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import time
import warnings

import torch

from ppvae._util.parallel import prestart_workers, resolve_workers
from ppvae._util.procs import Terminated, forget_handled_interrupt, signals_unwind
from ppvae._util.validation import PPVAEError, one_line
from ppvae._util.warning_format import warning_line
from ppvae.cli import models as _cli_models
from ppvae.cli import parser as _cli_parser
from ppvae.cli import write as _run_write
from ppvae.cli.ais import evaluate_run
from ppvae.cli.catalogue import datasets_text
from ppvae.cli.evaluate import describe
from ppvae.cli.evidence import cmd_bdmc, cmd_evidence, print_ais
from ppvae.cli.predict import cmd_predict, cmd_summary
from ppvae.comparison.calibration import sbc
from ppvae.comparison.compare_methods import MCMC_KERNELS, compare, parse_methods
from ppvae.comparison.guide_diagnostics import guide_khat_line
from ppvae.comparison.inference_data import summary, to_inference_data
from ppvae.data.loaders import list_datasets, load_dataset
from ppvae.infer.em import fit_em
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.infer.natural_svi import fit_svi_natural
from ppvae.infer.svi.distributed import init_from_env
from ppvae.infer.svi.guides import list_guides
from ppvae.infer.svi.objectives import list_elbos
from ppvae.infer.svi.train import fit
from ppvae.model.base import (
    ClosedFormEM,
    ConjugateExponential,
    CoordinateAscentVI,
    Reports,
    build_model,
    check_mask_support,
    get_model_class,
    list_models,
    require,
)
from ppvae.runs.directory import (
    CHECKPOINTS,
    check_out,
    checkpoint_dir,
    interrupted_message,
    run_directory,
)
from ppvae.runs.lock import DirectoryLock
from ppvae.runs.outdir import check_writable

EXIT_USAGE = 2
EXIT_INTERNAL = 1  # an unexpected exception: not the user's mistake


def _kv_pairs(pairs: list[str], option: str = "hyperparameter", example: str = "after the model name") -> dict:
    out = {}
    for item in pairs:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PPVAEError(f"{option}: expected KEY=VALUE {example}; got '{item}'")
        out[key] = value
    return out


def _elbo_options(pairs: list[str]) -> dict:
    """``--elbo-option KEY=VALUE`` pairs, each value a number where it reads as one (the objective checks them)."""
    out = {}
    for key, value in _kv_pairs(pairs, "--elbo-option", "such as temperature=0.5").items():
        for parse in (int, float, str):
            with contextlib.suppress(ValueError):
                out[key] = parse(value)
                break
    return out


def _load_data(args):
    options = {"mmap": True} if getattr(args, "mmap", False) else {}
    # NAME:KEY=VALUE[,KEY=VALUE] (e.g. reuters:split=train) is parsed by load_dataset itself
    return load_dataset(args.data, standardize=getattr(args, "standardize", False), **options)


# -- commands -----------------------------------------------------------------------------------------
def cmd_datasets(args) -> int:
    print(datasets_text(list_datasets()))
    return 0


def _betas(text: str) -> tuple[float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 2:
        raise PPVAEError(f"--betas: expected two numbers B1,B2 such as 0.9,0.999; got '{text}'")
    return values


def cmd_fit(args) -> int:
    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    defaults = model.train_defaults if isinstance(model, Reports) else {}  # the model's defaults for unset flags
    batch_size = args.batch_size if args.batch_size is not None else defaults.get("batch_size")
    lr = args.lr if args.lr is not None else defaults.get("lr", 0.01)
    betas = _betas(args.betas) if args.betas is not None else defaults.get("betas", (0.9, 0.999))
    elbo = args.elbo if args.elbo != "auto" else defaults.get("elbo", "auto")
    steps = args.steps if args.steps is not None or args.epochs is not None else defaults.get("steps")
    ckpt, resume = args.checkpoint_every is not None or args.resume is not None, args.resume is not None
    options = dict(
        guide=args.guide, elbo=elbo, steps=steps, epochs=args.epochs, batch_size=batch_size, lr=lr, betas=betas,
        seed=args.seed, device=args.device, num_particles=args.num_particles, patience=args.patience,
        beta=args.beta, kl_warmup_steps=args.kl_warmup_steps, elbo_options=_elbo_options(args.elbo_option),
        jit=args.jit if args.jit is not None else defaults.get("jit", False),
        compile=args.compile if args.compile is not None else "auto",
        checkpoint_dir=os.path.join(os.path.abspath(args.out), CHECKPOINTS) if ckpt else None,  # written directly
        checkpoint_every=args.checkpoint_every, resume=args.resume, distributed=args.distributed,
        check_convergence=not args.no_convergence_check,
    )
    if args.distributed and _rank(args) != 0:  # the other ranks train beside rank 0, which alone writes
        check_out(args.out, args.overwrite, ckpt, resume)
        fit(model, data, progress=False, **options)
        _leave_group()
        return 0
    with run_directory(args.out, args.overwrite, ckpt, resume) as tmp:
        if ckpt:  # the run's own folder, or beside the new run while it replaces another (kept whole till then)
            options["checkpoint_dir"] = checkpoint_dir(args.out, tmp, resume)
        callbacks = model.fit_callbacks(data) if isinstance(model, Reports) else None
        result = fit(model, data, callbacks=callbacks, progress=False if args.quiet else None, **options)
        metrics, figures = _run_write.write_fit(tmp, args.model, result, data)
    _summary(metrics, args.out)
    line = guide_khat_line(result, data, seed=args.seed)
    if line:
        print(f"  {line}")
    figures.report(args.out)
    if args.distributed:
        _leave_group()
    return 0


def _leave_group() -> None:
    """Wait for every rank (rank 0 writes the run after training), leave the gloo group and end at once: a rank that
    finalizes its interpreter after a gloo group can be aborted (SIGABRT; pytorch/pytorch#179291), failing torchrun."""
    import torch.distributed as dist  # only for multi-process runs

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(0)  # all is written; finalization is where loaded test runs still saw the abort (2 runs in 4)


def _rank(args) -> int:
    """Join the torchrun process group (ppvae/distributed.py); this process's rank."""
    return init_from_env(args.device)[0]


def cmd_em(args) -> int:
    model = build_model(args.model, **_kv_pairs(args.hparams))
    require(model, ClosedFormEM, "ppvae em",
            hint=f"models with it: {', '.join(_models_with(ClosedFormEM)) or 'none'}")
    data = _load_data(args)
    with run_directory(args.out, args.overwrite) as tmp:
        result = fit_em(model, data, restarts=args.restarts, max_iter=args.max_iter, ll_tol=args.ll_tol, seed=args.seed,
                        cores=args.cores)
        metrics, figures = _run_write.write_em(tmp, args.model, result, data)
    _summary(metrics, args.out)
    figures.report(args.out)
    return 0


def _prestart(args, runs_chains: bool = True) -> None:
    """Start the worker server (its seconds of importing torch and Pyro) while this process loads the data and
    fits the initial values, when the chains will run on more than one core."""
    if runs_chains and args.chains > 1 and resolve_workers(args.cores, args.chains) > 1:
        prestart_workers()


def cmd_compare(args) -> int:
    methods = parse_methods(args.methods)
    _prestart(args, any(m in MCMC_KERNELS for m in methods))
    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    with run_directory(args.out, args.overwrite) as tmp:  # checked and locked before the work
        result = compare(model, data, methods, test_fraction=args.test_fraction, seed=args.seed,
                         svi_steps=args.steps, svi_lr=args.lr, num_draws=args.num_draws,
                         num_mcmc_draws=args.num_mcmc_draws, warmup=args.warmup, num_chains=args.chains,
                         jit=args.jit, progress=False if args.quiet else None, cores=args.cores)
        result.save(tmp)
    print(result.to_markdown())
    print(f"written to {args.out}")
    failed = [r for r in result.records if r["status"] == "failed"]  # a skipped method says why in the table
    if failed:  # the table is written; the exit status still says that a requested method failed
        reasons = "; ".join(f"{r['method']} ({r['error']})" for r in failed)
        print(f"ppvae: error: {len(failed)} of {len(result.records)} methods failed: {reasons}; "
              f"the table in {args.out} has the others", file=sys.stderr)
    return 1 if failed else 0


def cmd_mcmc(args) -> int:
    _prestart(args)
    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    check_out(args.out, args.overwrite)  # before the initial values' fit; again under the lock below
    order = None
    if args.order:
        site, _, column = args.order.partition(":")
        if not column.isdigit():
            raise PPVAEError(f"--order: expected SITE:COLUMN, e.g. locs:0; got '{args.order}'")
        order = (site, int(column))
    init = "prior" if args.init == "prior" else None
    if args.init == "em":
        init = fit_em(model, data, restarts=5, seed=args.seed)
    with run_directory(args.out, args.overwrite) as tmp:  # locked for the whole run: one writer per --out
        result = run_mcmc(model, data, kernel=args.kernel, num_draws=args.num_draws, warmup=args.warmup,
                          num_chains=args.chains, init=init, order=order, jit=args.jit, seed=args.seed,
                          target_accept=args.target_accept, progress=False if args.quiet else None,
                          allow_local=args.allow_local, cores=args.cores, vectorized=args.vectorized,
                          compile=args.compile)
        idata = to_inference_data(result, data)
        table = summary(idata)
        _, figures = _run_write.write_mcmc(tmp, args.model, result, data, table, idata)
    print(table.to_string())
    print(f"{args.kernel}: {result.num_chains} x {result.num_draws} draws in {result.time_s:.1f} s, "
          f"{result.num_divergences} divergences; written to {args.out}")
    figures.report(args.out)
    return 0


def cmd_cavi(args) -> int:
    """Coordinate-ascent mean-field VI for a model that provides it (``fit_cavi``; LDA)."""
    model = build_model(args.model, **_kv_pairs(args.hparams))
    natural = args.method == "natural"
    if not natural:
        require(model, CoordinateAscentVI, "ppvae cavi",
                hint=f"models with it: {', '.join(_models_with(CoordinateAscentVI)) or 'none'}")
    else:
        require(model, ConjugateExponential, "ppvae cavi --method natural",
                hint=f"models with it: {', '.join(_models_with(ConjugateExponential)) or 'none'}")
    check_mask_support(model, data := _load_data(args))  # NaN cells are missing: CAVI's closed forms need all
    with run_directory(args.out, args.overwrite) as tmp:
        if natural:
            result = fit_svi_natural(model, data, batch_size=args.batch_size, num_steps=args.steps, tau0=args.tau0,
                                     kappa=args.kappa, seed=args.seed, warmup=args.warmup)
        else:
            extra = {k: True for k in ("update_alpha", "update_eta") if getattr(args, k)}
            result = model.fit_cavi(data, max_iter=args.max_iter, rel_tol=args.rel_tol, seed=args.seed, **extra)
        _, figures = _run_write.write_cavi(tmp, args.model, result, data)
    how = "natural-gradient SVI" if natural else "CAVI"
    print(f"{args.model} on {data.name} ({len(data)} rows) by {how}: {result.num_iterations} iterations, "
          f"converged: {result.converged}, ELBO {result.elbo:.2f}, time {result.time_s:.2f} s\n  written to {args.out}")
    figures.report(args.out)
    return 0


def cmd_sbc(args) -> int:
    """Simulation-based calibration (:func:`ppvae.comparison.calibration.sbc`); --out is resumable: the simulations
    already in it are kept (--overwrite starts afresh)."""
    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    if os.path.isdir(args.out) and os.listdir(args.out):
        if not os.path.exists(os.path.join(args.out, "sims", "settings.json")):
            raise PPVAEError(f"--out: {args.out} is not empty and holds no sbc run; name a new directory")
        if args.overwrite:  # an sbc run's own directory: start afresh
            shutil.rmtree(args.out)
    result = sbc(model, data, args.methods, num_sims=args.sims, num_draws=args.num_draws, level=args.level,
                 seed=args.seed, svi_steps=args.steps, svi_lr=args.lr, warmup=args.warmup,
                 cores=None if args.cores == 0 else args.cores, out=args.out, progress=False if args.quiet else None)
    print(result.to_markdown())
    print(f"written to {args.out}")
    return 0


def _models_with(capability) -> list[str]:
    """The registered models that declare ``capability``."""
    return [n for n in list_models() if issubclass(get_model_class(n), capability)]


def _summary(metrics: dict, out: str) -> None:
    ll = metrics.get("log_likelihood")
    if ll is None:
        ll_text = "n/a (use ppvae evaluate)"
    else:
        ll_text = f"{ll:.4f}" + ("" if metrics.get("log_likelihood_exact") else " (estimate)")
    lines = [f"{metrics['model']} on {metrics['data']} ({metrics['num_data']} points) by {metrics['method']}"]
    if "loss_final" in metrics:
        compiled = ", compiled" if (metrics.get("svi_compile") or "").startswith("compiled") else ""
        path = f" ({metrics['svi_path']} path{compiled})" if metrics.get("svi_path") else ""  # infer/svi/potential_svi
        lines.append(f"  steps {metrics['steps']}{path}, final loss {metrics['loss_final']:.4f}")
    if "iterations" in metrics:
        lines.append(f"  {metrics['iterations']} iterations, converged: {metrics['converged']}")
    lines += [f"  log-likelihood {ll_text}, time {metrics['time_s']:.2f} s", f"  written to {out}"]
    print("\n".join(lines))


def cmd_evaluate(args) -> int:
    if not os.path.isdir(args.run_dir):
        raise PPVAEError(f"run_dir: expected a run directory written by ppvae (fit, em, mcmc or cavi); "
                         f"got {args.run_dir}")
    ais = {} if args.method == "is" else {
        "num_steps": args.steps, "num_chains": args.chains, "num_leapfrog": args.num_leapfrog,
        "schedule": args.schedule, "progress": False if args.quiet else None}
    check_writable(args.run_dir, "run_dir")  # before the work: the result goes into its metrics.json
    with DirectoryLock(args.run_dir, "run_dir"):
        _, entry = evaluate_run(args.run_dir, args.data, num_particles=args.num_particles, proposal=args.proposal,
                                chunk_size=args.chunk_size, seed=args.seed, method=args.method,
                                num_draws=args.num_draws, **ais)
    if entry["method"] == "ais":
        return print_ais(args, entry)
    if entry["method"] != "is":  # an EM, MCMC or CAVI run
        print("\n".join(describe(entry)))
    else:
        se, mc = (float("nan") if entry[k] is None else entry[k] for k in ("stderr", "mc_stderr"))
        # two errors: the spread of log p(x_i) over the points (sd / sqrt(N)), the Monte Carlo error of the mean
        print(f"log p(x): mean {entry['mean']:.4f} over {entry['num_points']} points (standard error over points "
              f"{se:.4f}; Monte Carlo error {mc:.4f}), total {entry['total']:.3f} (K={entry['num_particles']}, "
              f"{entry['proposal']} proposal); ELBO mean {entry['elbo_mean']:.4f}")
        khat = "n/a (weights exact or K too small)" if entry["khat_max"] is None else f"{entry['khat_max']:.3f}"
        print(f"ESS mean {entry['ess_mean']:.1f}; k-hat max {khat}; {entry['num_khat_over_0_7']} points with "
              "k-hat > 0.7")
    for warning in entry["warnings"]:
        print(warning_line(warning), file=sys.stderr)
    print(f"wrote {os.path.join(args.run_dir, 'metrics.json')} and log_marginal.png")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``ppvae`` argument parser wired to this module's commands and the live registries of guides and
    objectives (a guide registered in this process shows in ``fit --help``)."""
    return _cli_parser.build_parser({"models": _cli_models.cmd_models, "datasets": cmd_datasets, "fit": cmd_fit,
                                     "em": cmd_em, "cavi": cmd_cavi, "compare": cmd_compare, "mcmc": cmd_mcmc,
                                     "evaluate": cmd_evaluate, "bdmc": cmd_bdmc, "evidence": cmd_evidence,
                                     "predict": cmd_predict, "summary": cmd_summary, "sbc": cmd_sbc},
                                    guides=list_guides(), elbos=list_elbos())


def set_threads(args) -> None:
    """``--threads``: torch intra-op threads of this process (MCMC worker processes always use one), between
    1 and the cores of the machine (OpenMP crashes with a thread count far above them)."""
    threads = getattr(args, "threads", None)
    threads = _cli_parser.DEFAULT_THREADS if threads is None else threads
    cores = _cli_parser.machine_cores()
    if threads < 1:
        raise PPVAEError(f"--threads: expected an integer >= 1; got {threads}")
    if threads > cores:
        raise PPVAEError(f"--threads: expected an integer <= {cores} (the cores this process may use); got {threads}")
    torch.set_num_threads(threads)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line without the internal file and source line Python prints by default."""
    print(warning_line(message, filename), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the ``ppvae`` command on ``argv`` (default: ``sys.argv[1:]``) and return its exit code: 0 on success,
    1 when ``ppvae compare`` had a method fail, 2 after a one-line ``ppvae: error: ...`` on stderr for bad input,
    130 or 143 after Ctrl-C or SIGTERM (the console script ``ppvae`` and ``python -m ppvae.cli`` call it)."""
    start = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        with signals_unwind(), warnings.catch_warnings():  # SIGTERM unwinds like Ctrl-C: no temporary dir left
            warnings.showwarning = _show_warning
            args = build_parser().parse_args(argv)
            set_threads(args)
            _cli_models.apply_imports(args)
            code = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
            return code
    except PPVAEError as exc:
        print(f"ppvae: error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever the message
        return EXIT_USAGE
    except BrokenPipeError:  # `ppvae models | head`: the reader left; no traceback, and none at exit either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(interrupted_message(argv, args, time.perf_counter() - start, terminated), file=sys.stderr)
        forget_handled_interrupt()  # handled: `python -m ppvae.cli` must end with 130/143, not killed by SIGINT
        return 143 if terminated else 130
    except Exception as exc:  # a bug in ppvae (tests/test_fuzz.py finds none): still one line, traceback on request
        if os.environ.get("PPVAE_TRACEBACK"):
            raise
        print(f"ppvae: error: internal error, please report it with the command line: {one_line(exc)} "
              "(PPVAE_TRACEBACK=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL

