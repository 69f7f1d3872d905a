"""The one progress display every long ppvae loop uses (SVI steps, MCMC chains, EM restarts, parallel tasks).

On a terminal it is a tqdm bar per part (one per MCMC chain); anywhere else -- a job runner, a pipe,
a log file -- it is a plain line on stderr every ``interval`` seconds (and one when the work ends):

    mcmc: 37% (1480/4000 it), 121 it/s, ETA 21 s; chains 40% 35% 36% 37%

so a long run under a job runner is never silent. ``enabled``: None (the default everywhere) picks
the bar or the lines from ``sys.stderr.isatty()``; False shows nothing; True forces the display.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress", "LINE_INTERVAL_S"]

LINE_INTERVAL_S = 30.0  # often enough to show a run is alive, rare enough to keep a log readable


def _seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 120:
        return f"{s:.0f} s"
    return f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


class Progress:
    """Counts done out of ``totals`` (one entry per part: a chain, a task) and shows it.

    ``update(n, part=0)`` adds ``n`` done units to ``part``; ``set_postfix(**values)`` adds e.g. the
    running loss to the display; ``close()`` ends it (also as a context manager).
    """

    def __init__(self, desc: str, totals: list[int] | int, *, unit: str = "it", enabled: bool | None = None,
                 part_name: str = "part", interval: float = LINE_INTERVAL_S, stream=None):
        self.desc, self.unit, self.part_name, self.interval = desc, unit, part_name, interval
        self.totals = [int(totals)] if isinstance(totals, int) else [int(t) for t in totals]
        self.done = [0] * len(self.totals)
        self.stream = sys.stderr if stream is None else stream
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.mode = "off" if enabled is False else ("bar" if tty else "lines")
        self.postfix: dict = {}
        self._start = self._last = time.perf_counter()
        self._printed = False
        self._bars = []
        if self.mode == "bar":
            from tqdm.auto import tqdm  # heavy-ish: only when a progress bar is shown

            multi = len(self.totals) > 1
            self._bars = [tqdm(total=t, desc=f"{desc} {part_name} {i + 1}" if multi else desc, unit=unit,
                               position=i, leave=False, dynamic_ncols=True, file=self.stream)
                          for i, t in enumerate(self.totals)]

    def update(self, n: int = 1, part: int = 0) -> None:
        self.done[part] += n
        if self.mode == "bar":
            self._bars[part].update(n)
        elif self.mode == "lines" and time.perf_counter() - self._last >= self.interval:
            self._line()

    def set_postfix(self, **values) -> None:
        self.postfix.update(values)
        if self.mode == "bar":
            self._bars[0].set_postfix(**values)

    def line(self) -> str:
        """The plain progress line: percent, count, rate, ETA (and each part's percent when several)."""
        done, total = sum(self.done), max(sum(self.totals), 1)
        elapsed = time.perf_counter() - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else float("inf")
        text = (f"{self.desc}: {100 * done / total:.0f}% ({done}/{total} {self.unit}), {rate:.3g} {self.unit}/s, "
                f"ETA {_seconds(eta) if rate > 0 else '?'}")
        if len(self.totals) > 1:
            text += f"; {self.part_name}s " + " ".join(f"{100 * d / max(t, 1):.0f}%"
                                                      for d, t in zip(self.done, self.totals, strict=True))
        if self.postfix:
            text += "; " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        return text

    def _line(self) -> None:
        self._last = time.perf_counter()
        self._printed = True
        print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.mode == "bar":
            for bar in self._bars:
                bar.close()
            self._bars = []
        elif self.mode == "lines" and self._printed:  # the run was long enough to be reported: say it ended
            self._line()
        self.mode = "off"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
