"""Checkpoints of an SVI run: written atomically every N steps, resumed exactly.

A checkpoint is one file ``checkpoint-<step>.pt`` in the checkpoint directory holding only tensors,
numbers, strings, lists and dicts, so it is read back with ``torch.load(weights_only=True)`` and
loading never executes code from the file. It holds :meth:`ppvae.Trainer.state_dict`, everything the
next step depends on:

* ``params``: every fitted tensor, in the trainer's parameter order (model and guide);
* ``optimizer`` / ``scheduler``: the state dicts of the one Adam optimizer and its lr schedule;
* ``rng``: the torch (and CUDA), numpy and Python RNG states;
* ``step``, ``losses`` (the loss history), ``time_s`` and ``config`` (JSON text: ppvae version,
  model name and hyperparameters, :class:`~ppvae.infer.svi.config.TrainConfig`).

The minibatch of step ``t`` is a function of (seed, t) alone (:func:`ppvae.infer.svi.config.batch_at`), so
parameters + optimizer state + RNG states + step determine the rest of the run: on CPU a resumed
run's losses and final parameters equal an uninterrupted run's bit for bit.

Each file is written to a temporary name in the same directory, fsynced and renamed
(:func:`ppvae._util.io.atomic_write`); the previous checkpoint is deleted only after the new one is in
place, so a process killed at any instant leaves the last complete checkpoint readable and never a
torn one. With data-parallel training only rank 0 writes (the strategy's ``is_main``).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict

import torch

from ppvae._util.io import atomic_write, check_version, fsync_dir, load_tensors
from ppvae._util.validation import PPVAEError, check_int
from ppvae._version import __version__
from ppvae.runs.callbacks import Callback

__all__ = ["Checkpointer", "latest_checkpoint", "load_checkpoint", "resume_trainer", "save_checkpoint"]

FORMAT = "ppvae-checkpoint-1"
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
_KEYS = ("format", "ppvae_version", "step", "params", "optimizer", "scheduler", "rng", "losses", "config")
# TrainConfig fields a resumed run may change: where/how often to checkpoint, early stopping, device.
_FREE = {"steps", "epochs", "checkpoint_dir", "checkpoint_every", "device", "patience", "tol"}


# -- writing --------------------------------------------------------------------------------------
def _config_text(trainer) -> str:
    model = trainer.model
    return json.dumps({
        "ppvae_version": __version__,
        "model": model.name,
        "hparams": model.hparams,
        "train": asdict(trainer.cfg),
    }, default=str)


def save_checkpoint(trainer, directory: str, keep: int = 2) -> str:
    """Write ``trainer.state_dict()`` to ``directory/checkpoint-<step>.pt`` atomically, then delete all but
    the ``keep`` newest checkpoints."""
    if trainer.optim is None:
        raise PPVAEError("checkpoint: nothing to save before the first step")
    os.makedirs(directory, exist_ok=True)
    state = {"format": FORMAT, "ppvae_version": __version__, **trainer.state_dict(), "config": _config_text(trainer)}
    path = os.path.join(directory, f"checkpoint-{trainer.step:09d}.pt")
    atomic_write(path, lambda fh: torch.save(state, fh), mode="wb")
    fsync_dir(directory)
    for old in _checkpoints(directory)[:-keep]:
        os.unlink(old)
    return path


class Checkpointer(Callback):
    """The checkpointing callback ``fit(checkpoint_dir=..., checkpoint_every=...)`` adds: a checkpoint
    every ``every`` steps (one integer modulo per step) and one when the fit ends; ``enabled=False``
    (data-parallel ranks other than 0) writes nothing."""

    def __init__(self, directory: str | None, every: int | None, keep: int = 2, enabled: bool = True):
        self.directory, self.keep = directory, keep
        self.enabled = enabled and directory is not None
        self.every = None if every is None else check_int("checkpoint_every", every, low=1)
        self.last_step = -1

    def on_step_end(self, trainer, loss: float) -> None:
        if self.every is not None and trainer.step % self.every == 0:
            self.save(trainer)

    def on_fit_end(self, trainer) -> None:
        self.save(trainer)

    def save(self, trainer) -> None:
        """Write a checkpoint of the current step unless this step's is already written."""
        if self.enabled and trainer.step != self.last_step and trainer.optim is not None:
            save_checkpoint(trainer, self.directory, self.keep)
            self.last_step = trainer.step


# -- reading --------------------------------------------------------------------------------------
def _checkpoints(directory: str) -> list[str]:
    """Checkpoint files of ``directory``, oldest first."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = sorted((int(m.group(1)), n) for n in names if (m := _NAME.match(n)))
    return [os.path.join(directory, n) for _, n in found]


def latest_checkpoint(path: str) -> str:
    """The newest checkpoint file at ``path``: a checkpoint file, a checkpoint directory, or a run
    directory whose ``checkpoints/`` folder holds them."""
    if os.path.isfile(path):
        return path
    for directory in (path, os.path.join(path, "checkpoints")):
        found = _checkpoints(directory)
        if found:
            return found[-1]
    raise PPVAEError(f"resume: expected a checkpoint-<step>.pt file in {path} or "
                     f"{os.path.join(path, 'checkpoints')}; found none")


def load_checkpoint(path: str) -> dict:
    """Read a checkpoint file (tensors and plain values only; no code from the file runs)."""
    state = load_tensors(path, f"checkpoint {path}")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise PPVAEError(f"load: {path} is not a ppvae checkpoint (no '{FORMAT}' format tag)")
    missing = [k for k in _KEYS if k not in state]
    if missing:
        raise PPVAEError(f"load: checkpoint {path} is incomplete; missing {', '.join(missing)}")
    check_version(state["ppvae_version"], f"checkpoint {path}")
    return state


# -- resuming -------------------------------------------------------------------------------------
def _check_compatible(trainer, config: dict, path: str) -> None:
    model = trainer.model
    if config.get("model") != model.name or config.get("hparams") != json.loads(json.dumps(model.hparams, default=str)):
        raise PPVAEError(f"resume: checkpoint {path} is of model '{config.get('model')}' {config.get('hparams')}; "
                         f"got '{model.name}' {model.hparams}")
    mine, theirs = asdict(trainer.cfg), config.get("train", {})
    schedule_fixed = mine["lr_schedule"] != "constant"
    for key in sorted(set(mine) | set(theirs)):
        if key in _FREE and not (schedule_fixed and key in ("steps", "epochs")):
            continue
        if json.dumps(mine.get(key), default=str) != json.dumps(theirs.get(key), default=str):
            raise PPVAEError(f"resume: {key} must match the checkpointed run's; checkpoint {path} has "
                             f"{theirs.get(key)!r}, got {mine.get(key)!r}")


def resume_trainer(trainer, path: str) -> dict:
    """Load the newest checkpoint at ``path`` into ``trainer`` (:meth:`ppvae.Trainer.load_state_dict`:
    parameters, optimizer and scheduler state, RNG states, step, loss history, time) after checking it
    is of the same model and training options. Returns the checkpoint."""
    file = latest_checkpoint(path)
    state = load_checkpoint(file)
    _check_compatible(trainer, json.loads(state["config"]), file)
    step = int(state["step"])
    if step > trainer.total:
        raise PPVAEError(f"resume: checkpoint {file} is at step {step}, past the {trainer.total} steps asked for")
    try:
        trainer.load_state_dict(state)
    except PPVAEError as exc:
        raise PPVAEError(f"resume: checkpoint {file}: {str(exc).removeprefix('load_state_dict: ')}") from None
    return state
