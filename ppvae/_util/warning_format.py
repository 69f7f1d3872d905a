"""The one warning format of the command line: ``ppvae: warning: ...`` on one line of stderr.

A warning raised inside a third-party package (NumPy, ArviZ, PyTorch, Pyro, matplotlib, ...) keeps its source
after the prefix, ``ppvae: warning: numpy: invalid value encountered in scalar divide``, so it never reads as
ppvae's own judgement; ppvae's own warnings (and a user's model's) carry no source.
"""

from __future__ import annotations

import os
import re

__all__ = ["PREFIX", "warning_line", "warning_source"]

PREFIX = "ppvae: warning: "


def warning_source(filename: str | None) -> str | None:
    """The installed package a warning was raised in (``numpy``, ``arviz``, ...), or None for ppvae, a user's
    file, or Python itself."""
    if not filename:
        return None
    parts = re.split(r"[\\/]", os.path.normpath(filename))
    roots = [i for i, p in enumerate(parts) if p in ("site-packages", "dist-packages")]
    if not roots or roots[-1] + 1 >= len(parts):
        return None
    package = parts[roots[-1] + 1]
    package = package[:-3] if package.endswith(".py") else package
    return None if package == "ppvae" or package.startswith(("_", "ppvae-")) else package


def warning_line(message, filename: str | None = None) -> str:
    """``ppvae: warning: [source: ]message`` with the message's whitespace folded onto one line."""
    text = " ".join(str(message).split())
    source = warning_source(filename)
    return f"{PREFIX}{source}: {text}" if source else f"{PREFIX}{text}"
