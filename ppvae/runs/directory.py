"""The run directory: what every ppvae result writes, how it is written, and how it is read back.

One directory per run, the same layout for every kind of result (``config.json`` ``kind``)::

    config.json    ppvae_version, kind (svi | em | mcmc | cavi | a registered kind), model, hparams, data (name, kind,
                   num_data, x_shape, has_labels, meta: standardization constants, split, columns),
                   and per kind: svi -- train (TrainConfig), elbo; em -- em (restarts, max_iter,
                   tol, seed), log_likelihood, best_restart, converged, time_s; mcmc -- method,
                   time_s, num_divergences, mcmc (kernel settings); cavi -- alpha, eta, converged,
                   time_s, vocab, cavi (settings)
    params.pt      tensors only: svi -- {"model": state_dict, "guide": state_dict}; em -- {"params":
                   EM parameters, "model": state_dict}; mcmc -- {"model": state_dict}; cavi --
                   {"gamma": (D, K), "lambda": (K, V)}
    samples.pt     mcmc only: {site: (chains, draws, ...)} constrained draws
    history.json   svi -- {"loss": [...], "steps", "time_s", ...}; em -- per restart the total
                   log-likelihood before each iteration; cavi -- the ELBO after each iteration
    metrics.json   the command's numbers (model, method, data, num_data, time_s, ...); ``ppvae
                   evaluate`` adds ``log_marginal`` (the same keys for every kind, see
                   :mod:`ppvae.evaluate.marginal`)
    *.png          figures (loss.png, mixture.png, em_trace.png, elbo_trace.png, log_marginal.png,
                   a model's report figures); summary.csv (mcmc); checkpoints/ (svi with --checkpoint-every)

Every file is written to a temporary name in its directory, fsynced and renamed (:func:`atomic_write`,
:func:`write_figure`), so a reader never sees a torn file; a command builds its whole directory in a
temporary directory beside ``--out`` and renames it into place only on success (:func:`run_directory`;
removed on failure, Ctrl-C or SIGTERM; one left by a killed process is removed by a later run).
Loading checks ``ppvae_version`` (runs load within the same major.minor version) and the kind, and
reads tensors with ``torch.load(weights_only=True)``: a file that would need code to be unpickled is
refused without running anything.
"""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from typing import Any, Callable

import torch

from ppvae._util.io import atomic_write, check_version, describe_load_error
from ppvae._util.validation import PPVAEError, check_directory, check_finite_tree
from ppvae._version import __version__
from ppvae.data.loaders import Dataset, load_dataset, parse_data_spec
from ppvae.model.base import build_model, get_model_class, model_import_path
from ppvae.runs import building
from ppvae.runs.building import PREFIX, check_out, checkpoint_dir, remove_stale, run_directory, save_run  # noqa: F401
from ppvae.runs.checkpoint import _checkpoints

__all__ = ["atomic_write", "data_info", "make_config", "read_config", "read_json", "read_tensors",
           "run_dataset", "run_directory", "run_kind", "run_model", "update_metrics", "write_config", "write_figure",
           "write_json", "write_tensors"]

CONFIG, PARAMS, HISTORY, METRICS, SAMPLES = "config.json", "params.pt", "history.json", "metrics.json", "samples.pt"
CHECKPOINTS = "checkpoints"  # written during `fit` (ppvae/checkpoint.py)


# -- atomic files ---------------------------------------------------------------------------------------
def write_json(directory: str, name: str, obj, indent: int | None = 2) -> str:
    directory = check_directory(directory, writing=True)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    try:
        text = json.dumps(obj, indent=indent)
    except TypeError as exc:
        raise PPVAEError(f"save: {name} must hold JSON values ({exc})") from None
    atomic_write(path, lambda fh: fh.write(text))
    return path


def write_tensors(directory: str, name: str, tensors: dict) -> str:
    """``torch.save`` a (nested) dict of tensors, detached and on the CPU."""
    directory = check_directory(directory, writing=True)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, name)
    atomic_write(path, lambda fh: torch.save(_cpu(tensors), fh), mode="wb")
    return path


