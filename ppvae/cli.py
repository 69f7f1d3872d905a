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


@contextlib.contextmanager
def run_directory(out: str, overwrite: bool = False):
    """Yield a temporary directory; on success move it to ``out`` (which must be new or empty)."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise PPVAEError(f"--out: expected a directory path; got an existing file {out}")
        if os.listdir(out) and not overwrite:
            raise PPVAEError(f"--out: expected a new or empty directory; {out} already has files (pass --overwrite)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".ppvae-", dir=parent)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)


def write_metrics(directory: str, metrics: dict) -> None:
    from .results import atomic_write

    atomic_write(os.path.join(directory, "metrics.json"), lambda fh: json.dump(metrics, fh, indent=2))


def _load_data(args):
    from .data import load_dataset

    return load_dataset(args.data, standardize=getattr(args, "standardize", False))


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


def cmd_fit(args) -> int:
    import torch

    from .model import build_model
    from .plots import plot_loss
    from .train import fit

    model = build_model(args.model, **_kv_pairs(args.hparams))
    data = _load_data(args)
    with run_directory(args.out, args.overwrite) as tmp:
        result = fit(
            model, data, guide=args.guide, elbo=args.elbo, steps=args.steps, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device,
            num_particles=args.num_particles, patience=args.patience, progress=False if args.quiet else None,
        )
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
    _summary(metrics, args.out)
    return 0


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


def _em_models() -> list[str]:
    from .model import get_model_class, list_models

    return [n for n in list_models() if hasattr(get_model_class(n), "em_step")]


def _summary(metrics: dict, out: str) -> None:
    ll = metrics.get("log_likelihood")
    ll_text = "n/a (use ppvae evaluate)" if ll is None else f"{ll:.4f}" + ("" if metrics.get("log_likelihood_exact") else " (estimate)")
    lines = [f"{metrics['model']} on {metrics['data']} ({metrics['num_data']} points) by {metrics['method']}"]
    if "loss_final" in metrics:
        lines.append(f"  steps {metrics['steps']}, final loss {metrics['loss_final']:.4f}")
    if "iterations" in metrics:
        lines.append(f"  {metrics['iterations']} iterations, converged: {metrics['converged']}")
    lines.append(f"  log-likelihood {ll_text}, time {metrics['time_s']:.2f} s")
    lines.append(f"  written to {out}")
    print("\n".join(lines))


# -- parser -------------------------------------------------------------------------------------------
def _common(p, with_model=True):
    if with_model:
        p.add_argument("model", help="model name (see `ppvae models`)")
        p.add_argument("hparams", nargs="*", metavar="KEY=VALUE", help="model hyperparameters, e.g. K=3")
    p.add_argument("--data", required=True, help="data set name (see `ppvae datasets`) or a CSV/NPY path")
    p.add_argument("--standardize", action="store_true", help="scale each column to mean 0, sd 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppvae", description="Latent-variable models on Pyro: fit, evaluate, compare.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("models", help="list the models").set_defaults(func=cmd_models)
    sub.add_parser("datasets", help="list the bundled data sets").set_defaults(func=cmd_datasets)

    p = sub.add_parser("fit", help="fit a model by SVI")
    _common(p)
    p.add_argument("--guide", default="auto", help="auto_delta, auto_normal, auto_lowrank_mvn, auto_mvn, auto_iaf, model")
    p.add_argument("--elbo", default="auto", help="auto, trace, meanfield, enum")
    steps = p.add_mutually_exclusive_group()
    steps.add_argument("--steps", type=int, default=None)
    steps.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--num-particles", type=int, default=1)
    p.add_argument("--patience", type=int, default=None, help="early stopping after this many steps without gain")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("em", help="fit a model by closed-form EM")
    _common(p)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--max-iter", type=int, default=1000)
    p.add_argument("--tol", type=float, default=1e-10, help="stop when a step gains less than this per point")
    p.set_defaults(func=cmd_em)
    return parser


def main(argv: list[str] | None = None) -> int:
    start = time.perf_counter()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except PPVAEError as exc:
        print(f"ppvae: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"ppvae: interrupted after {time.perf_counter() - start:.1f} s; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
