"""``ppvae predict`` and ``ppvae summary``: posterior draws and the posterior table of a saved run, for
every result kind that can be loaded (parse, call :meth:`ppvae.Result.predict` / ``summary``, print)."""

from __future__ import annotations

import json
import os

import numpy as np

from ppvae._util.io import atomic_write
from ppvae._util.validation import PPVAEError
from ppvae.comparison.guide_diagnostics import guide_khat_line
from ppvae.comparison.inference_data import observed_values
from ppvae.model.capabilities import check_mask_support
from ppvae.results.kinds import load
from ppvae.runs import directory as runs
from ppvae.runs.outdir import check_output_file


def load_result(run_dir: str):
    """The result saved in ``run_dir``, whatever its kind (:func:`ppvae.load`)."""
    return load(run_dir)


def _data(result, spec):
    data = runs.run_dataset(result.data_info, spec)
    check_mask_support(result.model, data)  # NaN cells are missing values: only a model that declares it takes them
    return data


def cmd_predict(args) -> int:
    """Posterior draws of every latent and posterior predictive draws of the observed sites, to NPZ or NetCDF."""
    out = args.out
    check_output_file(out, "--out", (".npz", ".nc"))  # before the work: length, type, writability, free space
    if args.impute:
        return _impute(args)
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


def _impute(args) -> int:
    """``--impute``: the missing entries of ``--data`` (NaN cells) filled from the posterior predictive, to NPZ."""
    if not args.out.endswith(".npz"):
        raise PPVAEError(f"--out: --impute writes FILE.npz (mean, draws, mask); got '{args.out}'")
    result = load_result(args.run_dir)
    data = _data(result, args.data)
    if data.mask is None:
        raise PPVAEError(f"--impute: data '{data.name}' has no missing values (NaN cells in a CSV or NPY file)")
    out = result.impute(data, num_draws=args.num_draws or 1000, seed=args.seed)
    arrays = {k: v.detach().cpu().numpy() for k, v in out.items()}
    atomic_write(args.out, lambda fh: np.savez(fh, **arrays), mode="wb")
    print(f"{result.method}: {int((~out['mask']).sum())} missing entries of {data.name} ({len(data)} points) "
          f"filled: mean {tuple(arrays['mean'].shape)} (posterior predictive mean of {len(arrays['draws'])} draws), "
          f"draws {tuple(arrays['draws'].shape)}, mask (True = observed)")
    print(f"wrote {args.out}")
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
    if args.json:
        check_output_file(args.json, "--json")  # before the work
    result = load_result(args.run_dir)
    data = _data(result, args.data)
    table = result.summary(data, num_draws=args.num_draws, seed=args.seed, correlations=args.correlations)
    print(table.to_text())
    line = guide_khat_line(result, data, seed=args.seed)
    if line:
        print(line)
    if args.json:
        atomic_write(args.json, lambda fh: json.dump(table.to_dict(), fh, indent=2))
        print(f"wrote {args.json}")
    return 0

