"""Has SVI stopped improving? A check of the loss history's last stretch against its own noise.

The rule (applied by :func:`ppvae.fit` at the end of a run unless ``check_convergence=False``;
``--no-convergence-check`` on the command line): take the last ``window`` = 20% of the losses (at
least :data:`MIN_WINDOW`; runs shorter than :data:`MIN_STEPS` are not checked), fit the
least-squares line ``loss_t = a + b t`` over them, and call the run *still falling* when the line's
decrease across the window, ``D = -b (n - 1)``, exceeds all three of

* ``3 s``: three times the residual standard deviation ``s = sqrt(RSS / (n - 2))``, the step-to-step
  noise of the loss (the drift is larger than the noise of one loss value; with n >= 50 points this is
  at least 6 se(D) for independent noise and 3.5 se(D) for AR(1) noise with r = 0.5);
* ``3 se(D)``: three standard errors of ``D`` itself, ``se(D) = (n - 1) s / sqrt(sum (t - tbar)^2)``
  inflated by ``sqrt((1 + r) / (1 - r))`` for the lag-1 autocorrelation r >= 0 of the residuals
  (successive SVI losses are correlated; the AR(1) correction of a trend's standard error, e.g.
  Santer et al. 2000, J. Geophys. Res. 105, eq. 6, with the effective sample size n (1 - r) / (1 + r));
* ``rel_tol |mean loss over the window|`` (default 0.1%): a drift too small to matter is not reported.

The remedy named is the usual one: more steps, a higher learning rate, standardized data (a scale
far from 1 slows Adam's progress on location parameters), in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Convergence", "check_convergence", "MIN_STEPS", "MIN_WINDOW"]

MIN_STEPS = 100  # fewer losses than this: no verdict (the window would be too short to tell drift from noise)
MIN_WINDOW = 50  # the window holds at least this many losses
FRACTION = 0.2  # the window is the last 20% of the run


@dataclass
class Convergence:
    """The verdict on one loss history: ``still_falling``, and the numbers it rests on."""

    still_falling: bool
    window: int  # losses in the window (0: not checked)
    decrease: float  # D, the fitted line's decrease across the window (positive: falling)
    noise_sd: float  # s, the residual standard deviation
    decrease_se: float  # se(D)
    mean_loss: float

    def message(self) -> str:
        rel = self.decrease / abs(self.mean_loss) if self.mean_loss else math.inf
        return (f"SVI may not have converged: over the last {self.window} steps the loss still fell by "
                f"{self.decrease:.4g} ({self.decrease / max(self.noise_sd, 1e-300):.1f}x its step-to-step noise sd "
                f"{self.noise_sd:.3g}; {100 * rel:.2g}% of the loss). Run more steps (--steps), raise the learning "
                "rate (--lr) or standardize the data (--standardize); silence with check_convergence=False "
                "(--no-convergence-check)")


def check_convergence(losses, *, fraction: float = FRACTION, rel_tol: float = 1e-3) -> Convergence:
    """Apply the module's rule to ``losses`` (one value per step); a non-finite loss voids the check."""
    values = np.asarray(list(losses), dtype=np.float64)
    n = max(MIN_WINDOW, int(round(fraction * len(values))))
    if len(values) < MIN_STEPS or not np.isfinite(values[-n:]).all():
        return Convergence(False, 0, 0.0, 0.0, 0.0, float(values[-1]) if len(values) else 0.0)
    y = values[-n:]
    t = np.arange(n, dtype=np.float64)
    tc = t - t.mean()
    sxx = float(tc @ tc)
    slope = float(tc @ (y - y.mean())) / sxx
    resid = y - y.mean() - slope * tc
    s = math.sqrt(float(resid @ resid) / (n - 2))
    decrease = -slope * (n - 1)
    r = float(resid[:-1] @ resid[1:]) / max(float(resid @ resid), 1e-300)
    r = min(max(r, 0.0), 0.95)
    se = (n - 1) * s / math.sqrt(sxx) * math.sqrt((1 + r) / (1 - r))
    mean = float(y.mean())
    falling = decrease > 3 * s and decrease > 3 * se and decrease > rel_tol * abs(mean)
    return Convergence(bool(falling), n, decrease, s, se, mean)
