"""Callbacks: code that runs inside :class:`ppvae.Trainer`'s loop at named points.

Subclass :class:`Callback` and override any of its hooks; the trainer calls only the hooks a
callback overrides (looked up once per fit), so a hook left alone costs nothing per step. Every hook
receives the :class:`~ppvae.Trainer`, whose public attributes (``step``, ``total``, ``losses``,
``model``, ``guide``, ``model_fn``, ``data``, ``cfg``, ...) it may read; a hook asks the loop to end
by setting ``trainer.should_stop = True`` (the loop ends after the current step's hooks).

Order within one step: every callback's :meth:`~Callback.on_step_end`, then, if the step closed an
epoch, every :meth:`~Callback.on_epoch_end`; callbacks run in the order given to the trainer, the
user's before the built-in early stopping and checkpointing. A plain function ``f(trainer)`` is
accepted wherever a callback is and runs as an ``on_step_end`` hook.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from ppvae._util.progress import Progress
from ppvae._util.validation import PPVAEError, check_float, check_int

__all__ = ["Callback", "EarlyStopping", "ProgressDisplay", "as_callback", "hooks"]

HOOKS = ("on_fit_start", "on_step_end", "on_epoch_end", "on_fit_end")


class Callback:
    """Base class of trainer callbacks; every hook does nothing unless overridden.

    * ``on_fit_start(trainer)``: once, before the first step of :meth:`Trainer.fit` (after a resume has
      loaded its state, so ``trainer.step`` and ``trainer.losses`` are the resumed run's).
    * ``on_step_end(trainer, loss)``: after every optimizer step; ``loss`` is that step's loss (the
      negative ELBO estimate, also ``trainer.losses[-1]``) and ``trainer.step`` counts the step.
    * ``on_epoch_end(trainer)``: after every step that completes an epoch (``trainer.step`` a multiple
      of ``trainer.steps_per_epoch``; every step for full-batch training).
    * ``on_fit_end(trainer)``: once, when the loop ends normally (all steps done, or a callback set
      ``trainer.should_stop``); not when a step raises.
    """

    def on_fit_start(self, trainer) -> None:
        """Before the first step of this fit."""

    def on_step_end(self, trainer, loss: float) -> None:
        """After each optimizer step, with its loss."""

    def on_epoch_end(self, trainer) -> None:
        """After the step that completes an epoch."""

    def on_fit_end(self, trainer) -> None:
        """After the last step."""


class _StepFunction(Callback):
    """A plain function ``f(trainer)`` run as an ``on_step_end`` hook."""

    def __init__(self, fn: Callable[[Any], None]):
        self.fn = fn

    def on_step_end(self, trainer, loss: float) -> None:
        self.fn(trainer)


def as_callback(cb: Any) -> Callback:
    """``cb`` itself if it is a :class:`Callback`; a plain callable becomes its ``on_step_end`` hook."""
    if isinstance(cb, Callback):
        return cb
    if callable(cb):
        return _StepFunction(cb)
    raise PPVAEError(f"callbacks: expected ppvae.Callback instances or functions f(trainer); got {cb!r:.60}")


def hooks(callbacks: list[Callback], name: str) -> list[Callable]:
    """The bound ``name`` hooks of the callbacks that override it (the base class's no-ops skipped)."""
    base = getattr(Callback, name)
    return [getattr(cb, name) for cb in callbacks if getattr(type(cb), name, base) is not base]


class EarlyStopping(Callback):
    """Stop when the loss has plateaued: the exponential moving average m_t = 0.95 m_{t-1} + 0.05 l_t
    (m_1 = l_1) of the step losses l_t has not improved on its best value b by more than ``tol * |b|``
    for ``patience`` consecutive steps. ``fit(patience=..., tol=...)`` adds one.

    Its state is a function of ``trainer.losses`` alone: :meth:`on_fit_start` replays the history of a
    resumed run, so a resumed run stops at the same step as an uninterrupted one.
    """

    def __init__(self, patience: int, tol: float = 1e-4):
        self.patience = check_int("patience", patience, low=1)
        self.tol = check_float("tol", tol, low=0.0)
        self.ema, self.best, self.since_best = None, math.inf, 0

    def _update(self, value: float) -> None:
        ema = value if self.ema is None else 0.95 * self.ema + 0.05 * value
        best = self.best
        if ema < best - self.tol * abs(best if math.isfinite(best) else ema):
            self.best, self.since_best = ema, 0
        else:
            self.since_best += 1
        self.ema = ema

    def on_fit_start(self, trainer) -> None:
        self.ema, self.best, self.since_best = None, math.inf, 0
        for value in trainer.losses:
            self._update(value)
        if self.since_best >= self.patience:
            trainer.should_stop = True

    def on_step_end(self, trainer, loss: float) -> None:
        self._update(loss)
        if self.since_best >= self.patience:
            trainer.should_stop = True


class ProgressDisplay(Callback):
    """The shared display (ppvae._util.progress) of a fit, with the running loss (an exponential moving average)."""

    def __init__(self, total: int, enabled: bool | None):
        self.bar, self.ema = Progress("fit", total, unit="step", enabled=enabled), None

    def on_step_end(self, trainer, loss: float) -> None:
        self.ema = loss if self.ema is None else 0.95 * self.ema + 0.05 * loss
        self.bar.update(1)
        if trainer.step % 10 == 0:
            self.bar.set_postfix(loss=f"{self.ema:.4g}")

    def close(self) -> None:
        self.bar.close()
