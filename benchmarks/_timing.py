"""The side-by-side report the speed benchmarks share: ppvae and its plain-PyTorch floor, timed in interleaved
chunks in one process, summarized by medians, minima and the median of adjacent-chunk ratios (the last is the
least disturbed by drift in a shared machine's load, since each pair ran back to back)."""

from __future__ import annotations

import statistics
from collections.abc import Callable


def run_repeats(repeats: int, one_repeat: Callable[[int], tuple[list[float], list[float]]], unit: str,
                fmt: str = ".3f") -> tuple[list[float], list[float]]:
    """Call ``one_repeat(r)`` -> (ppvae times, plain times) for r < ``repeats``; print each repeat's medians."""
    ours, plain = [], []
    for r in range(repeats):
        a, b = one_repeat(r)
        ours += a
        plain += b
        print(f"repeat {r}: ppvae {statistics.median(a):{fmt}} {unit}, plain {statistics.median(b):{fmt}} {unit}, "
              f"ratio {statistics.median(x / y for x, y in zip(a, b, strict=True)):.3f}", flush=True)
    return ours, plain


def print_ratios(ours: list[float], plain: list[float], unit: str, chunk: str, fmt: str = ".3f") -> None:
    """Print both sides' median and minimum per ``unit`` and their ratio three ways."""
    m_ours, m_plain = statistics.median(ours), statistics.median(plain)
    print(f"plain PyTorch: median {m_plain:{fmt}} {unit} (min {min(plain):{fmt}})")
    print(f"ppvae.fit:     median {m_ours:{fmt}} {unit} (min {min(ours):{fmt}})")
    pair = statistics.median(x / y for x, y in zip(ours, plain, strict=True))
    print(f"ratio ppvae / plain PyTorch: {m_ours / m_plain:.3f} (medians), {min(ours) / min(plain):.3f} (minima), "
          f"{pair:.3f} (median of adjacent-{chunk} ratios)")
