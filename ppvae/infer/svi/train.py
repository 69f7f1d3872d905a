"""The SVI trainer: one call fits a model with a guide and an ELBO chosen by name.

``fit`` runs stochastic variational inference (Hoffman et al. 2013; Ranganath et al. 2014): at each
step it draws a minibatch, computes the differentiable ELBO estimate of the chosen objective
(``objective.differentiable_loss(model, guide, batch)``, likelihood scaled by N/M through the data
plate) and steps ONE torch optimizer over every parameter of model and guide. Pyro's own
``SVI.step`` keeps one optimizer per parameter and re-validates every distribution at every step;
ppvae validates on the first step and then runs with validation off, steps torch's fused Adam kernel
and, with ``jit=True``, replays the objective traced once per batch shape (:mod:`ppvae.infer.svi.jit`)
(speed against Pyro's loop and plain PyTorch: benchmarks/bench_vae_speed.py, docs/performance.md).
:class:`Trainer` is the loop with its state; ``fit`` builds one and runs it. Code that runs inside
the loop is a :class:`ppvae.Callback` (:mod:`ppvae.runs.callbacks`); data-parallel training is a strategy
object the trainer calls (:mod:`ppvae.infer.svi.distributed`); checkpoints save and restore
:meth:`Trainer.state_dict` (:mod:`ppvae.runs.checkpoint`).
Deterministic on CPU for a seed: Pyro's RNGs are seeded once; epoch e's minibatch order is a permutation seeded
by (seed, e) (:mod:`ppvae.infer.svi.config`). A signal some library discarded stops the loop at the next step.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from typing import Any

import pyro
import torch
from pyro import poutine

from ppvae._util.convergence import check_convergence as convergence_of
from ppvae._util.procs import raise_if_swallowed
from ppvae._util.state import leaves_global_state
from ppvae._util.validation import PPVAEError, check_int, check_options, one_line
from ppvae.data.dataset import data_fingerprint
from ppvae.data.loaders import Batch, Dataset
from ppvae.infer.svi.config import TrainConfig, batch_at, batch_index, binarize_batch, resolve_device
from ppvae.infer.svi.distributed import DataParallel, SingleProcess
from ppvae.infer.svi.fit import Fit, best_restart
from ppvae.infer.svi.guides import guide_spec_name, make_guide
from ppvae.infer.svi.jit import CompiledObjective
from ppvae.infer.svi.objectives import make_elbo
from ppvae.infer.svi.potential_svi import potential_path
from ppvae.infer.svi.steps import (
    LocalLatentScale,
    adam,
    grads_finite,
    make_scheduler,
    nonfinite_error,
    nonfinite_sites,
    rng_state,
    set_rng_state,
)
from ppvae.model.base import Model
from ppvae.runs.callbacks import Callback, EarlyStopping, ProgressDisplay, as_callback, hooks
from ppvae.runs.checkpoint import Checkpointer, resume_trainer
from ppvae.runs.directory import data_info

__all__ = ["fit", "Trainer", "TrainConfig", "resolve_device", "batch_at"]

STATE_KEYS = ("step", "params", "optimizer", "scheduler", "rng", "losses", "time_s")


class Trainer:
    """One SVI run: model, guide, objective, the one optimizer, the step count and the loss history.

    ``Trainer(model, data, guide=..., elbo=..., callbacks=..., strategy=..., **options)`` validates the
    options (:class:`TrainConfig` fields, as for :func:`fit`), seeds Pyro's RNGs, clears the param
    store, sets the model up on ``data`` and moves both to ``device``; :meth:`fit` then runs the steps
    and returns a :class:`ppvae.Fit`.

    Public attributes, read by callbacks and strategies (change them only as documented):

    * ``model``, ``model_fn`` (its enumerated form if it has discrete latents), ``guide``, ``elbo``, ``elbo_name``;
    * ``data`` (the :class:`ppvae.Dataset`, on the device), ``cfg`` (the validated :class:`TrainConfig`);
    * ``step`` (optimizer steps taken), ``total`` (steps asked for), ``steps_per_epoch``, ``losses``
      (one float per step taken, resumed runs included);
    * ``params`` (every fitted tensor, fixed order), ``optim``, ``scheduler``: None until :meth:`initialize`;
    * ``callbacks`` (the :class:`ppvae.Callback` list: the user's, then early stopping and checkpointing),
      ``strategy`` (:class:`ppvae.infer.svi.distributed.SingleProcess` or ``DataParallel``);
    * ``should_stop`` (a callback sets it True to end after this step); ``compiled`` (with ``jit=True``, else None).
    """

    def __init__(self, model: Model, data: Dataset | torch.Tensor, *, guide: Any = "auto", elbo: str = "auto",
                 callbacks: list | None = None, strategy: SingleProcess | None = None, **options):
        if not isinstance(model, Model):
            raise PPVAEError(f"model: expected a ppvae.Model instance; got {type(model).__name__}")
        if not isinstance(data, Dataset):
            data = Dataset(data)
        check_options("fit", options, set(TrainConfig.__dataclass_fields__) - {"guide", "elbo"},
                      listed_in="help(ppvae.fit)")
        if isinstance(guide, str) and guide == "auto":  # record the guide actually used, e.g. "svi:model"
            guide = "model" if model.has_own_guide else "auto_normal"
        cfg = TrainConfig(guide=guide_spec_name(guide), elbo=elbo, **options).validate(len(data))
        device = resolve_device(cfg.device)
        self.strategy = SingleProcess() if strategy is None else strategy
        if cfg.jit and type(self.strategy) is not SingleProcess:
            raise PPVAEError("jit: the compiled objective cannot hold the distributed all-reduce; use jit=False")
        if callbacks is not None and not isinstance(callbacks, (list, tuple)):
            raise PPVAEError(f"callbacks: expected a list of ppvae.Callback instances; got {callbacks!r:.60}")
        missing = [m for m in ("setup", "batch", "combine_loss", "is_main") if not hasattr(self.strategy, m)]
        if missing:
            raise PPVAEError(f"strategy: expected a ppvae.infer.svi.distributed.SingleProcess-like object; "
                             f"{type(self.strategy).__name__} has no {', '.join(missing)}")
        user = [as_callback(cb) for cb in (callbacks or [])]

        pyro.clear_param_store()
        pyro.set_rng_seed(cfg.seed)
        model.setup(data)
        model.to(device)
        self.model, self.data, self.cfg = model, data.to(device), cfg
        data = self.data
        probe = data.batch(torch.arange(min(len(data), cfg.batch_size or len(data)), device=data.x.device))
        kind = getattr(model, "data_structure", "points")
        if len(probe) < len(data) and kind != "points":  # a part of a sequence is another data set
            raise PPVAEError(f"batch_size: model '{model.name or type(model).__name__}' declares data_structure "
                             f"'{kind}' (not i.i.d. points) and fits on all its rows; got {cfg.batch_size}")
        model.check_observed(probe, minibatched=len(probe) < len(data))
        structure = model.structure(probe)
        self.discrete_sites = list(structure.discrete_sites)
        self.max_plate_nesting = structure.max_plate_nesting
        self.model_fn = model.enumerated() if self.discrete_sites else model
        init = model.init_values(data, torch.Generator().manual_seed(cfg.seed))
        self.guide = make_guide(guide, model, init_values=init, **cfg.guide_options)
        self.elbo_name, self.elbo = make_elbo(
            cfg.elbo,
            has_discrete=bool(self.discrete_sites),
            max_plate_nesting=self.max_plate_nesting,
            num_particles=cfg.num_particles,
            **cfg.elbo_options,
        )
        self.total = cfg.total_steps(len(data))
        self.steps_per_epoch = cfg.steps_per_epoch(len(data))
        self.step, self.losses, self.should_stop = 0, [], False
        self.params: list[torch.Tensor] = []
        self.optim, self.scheduler = None, None
        self.dynamic_binarization = bool(data.meta.get("dynamic_binarization"))
        scaled = cfg.beta != 1.0 or cfg.kl_warmup_steps > 0
        self.kl_scale = LocalLatentScale(cfg.beta, cfg.kl_warmup_steps) if scaled else None
        traceable = cfg.jit and getattr(self.elbo, "traceable", True)  # iwae_dreg: gradient hooks, eager
        self.compiled = CompiledObjective(self.elbo, self.model_fn, self.guide, model) if traceable else None
        self._time_before, self._started = 0.0, None  # seconds of earlier (resumed-from) runs; clock start
        # SVI on the compiled potential where it applies (infer/svi/potential_svi.py); ``svi_path`` records which ran.
        # Decided before the strategy's setup, which may take the first (Pyro) step of a distributed run.
        self.fast, self.svi_path_reason = potential_path(self)
        self.svi_path = "potential" if self.fast is not None else "pyro"
        self.strategy.setup(self)
        builtin = [] if cfg.patience is None else [EarlyStopping(cfg.patience, cfg.tol)]
        if cfg.checkpoint_dir is not None:
            builtin.append(Checkpointer(cfg.checkpoint_dir, cfg.checkpoint_every, enabled=self.strategy.is_main))
        self.callbacks: list[Callback] = user + builtin

    # -- one step -----------------------------------------------------------------------------------
    def _init_params(self, batch: Batch, torch_state: torch.Tensor) -> torch.Tensor:
        """First step: run with validation on, capture every parameter, build the one optimizer."""
        try:
            with poutine.trace(param_only=True) as capture, pyro.validation_enabled(True):
                loss = self.elbo.differentiable_loss(self.model_fn, self.guide, batch)
        except PPVAEError:
            raise
        except (ValueError, RuntimeError, IndexError) as exc:  # Pyro's validation or a shape error
            if nonfinite_sites(self.model_fn, self.guide, batch, torch_state):
                raise nonfinite_error(self, float("nan"), batch, 0, torch_state) from None
            first = one_line(exc)
            raise PPVAEError(f"model/guide: the first training step failed on the data: {first}") from exc
        values = [s["value"] for s in capture.trace.nodes.values()]  # a plain nn.Parameter has no unconstrained()
        params = {id(p): p for p in (v.unconstrained() if hasattr(v, "unconstrained") else v for v in values)}
        for module in (self.model, self.guide):
            if isinstance(module, torch.nn.Module):
                params.update({id(p): p for p in module.parameters()})
        self.params = [p for p in params.values() if p.requires_grad]
        if not self.params:
            raise PPVAEError("guide: the model and guide have no parameters to fit")
        self.optim = adam(self.params, self.cfg.lr, tuple(self.cfg.betas))
        self.scheduler = make_scheduler(self.optim, self.cfg, self.total)
        return loss

    def initialize(self) -> None:
        """Create the parameters and the optimizer without taking a step: one traced loss evaluation on
        the current step's batch (RNG states are put back, so the run continues as if it had not happened)."""
        if self.optim is not None:
            return
        if self.fast is not None:  # the potential path's parameters exist already; this creates its optimizer
            return self.fast.initialize()
        rng = pyro.util.get_rng_state()
        index, _ = batch_index(self.data, self.cfg, self.step)
        batch, _ = self.strategy.batch(self.data, index)
        self._init_params(batch, torch.get_rng_state())
        pyro.util.set_rng_state(rng)

    def run_step(self) -> float:
        """One optimizer step on the minibatch of step ``self.step``; returns its loss."""
        if self.fast is not None:
            return self.fast.run_step()
        index, b = batch_index(self.data, self.cfg, self.step)
        batch, weight = self.strategy.batch(self.data, index)
        if self.dynamic_binarization:
            batch = binarize_batch(batch, self.cfg.seed, self.step)
        torch_state = torch.get_rng_state()
        scale = self.kl_scale.at_step(self.step) if self.kl_scale is not None else contextlib.nullcontext()
        with scale:
            if self.optim is None:
                loss = self._init_params(batch, torch_state)
            else:
                with pyro.validation_enabled(False):
                    loss = self._loss(batch)
        loss = self.strategy.combine_loss(loss, weight, self.params)
        self.optim.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        value = loss.item()
        if not math.isfinite(value) or not grads_finite(self.params):
            raise nonfinite_error(self, value, batch, b, torch_state)
        if self.cfg.optimizer == "clipped_adam":
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.clip_norm)
        self.optim.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.losses.append(value)
        self.step += 1
        return value

    def _loss(self, batch: Batch) -> torch.Tensor:
        # the compiled graph bakes in the KL weight, so it is used once the warm-up ramp is over
        if self.compiled is not None and self.step >= self.cfg.kl_warmup_steps:
            return self.compiled(batch, self.step)
        return self.elbo.differentiable_loss(self.model_fn, self.guide, batch)

    # -- the loop -----------------------------------------------------------------------------------
    @property
    def elapsed_s(self) -> float:
        """Seconds spent training, including the runs this one resumed from."""
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self._time_before + running

    def fit(self, progress: bool | None = None) -> Fit:
        """Run the remaining steps (or until a callback sets ``should_stop``) and return the :class:`ppvae.Fit`.

        :param progress: None: a bar with the running loss on a terminal, a plain line every 30 s elsewhere;
            False: nothing (see :mod:`ppvae._util.progress`).
        """
        display = None if progress is False else ProgressDisplay(self.total, progress)
        callbacks = self.callbacks if display is None else [*self.callbacks, display]
        self._started = time.perf_counter()
        try:
            for hook in hooks(callbacks, "on_fit_start"):
                hook(self)
            self._loop(hooks(callbacks, "on_step_end"), hooks(callbacks, "on_epoch_end"))
            self._time_before, self._started = self.elapsed_s, None  # the clock stops before the final hooks
            for hook in hooks(callbacks, "on_fit_end"):
                hook(self)
        finally:
            if display is not None:
                display.close()
            for callback in self.callbacks:  # the checkpoint directory's lock, held for the fit
                if isinstance(callback, Checkpointer):
                    callback.release()
        history = {"loss": self.losses, "steps": self.step, "time_s": self._time_before,
                   "stopped_early": self.should_stop, "svi_path": self.svi_path,
                   "svi_path_reason": self.svi_path_reason,
                   "svi_compile": None if self.fast is None else self.fast.compile_reason}
        return Fit(self.model, self.guide, self.cfg, history, data_info=data_info(self.data),
                   elbo_name=self.elbo_name)

    def _loop(self, step_hooks: list, epoch_hooks: list) -> None:
        per_epoch = self.steps_per_epoch
        while self.step < self.total and not self.should_stop:
            raise_if_swallowed()
            value = self.run_step()
            for hook in step_hooks:
                hook(self, value)
            if epoch_hooks and self.step % per_epoch == 0:
                for hook in epoch_hooks:
                    hook(self)

    # -- state --------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything the next step depends on, as tensors and plain values (``torch.save``-able and
        ``weights_only``-loadable): ``step``, ``params`` (CPU copies, in :attr:`params` order), ``optimizer``
        and ``scheduler`` (their state dicts), ``rng`` (torch, CUDA, numpy and Python RNG states), ``losses``
        and ``time_s``. Loading it into a trainer built with the same model, data and options continues the
        run exactly: on CPU to the same losses and parameters, bit for bit, as an uninterrupted run."""
        if self.optim is None:
            raise PPVAEError("state_dict: nothing to save before the first step")
        return {
            "step": self.step,
            "params": [p.detach().cpu().clone() for p in self.params],
            "optimizer": self.optim.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "rng": rng_state(),
            "losses": list(self.losses),
            "time_s": float(self.elapsed_s),
            "data": self.data_fingerprint,
        }

    @property
    def data_fingerprint(self) -> str:
        """:func:`ppvae._dataset.data_fingerprint` of the training data (computed once, when first asked)."""
        if getattr(self, "_data_fingerprint", None) is None:
            self._data_fingerprint = data_fingerprint(self.data)
        return self._data_fingerprint

    def load_state_dict(self, state: dict) -> None:
        """Continue from ``state`` (from :meth:`state_dict`): parameters, optimizer and scheduler state,
        RNG states, step, loss history and time. The parameters are created first if needed."""
        missing = [k for k in STATE_KEYS if k not in state and k != "time_s"]
        if missing:
            raise PPVAEError(f"load_state_dict: expected a Trainer.state_dict(); missing {', '.join(missing)}")
        step = int(state["step"])
        if state.get("data") is not None and state["data"] != self.data_fingerprint:  # older states have none
            raise PPVAEError(f"load_state_dict: the state was trained on other data ({state['data']}); this run's "
                             f"data is {self.data_fingerprint}; resume with the data the checkpoint was trained on")
        if step > self.total:
            raise PPVAEError(f"load_state_dict: the state is at step {step}, past the {self.total} steps asked for")
        self.initialize()
        saved = state["params"]
        if len(saved) != len(self.params) or any(s.shape != p.shape for s, p in zip(saved, self.params, strict=True)):
            shapes = [tuple(s.shape) for s in saved], [tuple(p.shape) for p in self.params]
            raise PPVAEError(f"load_state_dict: the state holds parameters of shapes {shapes[0]}; "
                             f"the run has {shapes[1]}")
        with torch.no_grad():
            for p, s in zip(self.params, saved, strict=True):
                p.copy_(s.to(p.device))
        self.optim.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step = step
        self.losses = [float(v) for v in state["losses"]]
        self._time_before = float(state.get("time_s", 0.0))
        set_rng_state(state["rng"])


@leaves_global_state  # seeds Pyro and clears its param store for the run, then puts the caller's back
def fit(
    model: Model,
    data: Dataset | torch.Tensor,
    *,
    guide: Any = "auto",
    elbo: str = "auto",
    progress: bool | None = None,
    callbacks: list | None = None,
    resume: str | None = None,
    distributed: bool = False,
    check_convergence: bool = True,
    restarts: int = 1,
    **options,
) -> Fit:
    """Fit ``model`` to ``data`` by SVI and return a :class:`ppvae.Fit`: builds a :class:`Trainer`,
    loads the checkpoint at ``resume`` if given, and runs :meth:`Trainer.fit`.

    :param model: a :class:`ppvae.Model` instance.
    :param data: a :class:`ppvae.Dataset` (or a tensor, wrapped as one).
    :param guide: a registered guide name (``auto``, ``auto_delta``, ``auto_normal``, ...), or a guide
        callable of the user's (its name is then not saved; reload with the same object).
    :param elbo: ``auto``, ``trace``, ``meanfield``, ``enum`` or another registered objective.
    :param progress: None (default): a bar with the running loss on a terminal, a plain line (percent,
        rate, ETA, loss) every 30 s elsewhere; False: nothing.
    :param callbacks: :class:`ppvae.Callback` instances (or functions ``f(trainer)``, run after every
        step), called in order before the built-in early stopping and checkpointing.
    :param options: :class:`TrainConfig` fields: ``steps`` or ``epochs``, ``batch_size``, ``lr``,
        ``betas`` (Adam's, default (0.9, 0.999)), ``optimizer``, ``lr_schedule``, ``num_particles``, ``seed``,
        ``device``, ``patience`` and ``tol`` (early stopping, :class:`ppvae.EarlyStopping`),
        ``guide_options``, ``elbo_options``, ``checkpoint_dir`` and ``checkpoint_every`` (write a
        checkpoint there every that many steps and at the end; see :mod:`ppvae.runs.checkpoint`), ``jit``
        (trace the objective once per batch shape and replay it: ~12% less time per epoch on the MNIST
        VAE; for models whose operations do not depend on data values or random draws, see
        :mod:`ppvae.infer.svi.jit`), ``compile`` (the potential path's whole step compiled to C++ by
        TorchInductor: True, False, or ``"auto"``, the default, from 5,000 full-batch steps on CPU; see
        :mod:`ppvae.infer.svi.compiled`).
    :param resume: a checkpoint file, checkpoint directory or run directory (with ``checkpoints/``):
        continue from its newest checkpoint; on CPU the result equals an uninterrupted run's exactly.
    :param distributed: data-parallel SVI over the initialized ``torch.distributed`` process group
        (or the torchrun environment): the :class:`ppvae.infer.svi.distributed.DataParallel` strategy.
    :param check_convergence: warn (``UserWarning``, naming the remedy) when the loss is still falling
        at the end by more than its noise; the rule is in :mod:`ppvae._util.convergence`.
    :param restarts: fit this many times from seeds ``seed``, ``seed + 1``, ... and keep the best final ELBO
        (a mixture's objective has many optima); ``fit.info["restarts"]`` has them all (``best_restart``).

    Example (a MAP fit of a two-component mixture; the assignments are summed out, so the log-likelihood is
    exact, and it reaches EM's maximum, -384.46 on the standardized data):

    >>> import ppvae
    >>> from ppvae.models import GMM
    >>> data = ppvae.load_dataset("faithful", standardize=True)
    >>> fit = ppvae.fit(GMM(K=2), data, guide="auto_delta", steps=300, lr=0.05, progress=False)
    >>> round(float(fit.log_likelihood(data).sum()), 2)
    -384.46
    """
    if check_int("restarts", restarts, low=1) > 1:  # the best of fresh fits (ppvae/infer/svi/fit.py)
        return best_restart(fit, model, data, restarts, resume is not None or distributed, options,
                            guide=guide, elbo=elbo, progress=progress, callbacks=callbacks)
    trainer = Trainer(model, data, guide=guide, elbo=elbo, callbacks=callbacks,
                      strategy=DataParallel() if distributed else None, **options)
    if resume is not None:
        resume_trainer(trainer, resume)
    result = trainer.fit(progress=progress)
    verdict = convergence_of(trainer.losses) if check_convergence and not result.history["stopped_early"] else None
    if verdict is not None and verdict.still_falling:  # the one hook of ppvae/_util/convergence.py
        warnings.warn(verdict.message(), UserWarning, stacklevel=2)
    return result
