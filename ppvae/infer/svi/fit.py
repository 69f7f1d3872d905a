"""The result of a fit: model, guide, configuration and history, with save/load and the posterior
over discrete assignments.

:meth:`Fit.save` writes a run directory of kind ``svi`` (``config.json``, ``params.pt``, ``history.json``;
the format is in :mod:`ppvae.runs.directory`). ``Fit.load`` refuses, naming the file and the reason, a missing or
corrupted file, a file that would need code to be unpickled, and a run written by another major.minor
ppvae version (``config.json`` ``ppvae_version``; patch versions share the format).
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict
from typing import Callable

import pyro
import torch
from pyro import poutine
from pyro.distributions.transforms import biject_to
from pyro.infer import TraceEnum_ELBO, infer_discrete
from pyro.infer.autoguide import AutoContinuous

from ppvae._util import display as _display
from ppvae._util.state import leaves_global_state
from ppvae._util.validation import PPVAEError, check_choice, check_int
from ppvae.data.loaders import Batch, Dataset
from ppvae.infer.pyro_adapter import unpack_latent
from ppvae.infer.svi.config import TrainConfig, resolve_device
from ppvae.infer.svi.guides import make_guide
from ppvae.model.base import Model
from ppvae.results.base import Result, guide_site_draws
from ppvae.results.kinds import register_kind
from ppvae.runs import directory as runs

__all__ = ["Fit"]


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

    def _repr_html_(self) -> str:
        return _display.fit_html(self)

    @property
    def method(self) -> str:
        return f"svi:{self.config.guide}"

    @property
    def info(self) -> dict:
        """How the fit ran: ``svi_path`` ("potential": the compiled-potential steps of
        :mod:`ppvae.infer.svi.potential_svi`; "pyro": Pyro's ELBO), ``svi_path_reason``, why, and ``svi_compile``
        (whether the potential step was compiled); with ``fit(restarts=N)``, ``restarts``: every restart's seed and
        final loss, and which was kept."""
        keys = ("svi_path", "svi_path_reason", "svi_compile") + (("restarts",) if "restarts" in self.history else ())
        return {k: self.history.get(k) for k in keys}

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
        return Batch(data.x, data.y, mask=data.mask).to(self.device)

    def _data_batch(self, data) -> Batch:
        return super()._data_batch(None) if data is None else self._batch(data)

    @torch.no_grad()
    def latent_draws(self, data, num_draws: int | None = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        """``num_draws`` draws of every latent the guide samples (globals, continuous locals) for ``data``;
        seeded by the caller (:meth:`predict`, :meth:`summary`)."""
        batch = self._data_batch(data)
        with pyro.validation_enabled(False):
            num_draws = check_int("num_draws", 1000 if num_draws is None else num_draws, low=1)
            return guide_site_draws(self.model, self.guide, batch, num_draws)

    def _max_plate_nesting(self, batch: Batch) -> int:
        return self.model.structure(batch).max_plate_nesting

    def global_sites(self, data) -> list[str]:
        """The model's latent sites outside the data plate (:meth:`ppvae.Model.structure`)."""
        return list(self.model.structure(self._batch(data)).global_sites)

    @torch.no_grad()
    def global_values(self, data=None) -> dict[str, torch.Tensor]:
        """Point estimates of the global latents: the guide's median (one draw for a guide without one)."""
        batch = self._data_batch(data)
        names = set(self.global_sites(batch))
        with pyro.validation_enabled(False):
            values = guide_median(self.guide, batch)
        return {k: v.detach() for k, v in values.items() if k in names}

    # -- the likelihood (Result.log_likelihood: model.enumeration.enumerated_log_likelihood), the discrete posterior
    def _likelihood_values(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.global_values(batch)  # the guide's values as they are (no cast to the data's dtype)

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
        return {n: tr.nodes[n]["value"] for n in self.model.structure(batch).discrete_sites}

    # -- persistence (the run-directory format: ppvae/runs.py) ------------------------------------
    def save(self, path: str, overwrite: bool = False) -> None:
        """Write ``config.json``, ``params.pt`` and ``history.json`` as the run directory ``path``. A new or
        empty directory receives the run; one holding this same run is updated; another ppvae run is replaced
        whole only with ``overwrite=True``; a directory ppvae did not write is refused (``runs.save_run``)."""
        runs.save_run(self, path, self._write, overwrite)

    def _write(self, path: str) -> None:
        config = runs.make_config("svi", self.model, self.data_info, train=asdict(self.config), elbo=self.elbo_name)
        state = {"model": self.model.state_dict()}
        if isinstance(self.guide, torch.nn.Module) and self.guide is not self.model:
            state["guide"] = self.guide.state_dict()
        runs.write_tensors(path, runs.PARAMS, state)
        runs.write_json(path, runs.HISTORY, self.history, indent=None)
        runs.write_config(path, config)

    @classmethod
    @leaves_global_state  # builds the guide in a cleared param store; the caller's store is put back
    def load(cls, path: str) -> "Fit":
        """Rebuild a fit from a run directory written by :meth:`save` (tensors only; no code runs)."""
        config = runs.read_config(path, "svi")
        history = runs.read_json(path, runs.HISTORY)
        state = runs.read_tensors(path, runs.PARAMS, ("model",))
        model = runs.run_model(config, path)
        try:
            cfg = TrainConfig(**config["train"])
            info = config["data"]
            stub = runs.stub_dataset(info)
        except (KeyError, TypeError) as exc:
            raise PPVAEError(f"load: {os.path.join(path, runs.CONFIG)} is not a ppvae run config ({exc})") from None
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
            where = os.path.join(path, runs.PARAMS)
            raise PPVAEError(f"load: {where} does not match model '{config['model']}' ({exc})") from None
        return cls(model, guide, cfg, history, data_info=info, elbo_name=config.get("elbo", cfg.elbo))


def guide_median(guide, batch, num_draws: int = 501) -> dict:
    """The guide's median; for a flow (no closed form) the coordinate-wise median of ``num_draws``
    seeded draws in the unconstrained space, constrained back; for a guide with neither, one draw."""
    try:
        return guide.median(batch)
    except (NotImplementedError, AttributeError):
        pass
    if isinstance(guide, AutoContinuous):
        with torch.random.fork_rng(devices=[]):  # deterministic, and leaves the caller's RNG alone
            torch.manual_seed(0)
            latent = guide.get_posterior(batch).sample((num_draws,)).median(0).values
        # as AutoContinuous.median does with its loc: unpack per site, map to the support
        return {site["name"]: biject_to(site["fn"].support)(value) for site, value in unpack_latent(guide, latent)}
    tr = poutine.trace(guide).get_trace(batch)
    return {n: s["value"] for n, s in tr.iter_stochastic_nodes()}


register_kind("svi", Fit.load, "a fit by stochastic variational inference (ppvae fit)")


def final_loss(fit: Fit) -> float:
    """The mean loss (the negative ELBO) over the last tenth of the steps: the final objective, its noise averaged."""
    losses = fit.history.get("loss") or [math.inf]
    tail = losses[-max(1, len(losses) // 10):]
    return float(sum(tail) / len(tail))


def best_restart(fit_fn: Callable, model, data, restarts: int, refused: bool, options: dict, **common) -> Fit:
    """``fit(restarts=N)``: N fits by ``fit_fn`` (:func:`ppvae.fit`) from seeds ``seed``, ``seed + 1``, ..., each of a
    fresh copy of ``model``; the one with the best final ELBO (the lowest :func:`final_loss`) is returned, its
    ``history["restarts"]`` recording them all. ``refused``: resuming or data-parallel (one run only)."""
    if refused:
        raise PPVAEError("restarts: several restarts cannot resume a checkpoint or run data-parallel; pass restarts=1")
    seed = options.pop("seed", 0)
    fits = [fit_fn(copy.deepcopy(model), data, check_convergence=False, seed=seed + r, **common, **options)
            for r in range(restarts)]
    losses = [final_loss(f) for f in fits]
    best = min(range(len(fits)), key=lambda i: (not math.isfinite(losses[i]), losses[i]))
    kept = fits[best]
    kept.history["restarts"] = {"seeds": [seed + i for i in range(len(fits))], "final_losses": losses,
                                "kept_seed": seed + best, "rule": "lowest mean loss over the last tenth of the steps"}
    return kept
