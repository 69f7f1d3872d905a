"""The result of a fit: model, guide, configuration and history, with save/load and the posterior
over discrete assignments.

A run directory holds ``config.json`` (model name and hyperparameters, trainer configuration, data
description, ppvae version), ``params.pt`` (tensors only, read back with
``torch.load(weights_only=True)`` so loading never runs code from the file) and ``history.json``.
Files are written to a temporary name in the same directory and renamed, so a reader never sees a
torn file. ``Fit.load`` refuses, naming the file and the reason, a missing or corrupted file, a file
that would need code to be unpickled, and a run written by another major.minor ppvae version
(``config.json`` ``ppvae_version``; patch versions share the format).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import TraceEnum_ELBO, infer_discrete

from ._config import TrainConfig, resolve_device
from ._enum import data_plate_log_prob, enumerated_trace
from ._io import atomic_write, check_version, load_tensors
from ._validation import PPVAEError, check_choice, check_int
from ._version import __version__
from .data import Batch, Dataset
from .guides import make_guide
from .model import Model, build_model, get_model_class, is_local, model_import_path
from .result import Result, guide_site_draws

__all__ = ["Fit", "atomic_write"]  # atomic_write lives in ppvae._io; re-exported for older callers

CONFIG, PARAMS, HISTORY = "config.json", "params.pt", "history.json"


class Fit(Result):
    """A fitted model: ``model``, ``guide``, ``config`` (:class:`TrainConfig`), ``history`` (``"loss"``: the
    loss per step; ``steps``, ``time_s``, ``stopped_early``). Implements :class:`ppvae.Result`: draws come
    from the guide."""

    history_key = "loss"

    def __init__(self, model: Model, guide: Callable, config: TrainConfig, history: dict, *,
                 data_info: dict, elbo_name: str):
        self.model, self.guide, self.config, self.history = model, guide, config, history
        self.data_info, self.elbo_name = data_info, elbo_name

    def __repr__(self) -> str:
        loss = self.history["loss"][-1] if self.history.get("loss") else float("nan")
        return f"Fit({self.model.name or type(self.model).__name__}, {self.method}, final loss {loss:.6g})"

    @property
    def method(self) -> str:
        return f"svi:{self.config.guide}"

    @property
    def point_estimate(self) -> bool:
        return self.config.guide == "auto_delta"

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    # -- structure ------------------------------------------------------------------------------
    def _batch(self, data: Dataset | Batch | torch.Tensor) -> Batch:
        if isinstance(data, Batch):
            return data.to(self.device)
        if not isinstance(data, Dataset):
            data = Dataset(data)
        return Batch(data.x.to(self.device), None if data.y is None else data.y.to(self.device))

    def _data_batch(self, data) -> Batch:
        return super()._data_batch(None) if data is None else self._batch(data)

    @torch.no_grad()
    def latent_draws(self, data, num_draws: int | None = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        """``num_draws`` draws of every latent the guide samples (globals, continuous locals) for ``data``;
        seeded by the caller (:meth:`predict`, :meth:`summary`)."""
        batch = self._data_batch(data)
        with pyro.validation_enabled(False):
            return guide_site_draws(self.model, self.guide, batch, check_int("num_draws", num_draws or 1000, low=1))

    def _max_plate_nesting(self, batch: Batch) -> int:
        return self.model.max_plate_nesting(batch)

    def global_sites(self, data) -> list[str]:
        """The model's latent sites outside the data plate."""
        return [n for n, s in self.model.latent_sites(self._batch(data)).items() if not is_local(s)]

    @torch.no_grad()
    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        """Point estimates of the global latents: the guide's median (one draw for a guide without one)."""
        batch = self._data_batch(data)
        names = set(self.global_sites(batch))
        with pyro.validation_enabled(False):
            values = _guide_median(self.guide, batch)
        return {k: v.detach() for k, v in values.items() if k in names}

    # -- the likelihood and the discrete posterior ----------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, data) -> torch.Tensor:
        """Per-point log p(x_i | fitted globals), with discrete local latents summed out exactly.

        Exact when the model's only local latents are discrete; a model with continuous local
        latents needs the evaluation layer's importance sampling instead.
        """
        batch = self._batch(data)
        values = self.global_values(batch)
        local_cont = [n for n, s in self.model.latent_sites(batch).items()
                      if n not in values and not s["fn"].support.is_discrete]
        if local_cont:
            raise PPVAEError(
                f"log_likelihood: the model has continuous local latents ({', '.join(local_cont)}); "
                "estimate log p(x) with ppvae.log_marginal instead"
            )
        trace = enumerated_trace(self.model, batch, self._max_plate_nesting(batch), values)
        return data_plate_log_prob(trace)

    def _conditioned(self, batch: Batch):
        return poutine.condition(self.model.enumerated(), data=self.global_values(batch))

    @torch.no_grad()
    def discrete_posterior(self, data, how: str = "marginal") -> dict[str, torch.Tensor]:
        """The posterior over each discrete latent site given the fitted globals.

        ``how="marginal"``: per-point probabilities (responsibilities), shape (N, K), from
        ``TraceEnum_ELBO.compute_marginals``; ``"map"``: the jointly most probable assignment and
        ``"sample"``: one posterior draw, both from ``pyro.infer.infer_discrete``.
        """
        check_choice("how", how, ("marginal", "map", "sample"))
        batch = self._batch(data)
        mpn = self._max_plate_nesting(batch)
        model = self._conditioned(batch)
        with pyro.validation_enabled(False):
            if how == "marginal":
                marg = TraceEnum_ELBO(max_plate_nesting=mpn).compute_marginals(model, lambda b: None, batch)
                return {k: v.probs if hasattr(v, "probs") else v for k, v in marg.items()}
            fn = infer_discrete(model, first_available_dim=-mpn - 1, temperature=0 if how == "map" else 1)
            tr = poutine.trace(fn).get_trace(batch)
        names = self.model.discrete_latent_sites(batch)
        return {n: tr.nodes[n]["value"] for n in names}

    # -- persistence ----------------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write ``config.json``, ``params.pt`` and ``history.json`` into the directory ``path``."""
        os.makedirs(path, exist_ok=True)
        if not self.model.name:
            raise PPVAEError("save: the model class is not registered (use ppvae.register_model), "
                             "so a saved run could not rebuild it")
        config = {
            "ppvae_version": __version__,
            "model": self.model.name,
            "model_import": model_import_path(type(self.model)),  # named in the error when not registered
            "hparams": self.model.hparams,
            "train": asdict(self.config),
            "elbo": self.elbo_name,
            "data": self.data_info,
        }
        try:
            text = json.dumps(config, indent=2)
        except TypeError as exc:
            raise PPVAEError(f"save: hyperparameters must be JSON values ({exc})") from None
        state = {"model": _cpu(self.model.state_dict())}
        if isinstance(self.guide, torch.nn.Module) and self.guide is not self.model:
            state["guide"] = _cpu(self.guide.state_dict())
        atomic_write(os.path.join(path, PARAMS), lambda fh: torch.save(state, fh), mode="wb")
        atomic_write(os.path.join(path, HISTORY), lambda fh: json.dump(self.history, fh))
        atomic_write(os.path.join(path, CONFIG), lambda fh: fh.write(text))

    @classmethod
    def load(cls, path: str) -> "Fit":
        """Rebuild a fit from a run directory written by :meth:`save` (tensors only; no code runs)."""
        config = _read_json(path, CONFIG)
        if not isinstance(config, dict):
            raise PPVAEError(f"load: {os.path.join(path, CONFIG)} is not a ppvae run config (not a JSON object)")
        check_version(config.get("ppvae_version"), os.path.join(path, CONFIG))
        history = _read_json(path, HISTORY)
        params = os.path.join(path, PARAMS)
        state = load_tensors(params, params, missing="; not a complete ppvae run")
        if not isinstance(state, dict) or "model" not in state:
            raise PPVAEError(f"load: {os.path.join(path, PARAMS)} is not a ppvae parameter file (no 'model' state)")
        try:
            cfg = TrainConfig(**config["train"])
            get_model_class(config["model"], config.get("model_import"))  # never imports: names what to import
            model = build_model(config["model"], **config["hparams"])
            info = config["data"]
        except (KeyError, TypeError) as exc:
            raise PPVAEError(f"load: {os.path.join(path, CONFIG)} is not a ppvae run config ({exc})") from None
        stub = Dataset(torch.zeros(info["x_shape"]), None, name=info["name"], kind=info["kind"],
                       meta=dict(info["meta"]))
        if info.get("has_labels"):
            y_shape = info.get("y_shape") or [len(stub)]
            stub.y = torch.zeros(y_shape) if info.get("y_float") else torch.zeros(y_shape, dtype=torch.long)
        cfg.device = "cpu"
        with pyro.validation_enabled(False):
            model.setup(stub)
            guide = make_guide(cfg.guide, model, **cfg.guide_options)
            pyro.clear_param_store()
            if isinstance(guide, torch.nn.Module):  # autoguides create their parameters on a first call
                poutine.block(guide)(stub.batch())
        try:
            model.load_state_dict(state["model"])
            if "guide" in state:
                guide.load_state_dict(state["guide"])
        except (RuntimeError, KeyError) as exc:
            where = os.path.join(path, PARAMS)
            raise PPVAEError(f"load: {where} does not match model '{config['model']}' ({exc})") from None
        return cls(model, guide, cfg, history, data_info=info, elbo_name=config.get("elbo", cfg.elbo))


