"""Checkpoints of an SVI run: written atomically every N steps, resumed exactly.

A checkpoint is one file ``checkpoint-<step>.pt`` in the checkpoint directory holding only tensors,
numbers, strings, lists and dicts, so it is read back with ``torch.load(weights_only=True)`` and
loading never executes code from the file. It records everything the next step depends on:

* ``params``: every fitted tensor, in the trainer's parameter order (model and guide);
* ``optimizer`` / ``scheduler``: the state dicts of the one Adam optimizer and its lr schedule;
* ``rng``: the torch (and CUDA), numpy and Python RNG states;
* ``step``, ``losses`` (the loss history), ``time_s`` and ``config`` (JSON text: ppvae version,
  model name and hyperparameters, :class:`~ppvae._config.TrainConfig`).

The minibatch of step ``t`` is a function of (seed, t) alone (:func:`ppvae._config.batch_at`), so
parameters + optimizer state + RNG states + step determine the rest of the run: on CPU a resumed
run's losses and final parameters equal an uninterrupted run's bit for bit.

Each file is written to a temporary name in the same directory, fsynced and renamed
(:func:`ppvae._io.atomic_write`); the previous checkpoint is deleted only after the new one is in
place, so a process killed at any instant leaves the last complete checkpoint readable and never a
torn one. With data-parallel training only rank 0 writes.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import asdict

import numpy as np
import torch

from . import __version__
from ._io import atomic_write, check_version, fsync_dir, load_tensors
from ._validation import PPVAEError, check_int
from .distributed import attach

__all__ = ["Checkpointer", "latest_checkpoint", "load_checkpoint", "prepare_run", "resume_trainer",
           "save_checkpoint"]

FORMAT = "ppvae-checkpoint-1"
_NAME = re.compile(r"^checkpoint-(\d+)\.pt$")
_KEYS = ("format", "ppvae_version", "step", "params", "optimizer", "scheduler", "rng", "losses", "config")
# TrainConfig fields a resumed run may change: where/how often to checkpoint, early stopping, device.
_FREE = {"steps", "epochs", "checkpoint_dir", "checkpoint_every", "device", "patience", "tol"}


# -- RNG states as plain tensors and lists (weights_only-loadable) ---------------------------------------
def _rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- writing --------------------------------------------------------------------------------------
def _config_text(trainer) -> str:
    model = trainer.model
    return json.dumps({
        "ppvae_version": __version__,
        "model": model.name,
        "hparams": model.hparams,
        "train": asdict(trainer.cfg),
    }, default=str)


def save_checkpoint(trainer, directory: str, keep: int = 2, time_s: float = 0.0) -> str:
    """Write ``directory/checkpoint-<step>.pt`` atomically, then delete all but the ``keep`` newest."""
    if trainer.optim is None:
        raise PPVAEError("checkpoint: nothing to save before the first step")
    os.makedirs(directory, exist_ok=True)
    state = {
        "format": FORMAT,
        "ppvae_version": __version__,
        "step": trainer.step,
        "params": [p.detach().cpu().clone() for p in trainer.params],
        "optimizer": trainer.optim.state_dict(),
        "scheduler": None if trainer.scheduler is None else trainer.scheduler.state_dict(),
        "rng": _rng_state(),
        "losses": list(trainer.losses),
        "time_s": float(time_s),
        "config": _config_text(trainer),
    }
    path = os.path.join(directory, f"checkpoint-{trainer.step:09d}.pt")
    atomic_write(path, lambda fh: torch.save(state, fh), mode="wb")
    fsync_dir(directory)
    for old in _checkpoints(directory)[:-keep]:
        os.unlink(old)
    return path


class Checkpointer:
    """A ``fit`` callback: every ``every`` steps (and by :meth:`final` at the end) write a checkpoint.

    Per step it costs one integer modulo; ``enabled=False`` (ranks other than 0) writes nothing.
    """

    def __init__(self, directory: str | None, every: int | None, keep: int = 2, enabled: bool = True,
                 time_offset: float = 0.0):
        self.directory, self.keep = directory, keep
        self.enabled = enabled and directory is not None
        self.every = None if every is None else check_int("checkpoint_every", every, low=1)
        self.time_offset = time_offset  # seconds spent before a resume
        self.started = time.perf_counter()
        self.last_step = -1

    def __call__(self, trainer) -> None:
        if self.every is not None and trainer.step % self.every == 0:
            self.save(trainer)

    def save(self, trainer) -> None:
        if self.enabled and trainer.step != self.last_step and trainer.optim is not None:
            elapsed = self.time_offset + time.perf_counter() - self.started
            save_checkpoint(trainer, self.directory, self.keep, elapsed)
            self.last_step = trainer.step

    def finish(self, trainer, elapsed: float) -> float:
        """Write the final checkpoint; return the run's total time including time before a resume."""
        self.save(trainer)
        return self.time_offset + elapsed


def prepare_run(trainer, resume: str | None = None, distributed: bool = False) -> Checkpointer:
    """Set ``trainer`` up for ``fit``: data-parallel hooks (:func:`ppvae.distributed.attach`), the state
    of the newest checkpoint at ``resume``, and the :class:`Checkpointer` callback (rank 0 only)."""
    rank = 0
    if distributed:
        rank = attach(trainer)
    offset = 0.0
    if resume is not None:
        offset = float(resume_trainer(trainer, resume).get("time_s", 0.0))
    cfg = trainer.cfg
    return Checkpointer(cfg.checkpoint_dir, cfg.checkpoint_every, enabled=rank == 0, time_offset=offset)


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
    """Load the newest checkpoint at ``path`` into ``trainer``: parameters, optimizer and scheduler
    state, RNG states, step and loss history. Returns the checkpoint."""
    file = latest_checkpoint(path)
    state = load_checkpoint(file)
    config = json.loads(state["config"])
    _check_compatible(trainer, config, file)
    step = int(state["step"])
    if step > trainer.total:
        raise PPVAEError(f"resume: checkpoint {file} is at step {step}, past the {trainer.total} steps asked for")
    trainer.initialize()
    saved = state["params"]
    if len(saved) != len(trainer.params) or any(s.shape != p.shape for s, p in zip(saved, trainer.params, strict=True)):
        shapes = [tuple(s.shape) for s in saved], [tuple(p.shape) for p in trainer.params]
        raise PPVAEError(f"resume: checkpoint {file} holds parameters of shapes {shapes[0]}; the run has {shapes[1]}")
    with torch.no_grad():
        for p, s in zip(trainer.params, saved, strict=True):
            p.copy_(s.to(p.device))
    trainer.optim.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.step = step
    trainer.losses = [float(v) for v in state["losses"]]
    _set_rng_state(state["rng"])
    return state