def write_figure(directory: str, name: str, draw: Callable[[str], Any]):
    """``draw(path)`` into a temporary file with ``name``'s extension, then rename it to ``name``."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=name)
    os.close(fd)
    try:
        out = draw(tmp)
        os.replace(tmp, os.path.join(directory, name))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def _cpu(obj):
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    return {k: _cpu(v) for k, v in obj.items()} if isinstance(obj, dict) else obj


def read_json(directory: str, name: str):
    full = os.path.join(directory, name)
    try:
        with open(full) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise PPVAEError(f"load: {full} is missing; not a complete ppvae run") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PPVAEError(f"load: {full} is corrupted ({exc})") from None


def read_tensors(directory: str, name: str, keys: tuple[str, ...] = ()) -> dict:
    """A tensors-only file, read with ``weights_only=True`` (no code from the file runs); ``keys`` must be in it."""
    full = os.path.join(directory, name)
    try:
        state = torch.load(full, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PPVAEError(f"load: {full} is missing; not a complete ppvae run") from None
    except Exception as exc:  # noqa: BLE001 -- unpickling refused, or a torn file
        raise PPVAEError(f"load: {full} {describe_load_error(exc)}") from None
    missing = [repr(k) for k in keys if not isinstance(state, dict) or k not in state]
    if not isinstance(state, dict) or missing:
        label = {PARAMS: "parameter", SAMPLES: "samples"}.get(name, "tensor")
        raise PPVAEError(f"load: {full} is not a ppvae {label} file (no {', '.join(missing) or 'dict of tensors'})")
    check_finite_tree(f"load: {full}", state)
    return state


def update_metrics(directory: str, key: str, entry) -> str:
    """Set ``metrics[key] = entry`` in ``metrics.json`` (other keys kept), refusing to overwrite a corrupted file."""
    path = os.path.join(directory, METRICS)
    metrics = {}
    if os.path.exists(path):
        try:
            with open(path) as fh:
                metrics = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PPVAEError(f"run_dir: {path} is corrupted ({exc}); not overwriting it") from None
        if not isinstance(metrics, dict):
            raise PPVAEError(f"run_dir: {path} is corrupted (a JSON {type(metrics).__name__}, not an object); "
                             "not overwriting it")
    metrics[key] = entry
    return write_json(directory, METRICS, metrics)


# -- config.json ------------------------------------------------------------------------------------------
def make_config(kind: str, model, data: dict, **fields) -> dict:
    """The ``config.json`` object of a run of ``kind`` for the registered ``model`` (rebuilt from its name and
    hparams on load), checked to be JSON before anything is written; write it last (:func:`write_config`)."""
    if not getattr(model, "name", None):
        raise PPVAEError("save: the model class is not registered (use ppvae.register_model), "
                         "so a saved run could not rebuild it")
    config = {"ppvae_version": __version__, "kind": kind, "model": model.name, "hparams": model.hparams,
              "model_import": model_import_path(type(model)), "data": data, **fields}
    try:
        json.dumps(config)
    except TypeError as exc:
        raise PPVAEError(f"save: hyperparameters and settings must be JSON values ({exc})") from None
    return config


def write_config(directory: str, config: dict) -> str:
    """Write ``config.json`` (last, so a directory with it holds a complete run)."""
    return write_json(directory, CONFIG, config)


def run_kind(directory: str) -> str:
    """The kind of the run in ``directory`` (``config.json`` ``kind``; runs of ppvae 0.1.0 before it: svi)."""
    return read_config(directory)["kind"]


def read_config(directory: str, kind: str | None = None) -> dict:
    """``config.json``, checked: a JSON object of this major.minor ppvae version, of ``kind`` when given."""
    directory = check_directory(directory, writing=False)
    where = os.path.join(directory, CONFIG)
    if not os.path.exists(where):
        old = [n for n in ("em.json", "cavi.json") if os.path.exists(os.path.join(directory, n))]
        if old:
            raise PPVAEError(f"load: {directory} was written by an older ppvae ({old[0]}, no config.json); "
                             "rerun the command to write a loadable run")
    config = read_json(directory, CONFIG)
    if not isinstance(config, dict):
        raise PPVAEError(f"load: {where} is not a ppvae run config (not a JSON object)")
    check_version(config.get("ppvae_version"), where)
    config.setdefault("kind", "svi")
    if not isinstance(config["kind"], str) or not config["kind"].isidentifier():
        raise PPVAEError(f"load: {where} has kind {config['kind']!r}; expected a result kind such as 'svi'")
    if kind is not None and config["kind"] != kind:
        raise PPVAEError(f"load: {directory} holds a run of kind '{config['kind']}'; expected '{kind}'")
    for key in ("model", "hparams", "data"):
        if key not in config:
            raise PPVAEError(f"load: {where} is not a ppvae run config (no '{key}')")
    return config


def run_model(config: dict, directory: str):
    """The model of a run, rebuilt from its registered name and hyperparameters (no code from the run runs)."""
    get_model_class(config["model"], config.get("model_import"))  # never imports: names what to import
    try:
        return build_model(config["model"], **config["hparams"])
    except TypeError as exc:
        raise PPVAEError(f"load: {os.path.join(directory, CONFIG)} is not a ppvae run config ({exc})") from None


# -- the data a run was fitted on -------------------------------------------------------------------------
def data_info(data: Dataset) -> dict:
    """What ``config.json`` records of the data: enough to rebuild shapes and reload it by name."""
    meta = {k: v for k, v in data.meta.items()
            if k in ("image_shape", "columns", "standardized", "source", "split", "target")}
    if isinstance(meta.get("source"), str) and os.path.isfile(meta["source"]):  # a file: reloaded from where it is
        meta["source"] = os.path.abspath(meta["source"])
    return {"name": data.name, "kind": data.kind, "num_data": len(data), "x_shape": list(data.x.shape),
            "has_labels": data.y is not None,
            "y_shape": None if data.y is None else list(data.y.shape),  # a real-valued response is floating
            "y_float": data.y is not None and data.y.is_floating_point(), "meta": meta}


def stub_dataset(info: dict) -> Dataset:
    """Zeros of the recorded shape: what a model's ``setup`` needs to build its modules before loading."""
    stub = Dataset(torch.zeros(info["x_shape"]), None, name=info["name"], kind=info["kind"], meta=dict(info["meta"]))
    if info.get("has_labels"):
        y_shape = info.get("y_shape") or [len(stub)]
        stub.y = torch.zeros(y_shape) if info.get("y_float") else torch.zeros(y_shape, dtype=torch.long)
    return stub


