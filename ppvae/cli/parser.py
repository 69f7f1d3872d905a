"""The ``ppvae`` command line's argument parser: subcommands, options with their defaults in ``--help``,
and usage errors raised as :class:`PPVAEError` (printed on one line, exit 2, by ``ppvae.cli.app.main``).

This module imports neither torch nor the engine: ``ppvae --help``, ``--version``, ``models`` and ``datasets``
are answered from it and :mod:`ppvae.cli.catalogue` alone (:mod:`ppvae.cli.entry`)."""

from __future__ import annotations

import argparse
import os
from typing import Callable

from ppvae._util.validation import COUNT, NONNEGATIVE, PPVAEError, cli_float
from ppvae._version import __version__
from ppvae.cli.catalogue import ELBOS, GUIDES


class _HelpFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default, except where the help already says it or there is none
    (``None`` means the model's own or the data's; a flag's ``False`` means off)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (not action.option_strings or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line on stderr and exits 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        # main() prints "ppvae: error: "; a subcommand's usage errors name the subcommand ("fit: ...")
        where = self.prog.removeprefix("ppvae").strip()
        raise PPVAEError(f"{where + ': ' if where else ''}{message} (see {self.prog} --help)")


class _Renamed(argparse.Action):
    """An option's old spelling: one line naming the new one (pre-1.0: no silent aliases)."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None):
        raise PPVAEError(f"{option_string} is now {self.new}")


def renamed_option(p, old: str, new: str) -> None:
    """Register ``old`` (hidden from --help) so that it raises 'OLD is now NEW'."""
    p.add_argument(old, action=_Renamed, new=new)


# every subcommand, in --help's order; build_parser's ``commands`` maps each to the function that runs it
COMMANDS = ("models", "datasets", "fit", "em", "cavi", "compare", "mcmc", "evaluate", "bdmc", "evidence", "predict",
            "summary", "sbc")

DEFAULT_THREADS = 1  # measured: a GMM fit is as fast at 1 thread idle, 2.2x faster beside another job (README)


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def _threads(p) -> None:
    add_import_option(p)  # every command that runs a model (or loads a run) can import a user's model first
    p.add_argument("--threads", type=int, default=None,
                   help=f"torch intra-op threads (default {DEFAULT_THREADS}: fastest for small models on a shared "
                        "machine; try more for a large network on an idle one)")


def _common(p, with_model=True):
    _threads(p)
    if with_model:
        p.add_argument("model", help="model name (see `ppvae models`), or a user's model as MODULE:CLASS or "
                       "FILE.py:CLASS")
        p.add_argument("hparams", nargs="*", metavar="KEY=VALUE", help="model hyperparameters, e.g. K=3")
    p.add_argument("--data", required=True, help="data set name (see `ppvae datasets`; NAME:KEY=VALUE passes "
                   "loader options, e.g. reuters:split=train) or a CSV/NPY path")
    p.add_argument("--standardize", action="store_true", help="scale each column to mean 0, sd 1")
    p.add_argument("--seed", type=NONNEGATIVE, default=0, help="random seed")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")


def add_import_option(p) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="SPEC",
                   help="import a user's model first: MODULE[:CLASS] or FILE.py[:CLASS] (repeatable); needed to "
                        "load a run of a model that is not in the zoo or an installed package")


def guide_help(guides=GUIDES) -> str:
    """``--guide``'s help: every guide in the registry (``ppvae.list_guides``; the static catalogue when the
    engine is not loaded)."""
    return "auto (the model's own guide if it has one, else auto_normal), or a registered guide: " + ", ".join(guides)


def elbo_help(elbos=ELBOS) -> str:
    """``--elbo``'s help: every objective in the registry (``ppvae.list_elbos``; the static catalogue when the
    engine is not loaded)."""
    return ("auto (the model's train_defaults, else enum when the model has discrete latents, else trace), or a "
            "registered ELBO: " + ", ".join(elbos))


def _jit(p, default: bool | None, what: str) -> None:
    """The one jit switch of fit, compare and mcmc: ``--jit`` / ``--no-jit``."""
    p.add_argument("--jit", action=argparse.BooleanOptionalAction, default=default, help=what)


def build_parser(commands: dict[str, Callable], guides=GUIDES, elbos=ELBOS) -> argparse.ArgumentParser:
    """The ``ppvae`` parser; ``commands`` maps each subcommand to the function that runs it; ``guides`` and
    ``elbos`` are the registered names listed in ``fit --help``."""
    parser = _Parser(prog="ppvae", description="Latent-variable models on Pyro: fit, evaluate, compare.")
    parser.add_argument("--version", action="version", version=f"ppvae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    p = sub.add_parser("models", help="list the models (zoo, installed packages' ppvae.models entry points)")
    add_import_option(p)
    p.set_defaults(func=commands["models"])
    sub.add_parser("datasets", help="list the bundled data sets").set_defaults(func=commands["datasets"])
    _add_fit(sub, commands, guides, elbos)
    _add_em_cavi(sub, commands)
    _add_compare_mcmc(sub, commands)
    _add_evaluate(sub, commands)
    _add_bdmc_evidence(sub, commands)
    _add_predict(sub, commands)
    _add_sbc(sub, commands)
    return parser


def _add_fit(sub, commands, guides, elbos) -> None:
    p = sub.add_parser("fit", help="fit a model by SVI")
    _common(p)
    p.add_argument("--guide", default="auto", help=guide_help(guides))
    p.add_argument("--elbo", default="auto", help=elbo_help(elbos))
    p.add_argument("--elbo-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option of the objective, e.g. temperature=0.5 for --elbo relaxed (repeatable)")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=COUNT, default=None, help="optimizer steps (default: the model's own)")
    steps.add_argument("--epochs", type=COUNT, default=None, help="passes over the data (instead of --steps)")
    p.add_argument("--batch-size", type=COUNT, default=None,
                   help="minibatch size (default: all data, or the model's own)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.01, or the model's own)")
    p.add_argument("--betas", default=None, metavar="B1,B2",
                   help="Adam's decay rates (default 0.9,0.999, or the model's train_defaults)")
    p.add_argument("--num-particles", type=COUNT, default=1, help="samples per ELBO estimate")
    p.add_argument("--beta", type=float, default=1.0, help="weight of the local latents' KL term (beta-VAE)")
    p.add_argument("--kl-warmup-steps", type=NONNEGATIVE, default=0,
                   help="ramp the KL weight linearly over these steps")
    p.add_argument("--patience", type=COUNT, default=None,
                   help="early stopping after this many steps without gain (default: off)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    _jit(p, None, "trace the objective once per batch shape (default: the model's train_defaults, else off)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="compile the potential path's step to C++ with TorchInductor (default: from 5000 steps on)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--checkpoint-every", type=COUNT, default=None, metavar="N",
                   help="write OUT/checkpoints/checkpoint-<step>.pt every N steps (and at the end)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue from the newest checkpoint in RUN_DIR (or RUN_DIR/checkpoints)")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel SVI; launch with torchrun --nproc_per_node=N -m ppvae.cli fit ...")
    p.add_argument("--mmap", action="store_true", help="memory-map an .npy --data file instead of reading it")
    p.add_argument("--no-convergence-check", action="store_true",
                   help="no warning when the loss is still falling at the end (rule: ppvae/_convergence.py)")
    p.set_defaults(func=commands["fit"])


def _add_em_cavi(sub, commands) -> None:
    p = sub.add_parser("em", help="fit a model by closed-form EM")
    _common(p)
    p.add_argument("--restarts", type=COUNT, default=10, help="EM runs from different starts; the best is kept")
    p.add_argument("--max-iter", type=COUNT, default=1000, help="EM iterations per restart at most")
    p.add_argument("--ll-tol", dest="ll_tol", type=float, default=1e-10,
                   help="stop when a step gains less than this log-likelihood per point")
    renamed_option(p, "--tol", "--ll-tol")
    p.add_argument("--cores", type=COUNT, default=1,
                   help="worker processes for the restarts, one thread each (results identical for any value)")
    p.set_defaults(func=commands["em"])

    p = sub.add_parser("cavi", help="coordinate-ascent mean-field VI (LDA: Blei et al. 2003; ELBO never decreases)")
    _common(p)
    p.add_argument("--max-iter", type=COUNT, default=100, help="CAVI iterations at most")
    p.add_argument("--rel-tol", dest="rel_tol", type=float, default=1e-5,
                   help="stop when an iteration gains less than rel_tol x |ELBO|")
    renamed_option(p, "--tol", "--rel-tol")
    p.add_argument("--update-alpha", action="store_true", help="Newton updates of the Dirichlet alpha")
    p.add_argument("--update-eta", action="store_true", help="Newton updates of LDA's topic Dirichlet eta")
    p.add_argument("--method", choices=("cavi", "natural"), default="cavi",
                   help="cavi: batch CAVI; natural: natural-gradient SVI on minibatches (Hoffman et al. 2013; "
                        "models declaring ConjugateExponential)")
    p.add_argument("--batch-size", type=COUNT, default=64, help="--method natural: rows per minibatch")
    p.add_argument("--steps", type=COUNT, default=1000, help="--method natural: minibatch updates")
    p.add_argument("--tau0", type=cli_float(0.0), default=1.0, help="--method natural: step size (tau0 + t)^-kappa")
    p.add_argument("--kappa", type=cli_float(0.5, 1.0, strict_low=True), default=0.7,
                   help="--method natural: step-size decay, in (0.5, 1]")
    p.add_argument("--warmup", type=NONNEGATIVE, default=None,
                   help="--method natural: steps with the model's warm-up local step (LDA: stochastic CVB0, Foulds et "
                        "al. 2013); default one pass over the data, at most a quarter of --steps; 0: none")
    p.set_defaults(func=commands["cavi"])


def _add_compare_mcmc(sub, commands) -> None:
    p = sub.add_parser("compare", help="run a model with several methods (em, svi:<guide>, nuts, hmc); one table")
    _common(p)
    p.add_argument("--methods", required=True, help="comma-separated, e.g. em,svi:auto_normal,svi:auto_mvn,nuts")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held-out share of the data")
    p.add_argument("--steps", type=COUNT, default=2000, help="SVI steps")
    p.add_argument("--lr", type=float, default=0.01, help="SVI learning rate")
    p.add_argument("--num-draws", type=COUNT, default=1000, help="posterior draws from each SVI guide")
    p.add_argument("--num-mcmc-draws", type=COUNT, default=500, help="MCMC draws per chain")
    renamed_option(p, "--draws", "--num-draws")
    renamed_option(p, "--samples", "--num-mcmc-draws")
    p.add_argument("--warmup", type=NONNEGATIVE, default=500, help="MCMC warm-up steps per chain")
    p.add_argument("--chains", type=COUNT, default=2, help="MCMC chains")
    p.add_argument("--cores", type=COUNT, default=None,
                   help="worker processes for the MCMC chains (default: the available cores, at most --chains)")
    _jit(p, True, "compile the MCMC potential with torch.jit.trace")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=commands["compare"])

    p = sub.add_parser("mcmc", help="sample the posterior with NUTS or HMC (discrete latents summed out)")
    _common(p)
    p.add_argument("--kernel", default="nuts", choices=("nuts", "hmc"), help="MCMC kernel")
    p.add_argument("--num-draws", dest="num_draws", type=COUNT, default=1000, help="kept draws per chain")
    renamed_option(p, "--samples", "--num-draws")
    p.add_argument("--warmup", type=NONNEGATIVE, default=500, help="warm-up steps per chain")
    p.add_argument("--chains", type=COUNT, default=4, help="chains")
    p.add_argument("--cores", type=COUNT, default=None,
                   help="worker processes for the chains, one thread each (default: the available cores, at most "
                        "--chains); draws are identical for any value")
    p.add_argument("--vectorized", action="store_true",
                   help="NUTS with all chains in lockstep in one process, one batched potential per leapfrog step "
                        "(fastest for small models; the model must broadcast over draws)")
    p.add_argument("--init", default="model", choices=("model", "prior", "em"), help="where chains start")
    p.add_argument("--order", default=None, metavar="SITE:COLUMN", help="order a location column, e.g. locs:0")
    p.add_argument("--target-accept", type=float, default=0.8, help="NUTS/HMC step-size adaptation target")
    _jit(p, False, "compile the potential with torch.jit.trace (default: off)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default="auto",
                   help="with --vectorized: compile the potential and its gradient to C++ with TorchInductor "
                        "(default: with --jit and at least 1000 warm-up + draws per chain)")
    p.add_argument("--allow-local", action="store_true",
                   help="sample more than 1,000 per-data-point continuous latent dimensions jointly "
                   "(refused otherwise)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands["mcmc"])


def _add_sbc(sub, commands) -> None:
    p = sub.add_parser("sbc", help="simulation-based calibration: rank the prior's truth among each method's "
                       "posterior draws over --sims simulated data sets")
    _common(p)
    p.add_argument("--methods", required=True, help="comma-separated, e.g. exact,svi:auto_normal,nuts,em")
    p.add_argument("--sims", type=COUNT, default=100, help="simulations")
    p.add_argument("--num-draws", type=COUNT, default=99, help="posterior draws per simulation (ranks 0..num-draws)")
    p.add_argument("--level", type=cli_float(0.0, 1.0, strict_low=True), default=0.05,
                   help="level of the simultaneous ECDF band")
    p.add_argument("--steps", type=COUNT, default=1000, help="SVI steps")
    p.add_argument("--lr", type=cli_float(0.0, strict_low=True), default=0.02, help="SVI learning rate")
    p.add_argument("--warmup", type=NONNEGATIVE, default=300, help="MCMC warm-up steps (one chain per simulation)")
    p.add_argument("--cores", type=NONNEGATIVE, default=1, help="simulations in parallel (0: every available core)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands["sbc"])


def _add_evaluate(sub, commands) -> None:
    p = sub.add_parser("evaluate", help="per-point log p(x) of a saved run: SVI by importance sampling or AIS; EM "
                       "exact; MCMC lppd beside PSIS-LOO; CAVI per-document ELBO")
    p.add_argument("run_dir", help="a run directory written by `ppvae fit`, `em`, `mcmc` or `cavi`")
    _threads(p)
    p.add_argument("--data", default=None, help="data set name, NAME:KEY=VALUE (e.g. mnist5k:split=test) or "
                   "a path (default: the run's data set)")
    p.add_argument("--num-particles", type=COUNT, default=1000, help="importance samples K per data point")
    renamed_option(p, "--num-samples", "--num-particles")
    p.add_argument("--proposal", default="guide", choices=("guide", "prior"),
                   help="where the importance samples come from: the fitted guide or the prior")
    p.add_argument("--chunk-size", type=COUNT, default=None,
                   help="data points per vectorized pass (default: from free memory)")
    p.add_argument("--seed", type=NONNEGATIVE, default=0, help="random seed of the importance samples")
    p.add_argument("--method", default="is", choices=("is", "ais"), help="importance sampling or annealed IS")
    p.add_argument("--num-draws", type=COUNT, default=None,
                   help="average over this many draws of the global latents from the guide (log p(x | data), e.g. a "
                        "Bayesian decoder's weights; K particles per draw); default: the globals at their estimate")
    _ais_options(p, steps_type=COUNT, steps_default=500)
    p.set_defaults(func=commands["evaluate"])


def _ais_options(p, steps_type, steps_default) -> None:
    """AIS flags shared by `evaluate --method ais` and `bdmc`."""
    p.add_argument("--steps", type=steps_type, default=steps_default,
                   help="annealing steps T" + (" (comma-separated list)" if steps_type is str else ""))
    p.add_argument("--chains", type=COUNT, default=16, help="AIS chains per data point")
    p.add_argument("--num-leapfrog", type=COUNT, default=5, help="leapfrog steps per HMC transition")
    renamed_option(p, "--leapfrog", "--num-leapfrog")
    p.add_argument("--schedule", default="sigmoid", choices=("sigmoid", "linear"),
                   help="the annealing path's beta schedule (sigmoidal as Wu et al. 2017, or linear)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_bdmc_evidence(sub, commands) -> None:
    p = sub.add_parser("bdmc", help="BDMC bounds of log p(x) on points simulated from a run (certifies AIS)")
    p.add_argument("run_dir", help="a run directory written by `ppvae fit`")
    _threads(p)
    p.add_argument("--data", default=None, help="where the globals are read (default: the run's data set)")
    p.add_argument("--points", type=COUNT, default=100, help="simulated data points")
    p.add_argument("--proposal", default="guide", choices=("guide", "prior"),
                   help="where AIS starts: the fitted guide's local factor or the prior")
    p.add_argument("--chunk-size", type=COUNT, default=None, help="data points per vectorized pass")
    p.add_argument("--seed", type=NONNEGATIVE, default=0, help="random seed")
    _ais_options(p, steps_type=str, steps_default="100,200,400")
    p.set_defaults(func=commands["bdmc"])

    p = sub.add_parser("evidence", help="log p(X) of a run or MCMC directory by every estimator it allows")
    p.add_argument("run_dir", help="a directory written by `ppvae fit` or by `ppvae mcmc`")
    _threads(p)
    p.add_argument("--mcmc", default=None, metavar="MCMC_DIR",
                   help="with a fit run: also bridge sampling from this `ppvae mcmc` directory (same model and data)")
    p.add_argument("--data", default=None, help="data set name or path (default: the directory's data set)")
    p.add_argument("--standardize", action="store_true", help="as given to `ppvae mcmc` (MCMC directories)")
    p.add_argument("--num-particles", type=COUNT, default=1000, help="importance samples S over the globals")
    renamed_option(p, "--num-samples", "--num-particles")
    p.add_argument("--steps", type=COUNT, default=200, help="AIS annealing steps T")
    p.add_argument("--chains", type=COUNT, default=64, help="AIS chains C")
    p.add_argument("--seed", type=NONNEGATIVE, default=0, help="random seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=commands["evidence"])


def _add_predict(sub, commands) -> None:
    """Register ``predict`` and ``summary`` on the ``ppvae`` subparsers."""
    for name, text in (("predict", "posterior and posterior predictive draws of a run, to .npz or .nc"),
                       ("summary", "posterior table of a run's global latents (mean, sd, 5%%/95%%, ESS, R-hat)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", help="a directory written by ppvae fit, em, mcmc or cavi")
        p.add_argument("--data", default=None, help="data set name or path (default: the run's own data)")
        p.add_argument("--num-draws", type=COUNT, default=None if name == "predict" else 1000,
                       help="posterior draws (default: 1000, or every MCMC draw)" if name == "predict"
                       else "draws from a guide or q (MCMC: every draw)")
        p.add_argument("--seed", type=NONNEGATIVE, default=0, help="random seed")
        add_import_option(p)  # a run of a user's model loads only after its code is imported
        if name == "predict":
            p.add_argument("--out", required=True, help="FILE.npz (site -> array, draws first) or FILE.nc (ArviZ)")
            p.add_argument("--no-observed", action="store_true", help="latents only, no posterior predictive")
            p.add_argument("--impute", action="store_true",
                           help="fill the missing (NaN) entries of --data from the posterior predictive: "
                                "FILE.npz with mean, draws and mask")
        else:
            p.add_argument("--correlations", action="store_true", help="also the correlations of the globals")
            p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
        p.set_defaults(func=commands[name])