def _guide_median(guide, batch, num_draws: int = 501) -> dict:
    """The guide's median; for a flow (no closed form) the coordinate-wise median of ``num_draws``
    seeded draws in the unconstrained space, constrained back; for a guide with neither, one draw."""
    try:
        return guide.median(batch)
    except (NotImplementedError, AttributeError):
        pass
    if hasattr(guide, "get_posterior") and hasattr(guide, "_unpack_latent"):
        with torch.random.fork_rng(devices=[]):  # deterministic, and leaves the caller's RNG alone
            torch.manual_seed(0)
            latent = guide.get_posterior(batch).sample((num_draws,)).median(0).values
        # as AutoContinuous.median does with its loc: unpack per site, map to the support
        return {site["name"]: biject_to(site["fn"].support)(value) for site, value in guide._unpack_latent(latent)}
    tr = poutine.trace(guide).get_trace(batch)
    return {n: s["value"] for n, s in tr.iter_stochastic_nodes()}


def _cpu(state: dict) -> dict:
    return {k: v.detach().cpu() for k, v in state.items()}


def _read_json(path: str, name: str) -> dict:
    full = os.path.join(path, name)
    try:
        with open(full) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise PPVAEError(f"load: {full} is missing; not a complete ppvae run") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PPVAEError(f"load: {full} is corrupted ({exc})") from None
