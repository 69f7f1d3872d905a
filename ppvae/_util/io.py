"""Files on disk, the three ways every ppvae writer and reader needs them.

* :func:`atomic_write` -- write to a temporary name in the target's directory, fsync, rename: a reader
  (or a process killed mid-write) never sees a torn file, only the old one or the new one.
* :func:`check_version` -- a file written by another major.minor ppvae version is refused by name
  (patch versions share every format).
* :func:`load_tensors` -- ``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts
  only, so loading never executes code from the file; a refusal is described in words
  (:func:`describe_load_error`).
"""

from __future__ import annotations

import os
import re
import tempfile
from typing import Any, Callable

import torch

from ppvae._util.validation import PPVAEError
from ppvae._version import __version__

__all__ = ["atomic_write", "check_version", "describe_load_error", "fsync_dir", "load_tensors"]


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "w") -> None:
    """Write ``path`` through a temporary file in the same directory, fsync, then rename."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def fsync_dir(directory: str) -> None:
    """Make a rename in ``directory`` durable (the directory entry itself is flushed)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_version(found: str, where: str) -> None:
    """Files load across patch versions only: major.minor of ``found`` must equal this ppvae's."""
    if not isinstance(found, str) or found.split(".")[:2] != __version__.split(".")[:2]:
        raise PPVAEError(
            f"load: {where} was written by ppvae {found}; this is ppvae {__version__} and runs load only "
            "within the same major.minor version (refit, or load it with the version that wrote it)"
        )


def load_tensors(path: str, what: str, missing: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` onto the CPU; a missing, torn or code-carrying file is a
    :class:`PPVAEError` naming ``what`` (e.g. "checkpoint x.pt") and the reason (``missing`` is appended
    to the message for an absent file). Nothing from the file runs."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise PPVAEError(f"load: {what} is missing{missing}") from None
    except Exception as exc:  # noqa: BLE001 -- refused unpickling, torn or foreign file
        raise PPVAEError(f"load: {what} {describe_load_error(exc)}") from None


def describe_load_error(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in words (nothing from the file ran)."""
    text = str(exc)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return (f"holds Python objects ({found.group(1)}) that loading would have to execute; refused "
                "without running anything (only tensors and plain values are loaded)")
    if "Weights only load failed" in text:
        found = re.search(r"(Unsupported operand \d+|Unsupported class [\w.]+)", text)
        detail = found.group(1) if found else "not a tensors-only pickle"
        return (f"is not a tensors-only torch file (corrupted, or a pickle of Python objects: {detail}); "
                "refused without running anything")
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else "empty or cut short"
    return f"is corrupted or truncated and cannot be read ({type(exc).__name__}: {first})"
