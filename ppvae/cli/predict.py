"""``ppvae predict`` and ``ppvae summary``: posterior draws and the posterior table of a saved run, for
every result kind that can be loaded (parse, call :meth:`ppvae.Result.predict` / ``summary``, print)."""

from __future__ import annotations

import json
import os

import numpy as np

from ppvae._util.io import atomic_write
from ppvae._util.validation import PPVAEError
from ppvae.cli.models import add_import_option
from ppvae.comparison.inference_data import observed_values
from ppvae.results.kinds import load
from ppvae.runs import directory as runs


def load_result(run_dir: str):
    """The result saved in ``run_dir``, whatever its kind (:func:`ppvae.load`)."""
    return load(run_dir)


def _data(result, spec):
    return runs.run_dataset(result.data_info, spec)


def cmd_predict(args) -> int:
    """Posterior draws of every latent and posterior predictive draws of the observed sites, to NPZ or NetCDF."""
    out = args.out
    if not (out.endswith(".npz") or out.endswith(".nc")):
        raise PPVAEError(f"--out: expected a file name ending in .npz or .nc; got {out}")
    result = load_result(args.run_dir)
    data = _data(result, args.data)
    draws = result.predict(data, num_draws=args.num_draws, seed=args.seed, observed=not args.no_observed)
    arrays = {k: v.detach().cpu().numpy() for k, v in draws.items()}
    if out.endswith(".npz"):
        atomic_write(out, lambda fh: np.savez(fh, **arrays), mode="wb")
    else:
        _write_netcdf(result, data, arrays, out)
    S = len(next(iter(arrays.values())))
    print(f"{result.method}: {S} posterior draws on {data.name} ({len(data)} points) of "
          f"{', '.join(f'{k} {tuple(v.shape[1:])}' for k, v in arrays.items())}")
    print(f"wrote {out}")
    return 0


def _write_netcdf(result, data, arrays: dict, out: str) -> None:
    """ArviZ InferenceData: latents in ``posterior``, observed sites' replicates in ``posterior_predictive``."""
    import arviz as az  # optional heavy dependency, loaded only for NetCDF output

    observed = set(observed_values(result.model, data.batch()))
    post = {k: v[None] for k, v in arrays.items() if k not in observed}
    pred = {k: v[None] for k, v in arrays.items() if k in observed}
    idata = az.from_dict(posterior=post, posterior_predictive=pred or None)
    runs.write_figure(os.path.dirname(os.path.abspath(out)), os.path.basename(out), idata.to_netcdf)


def cmd_summary(args) -> int:
    """The posterior table of a run's global latents (mean, sd, 5%/95%, ESS and R-hat for MCMC)."""
    result = load_result(args.run_dir)
    data = _data(result, args.data)
    table = result.summary(data, num_draws=args.num_draws, seed=args.seed, correlations=args.correlations)
    print(table.to_text())
    if args.json:
        atomic_write(args.json, lambda fh: json.dump(table.to_dict(), fh, indent=2))
        print(f"wrote {args.json}")
    return 0


def add_parsers(sub, commands) -> None:
    """Register ``predict`` and ``summary`` on the ``ppvae`` subparsers."""
    for name, text in (("predict", "posterior and posterior predictive draws of a run, to .npz or .nc"),
                       ("summary", "posterior table of a run's global latents (mean, sd, 5%/95%, ESS, R-hat)")):
        p = sub.add_parser(name, help=text)
        p.add_argument("run_dir", help="a directory written by ppvae fit, em, mcmc or cavi")
        p.add_argument("--data", default=None, help="data set name or path (default: the run's own data)")
        p.add_argument("--num-draws", type=int, default=None if name == "predict" else 1000,
                       help="posterior draws (default: 1000, or every MCMC draw)" if name == "predict"
                       else "draws from a guide or q (MCMC: every draw)")
        p.add_argument("--seed", type=int, default=0, help="random seed")
        add_import_option(p)  # a run of a user's model loads only after its code is imported
        if name == "predict":
            p.add_argument("--out", required=True, help="FILE.npz (site -> array, draws first) or FILE.nc (ArviZ)")
            p.add_argument("--no-observed", action="store_true", help="latents only, no posterior predictive")
        else:
            p.add_argument("--correlations", action="store_true", help="also the correlations of the globals")
            p.add_argument("--json", default=None, metavar="FILE", help="also write the table as JSON")
        p.set_defaults(func=commands[name])