def run_dataset(info: dict, data: str | None = None) -> Dataset:
    """The data set to evaluate a run on: ``data`` (a name or path) or the run's own data set, with the
    run's standardization constants applied when it was fitted on standardized data."""
    meta = info.get("meta", {})
    source = meta.get("source")
    own = source if isinstance(source, str) and os.path.isfile(source) else info["name"]
    name = data if data is not None else own
    options = {"split": meta["split"]} if data is None and "split" in meta else {}
    if data is None and own == source and "target" in meta:  # a regression's response column
        options["target"] = meta["target"]
    std = meta.get("standardized")
    if ":" in str(name) and not os.path.exists(name):  # NAME:KEY=VALUE; standardize=... is the run's to decide
        name, options = parse_data_spec(name)
        if options.pop("standardize", bool(std)) != bool(std):
            raise PPVAEError(f"--data: the run was fitted on {'standardized' if std else 'unstandardized'} data; "
                             "evaluate applies the run's own constants, so drop standardize=... from --data")
    try:
        ds = load_dataset(name, **options)
    except PPVAEError as exc:
        raise PPVAEError(f"--data: cannot load '{name}' ({exc}); pass --data NAME_OR_PATH") from None
    if std:
        x = (ds.x - torch.as_tensor(std["mean"], dtype=ds.x.dtype)) / torch.as_tensor(std["std"], dtype=ds.x.dtype)
        ds = Dataset(x, ds.y, name=ds.name, kind=ds.kind, meta=dict(ds.meta), mask=ds.mask)
    return ds


# -- building a run directory (temporary directory beside --out, renamed on success) ----------------------
def interrupted_message(argv: list[str], args, elapsed: float, terminated: bool = False) -> str:
    """What an interrupted command kept: for ``fit`` with checkpoints, their folder, the newest and the
    exact command that resumes; otherwise that nothing was written (the temporary directory is gone)."""
    head = f"ppvae: {'terminated' if terminated else 'interrupted'} after {elapsed:.1f} s"
    out = getattr(args, "out", None)
    if getattr(args, "command", None) != "fit" or not out:
        return f"{head}; nothing was written"
    if building.REPLACING.get(os.path.abspath(out)):  # the new run's checkpoints went with its temporary directory
        return f"{head}; nothing was written ({out} still holds the earlier run, unchanged)"
    found = _checkpoints(os.path.join(os.path.abspath(out), CHECKPOINTS))
    if not found:
        return f"{head}; nothing was written"
    rest, skip = [], False
    for item in argv:  # drop an earlier --resume so the command is the run's own plus one --resume
        if skip:
            skip = False
        elif item == "--resume":
            skip = True
        elif not item.startswith("--resume="):
            rest.append(item)
    command = shlex.join(["ppvae", *rest, "--resume", out])
    return (f"{head}; kept {len(found)} checkpoint(s) in {os.path.dirname(found[-1])} (newest "
            f"{os.path.basename(found[-1])}); resume with: {command}")
