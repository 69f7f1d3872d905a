"""Callbacks (ppvae/callbacks.py): hook dispatch skips what a callback does not override; EarlyStopping
stops at the step its documented rule gives."""

import math

import pytest

import ppvae
from ppvae.models import ThreeCoin


class _AllHooks(ppvae.Callback):
    def on_fit_start(self, trainer):
        pass

    def on_step_end(self, trainer, loss):
        pass

    def on_epoch_end(self, trainer):
        pass

    def on_fit_end(self, trainer):
        pass


def test_hooks_that_are_not_overridden_are_not_called():
    from ppvae.runs.callbacks import as_callback, hooks

    class StepOnly(ppvae.Callback):
        def on_step_end(self, trainer, loss):
            pass

    cbs = [StepOnly(), _AllHooks(), as_callback(lambda trainer: None)]
    assert [h.__self__ for h in hooks(cbs, "on_step_end")] == cbs
    assert [h.__self__ for h in hooks(cbs, "on_epoch_end")] == [cbs[1]]
    assert [h.__self__ for h in hooks(cbs, "on_fit_end")] == [cbs[1]]
    with pytest.raises(ppvae.PPVAEError, match="callbacks: expected ppvae.Callback instances or functions"):
        as_callback(3)


def _plateau_step(losses, patience, tol):
    """The first step t at which the EMA of the losses has gone ``patience`` steps without a relative
    improvement of ``tol`` on its best value (the rule EarlyStopping documents), recomputed here."""
    ema, best, since = None, math.inf, 0
    for t, value in enumerate(losses, start=1):
        ema = value if ema is None else 0.95 * ema + 0.05 * value
        if ema < best - tol * abs(best if math.isfinite(best) else ema):
            best, since = ema, 0
        else:
            since += 1
        if since >= patience:
            return t
    return None


def test_early_stopping_callback_stops_at_the_documented_step(coin_tosses):
    run = dict(guide="auto_delta", steps=3000, lr=0.1, progress=False)
    by_option = ppvae.fit(ThreeCoin(), coin_tosses, patience=20, tol=1e-3, **run)
    by_callback = ppvae.fit(ThreeCoin(), coin_tosses, callbacks=[ppvae.EarlyStopping(20, tol=1e-3)], **run)
    assert by_callback.history["loss"] == by_option.history["loss"] and by_callback.history["stopped_early"]
    # without early stopping the same run continues; the stop step is the rule's, on that run's losses
    full = ppvae.fit(ThreeCoin(), coin_tosses, **{**run, "steps": by_option.history["steps"] + 5})
    assert full.history["loss"][: by_option.history["steps"]] == by_option.history["loss"]
    assert _plateau_step(full.history["loss"], 20, 1e-3) == by_option.history["steps"] < 3000
    with pytest.raises(ppvae.PPVAEError, match="patience"):
        ppvae.EarlyStopping(0)
