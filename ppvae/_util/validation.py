"""Validation at the public boundary.

Every check raises :class:`ValueError` (or a subclass) whose message names the argument, what was
expected and what came, in the style of scikit-learn's ``sklearn/utils/validation.py``.

This module loads neither torch nor NumPy when imported: the command line's parser uses its errors and argparse
types, and ``ppvae --help`` must start without them (issue 31). The checks that need them import them when called.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import math
import numbers
import os
import sys
import warnings
from typing import TYPE_CHECKING, Any, Callable, Iterable

if TYPE_CHECKING:
    import torch


class PPVAEError(ValueError):
    """The one error type ppvae raises for bad input; the CLI prints it on one line and exits 2."""


class NonFiniteError(PPVAEError, FloatingPointError):
    """Training produced a non-finite loss or gradient; the message names the step and site(s)."""


def one_line(exc: BaseException) -> str:
    """``ExceptionType: message`` on one line for an exception raised by user or Pyro code. Pyro writes
    "Error while computing log_prob at site 'x':", the cause on the next line, then a multi-line
    ``Trace Shapes:`` table; the lines before the table are joined and the table dropped."""
    text = str(exc).split("Trace Shapes:")[0]
    first = " ".join(line.strip() for line in text.splitlines() if line.strip())[:500]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def describe_value(value: Any) -> str:
    # a tensor or an array means its library is loaded already: look it up, never load it to describe a value
    torch, np = sys.modules.get("torch"), sys.modules.get("numpy")
    if torch is not None and isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if np is not None and isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``choices``; else raise naming the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise PPVAEError(f"{name}: expected one of {', '.join(map(str, choices))}; got {describe_value(value)}")
    return value


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int, checking ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise PPVAEError(f"{name}: expected an integer; got {describe_value(value)}")
    value = int(value)
    if low is not None and value < low:
        raise PPVAEError(f"{name}: expected an integer >= {low}; got {value}")
    if high is not None and value > high:
        raise PPVAEError(f"{name}: expected an integer <= {high}; got {value}")
    return value


def check_float(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, strict: bool = False
) -> float:
    """Return ``value`` as a finite float in ``[low, high]`` (``(low, high)`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise PPVAEError(f"{name}: expected a number; got {describe_value(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise PPVAEError(f"{name}: expected a finite number; got {value}")
    if low is not None and (value <= low if strict else value < low):
        raise PPVAEError(f"{name}: expected a number {'>' if strict else '>='} {low}; got {value}")
    if high is not None and (value >= high if strict else value > high):
        raise PPVAEError(f"{name}: expected a number {'<' if strict else '<='} {high}; got {value}")
    return value


def check_tensor(
    name: str,
    value: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    dtype: str | None = None,
    finite: bool = True,
    nonempty: bool = True,
    low: float | None = None,
    high: float | None = None,
    integer: bool = False,
) -> torch.Tensor:
    """Convert ``value`` to a tensor and check it.

    ``dtype`` is ``"float"`` (converted to the default float dtype unless already floating),
    ``"long"`` or ``None`` (kept). ``integer`` checks that the values are whole numbers;
    ``low``/``high`` bound the values (inclusive).
    """
    import numpy as np  # startup: loaded on the first check, not by ``ppvae --help`` (module docstring)
    import torch  # startup: as numpy above

    if isinstance(value, np.ndarray) or isinstance(value, (list, tuple)):
        try:
            value = torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError) as exc:
            raise PPVAEError(f"{name}: expected a numeric array; got {describe_value(value)} ({exc})") from None
    if not isinstance(value, torch.Tensor):
        raise PPVAEError(f"{name}: expected a tensor or array; got {describe_value(value)}")
    if value.dtype == torch.bool or value.is_complex():
        raise PPVAEError(f"{name}: expected real numbers; got {describe_value(value)}")
    if dtype == "float" and not value.is_floating_point():
        value = value.to(torch.get_default_dtype())
    elif dtype == "long":
        if value.is_floating_point():
            if not torch.isfinite(value).all() or (value != value.round()).any():
                raise PPVAEError(f"{name}: expected whole numbers; got non-integer values")
        value = value.long()
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise PPVAEError(f"{name}: expected a {want} array; got {describe_value(value)}")
    if nonempty and value.numel() == 0:
        raise PPVAEError(f"{name}: expected a non-empty array; got {describe_value(value)}")
    if finite and value.is_floating_point() and value.numel() and not torch.isfinite(value).all():
        bad = (~torch.isfinite(value)).sum().item()
        raise PPVAEError(f"{name}: expected finite values; got {bad} NaN or inf entries")
    if integer and value.is_floating_point() and value.numel() and (value != value.round()).any():
        raise PPVAEError(f"{name}: expected whole numbers; got non-integer values")
    if low is not None and value.numel() and value.min().item() < low:
        raise PPVAEError(f"{name}: expected values >= {low}; got minimum {value.min().item():g}")
    if high is not None and value.numel() and value.max().item() > high:
        raise PPVAEError(f"{name}: expected values <= {high}; got maximum {value.max().item():g}")
    return value


def renamed(**old_to_new: str) -> Callable:
    """Decorate a public function whose keyword arguments were renamed (pre-1.0: no silent aliases): passing an
    old spelling raises one line naming the new one, e.g. ``log_marginal: num_samples is now num_particles``.

    The project's vocabulary: ``num_draws`` posterior draws, ``num_particles`` importance samples per point,
    ``num_steps`` optimisation or annealing steps, ``num_leapfrog`` leapfrog steps per trajectory;
    tolerances named for what they bound (``ll_tol``, ``rel_tol``)."""
    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def checked(*args, **kwargs):
            for old in kwargs.keys() & old_to_new.keys():
                raise PPVAEError(f"{fn.__name__}: {old} is now {old_to_new[old]} (pass {old_to_new[old]}=)")
            return fn(*args, **kwargs)
        checked.renamed_arguments = dict(old_to_new)
        return checked
    return wrap


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep  # .../ppvae/


def warn_at_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue a warning located at the first frame outside the ppvae package: the user's line that called into
    ppvae, however many ppvae functions (and :func:`renamed` wrappers) lie between. A fixed ``stacklevel`` counts
    frames and points into ppvae as soon as a wrapper or a new caller adds one (Python 3.12's
    ``skip_file_prefixes``, for 3.10 and 3.11)."""
    frame, level = sys._getframe(1), 2
    while frame is not None and frame.f_code.co_filename.startswith(PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def check_options(where: str, given: Iterable[str], valid: Iterable[str], *, listed_in: str | None = None) -> None:
    """Refuse keyword names outside ``valid``: name each unknown one with its closest valid spelling
    (``difflib``) and where the valid ones are documented (``listed_in``, e.g. ``help(ppvae.fit)``)."""
    valid = list(valid)
    unknown = sorted(set(given) - set(valid))
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1)
        parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    where_doc = f"; see {listed_in}" if listed_in else ""
    raise PPVAEError(f"{where}: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(parts)}; expected one of "
                     f"{', '.join(sorted(valid))}{where_doc}")


def check_finite_tree(label: str, obj: Any) -> None:
    """Refuse NaN or inf in any floating tensor of a (nested) dict/list read from a file: a corrupted or
    diverged run, which would otherwise fail later inside a distribution or a Cholesky factorization."""
    torch = sys.modules.get("torch")  # a tensor in ``obj`` means torch is loaded; without it there is none to check
    stack = [("", obj)]
    while stack:
        key, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(value))
        elif (torch is not None and isinstance(value, torch.Tensor) and value.is_floating_point()
              and not torch.isfinite(value).all()):
            raise PPVAEError(f"{label}: '{key}' holds NaN or inf values; the file is corrupted or the run diverged")


def check_directory(path: Any, *, writing: bool) -> str:
    """A run directory's path: a ``str`` or ``os.PathLike`` naming a directory (existing when reading; absent
    or a directory when writing, never an existing file, which would be lost or half-written over)."""
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise PPVAEError(f"path: expected a run directory (str or os.PathLike); got {describe_value(path)}")
    path = os.fspath(path)
    if not path:
        raise PPVAEError("path: expected a run directory; got an empty path")
    if os.path.exists(path) and not os.path.isdir(path):
        raise PPVAEError(f"path: expected a run directory; '{path}' is an existing file"
                         + (" (nothing was written over it)" if writing else ""))
    return path


def cli_integer(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``, refused at parse time with the option named (before any work,
    and also for an option the chosen method ignores, e.g. AIS steps under ``evaluate --method is``)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}; got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


COUNT, NONNEGATIVE = cli_integer(1), cli_integer(0)  # CLI counts (steps, draws, chains); seeds, warm-up


def cli_float(low: float, high: float = math.inf, strict_low: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in ``[low, high]`` (``(low, high]`` when ``strict_low``), refused at parse
    time with the option named, like :func:`cli_integer`."""
    where = f"{'(' if strict_low else '['}{low:g}, {high:g}]" if math.isfinite(high) else \
        f"{'>' if strict_low else '>='} {low:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number {where}; got '{text}'") from None
        if not math.isfinite(value) or value < low or value > high or (strict_low and value == low):
            raise argparse.ArgumentTypeError(f"expected a finite number {where}; got {text}")
        return value

    parse.__name__ = f"number {where}"
    return parse
