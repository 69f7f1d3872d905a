"""Where a run may be written, and how one run replaces another without deleting anything ppvae did not write.

Rules (documented for users in docs/guide/runs.md):

* A run directory is marked by the file ``.ppvae-run`` (JSON: ppvae version, a run id, the names ppvae
  wrote). Directories written before the marker are recognized by a ``config.json`` with ``ppvae_version``.
* An output path is refused (one :class:`PPVAEError` line, with or without ``overwrite``) when it is empty,
  ``/``, the home directory, the current directory or one of its ancestors, a symbolic link, an existing
  file, an existing non-empty directory that is not a run directory, or a run directory holding names
  ppvae did not write there (a user's notes: they are never deleted). Length, writability of the parent
  and free space are checked before any work starts.
* Replacing a run: the new run is built in a temporary directory beside it; only when it is complete is the
  old one renamed aside, the new one renamed into place and the old one removed.
* A finished result whose final move fails is kept under a visible name (``<out>.unsaved-<pid>``) that no
  later run removes; the error message names it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid

from ppvae._util.io import atomic_write
from ppvae._util.validation import PPVAEError
from ppvae._version import __version__
from ppvae.runs.lock import LOCK_PREFIX

__all__ = ["MARKER", "check_output_file", "foreign_entries", "is_run_dir", "replace_dir", "safe_target",
           "write_marker"]

MARKER = ".ppvae-run"
CHECKPOINTS = "checkpoints"
# names that commands add to a finished run directory later (ppvae evaluate, bdmc)
LATER = {"metrics.json", "log_marginal.png", "ais_vs_is.png", "bdmc.png"}
# what a run directory written before the marker may hold
LEGACY = {"config.json", "params.pt", "samples.pt", "history.json", "metrics.json", "summary.csv", CHECKPOINTS,
          "comparison.md", "comparison.csv", "comparison.json"}
MIN_FREE = 1 << 20  # refuse to start a run on a file system with less than 1 MiB free


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _existing_ancestor(path: str) -> str:
    ancestor = os.path.dirname(path)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    return ancestor


def safe_target(out, what: str = "--out") -> str:
    """``out`` as an absolute path, refused when it is no place for a run of its own: empty, ``/``, the home
    directory, the current directory or an ancestor of it, a symbolic link, or a name too long to hold the lock
    file beside it."""
    if not isinstance(out, (str, os.PathLike)):
        raise PPVAEError(f"{what}: expected a directory path; got {type(out).__name__} {out!r}")
    text = os.fspath(out)
    if not text.strip():
        raise PPVAEError(f"{what}: expected a directory path; got an empty string (an unset variable?)")
    full = os.path.abspath(text)
    real = os.path.realpath(full)
    try:
        cwd = os.path.realpath(os.getcwd())
    except OSError:  # the current directory was removed
        cwd = None
    reason = None
    if real == os.path.sep:
        reason = "the root directory"
    elif real == os.path.realpath(os.path.expanduser("~")):
        reason = "the home directory"
    elif cwd is not None and (cwd == real or cwd.startswith(real.rstrip(os.path.sep) + os.path.sep)):
        reason = "the current directory" if cwd == real else "an ancestor of the current directory"
    if reason:
        raise PPVAEError(f"{what}: refusing '{text}' ({full}), {reason}; a run needs a directory of its own, "
                         f"e.g. {what + ' ' if what.startswith('--') else ''}runs/NAME")
    if os.path.islink(full):
        raise PPVAEError(f"{what}: {full} is a symbolic link; give the directory itself "
                         f"({os.path.realpath(full)}) or a new path")
    limit = _name_max(_existing_ancestor(full)) - len(LOCK_PREFIX)
    if len(os.path.basename(full)) > limit:
        raise PPVAEError(f"{what}: the name '{os.path.basename(full)[:40]}...' has {len(os.path.basename(full))} "
                         f"characters; expected at most {limit} (the file system's limit less the lock file's prefix)")
    return full


def read_marker(directory: str) -> dict | None:
    try:
        with open(os.path.join(directory, MARKER)) as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _legacy_run(directory: str) -> bool:
    """A run written before the marker: its ``config.json`` names a ppvae version, or it is an interrupted
    ``fit`` (nothing but ``checkpoints/`` of checkpoint files)."""
    if os.listdir(directory) == [CHECKPOINTS]:
        inside = os.path.join(directory, CHECKPOINTS)
        return os.path.isdir(inside) and all(n.startswith(("checkpoint-", ".tmp-")) for n in os.listdir(inside))
    try:
        with open(os.path.join(directory, "config.json")) as fh:
            return "ppvae_version" in json.load(fh)
    except (OSError, ValueError, TypeError):
        return os.path.isfile(os.path.join(directory, "comparison.json"))


def is_run_dir(directory: str) -> bool:
    """Whether ``directory`` was written by ppvae (its marker, or an older run's ``config.json``)."""
    return os.path.isfile(os.path.join(directory, MARKER)) or _legacy_run(directory)


def _ours(name: str) -> bool:
    return name in (MARKER, CHECKPOINTS) or name in LATER or name.startswith((".tmp-", LOCK_PREFIX))


def foreign_entries(directory: str) -> list[str]:
    """The names in a run directory that ppvae did not write there (never deleted by a replacement)."""
    marker = read_marker(directory)
    if marker is not None:
        known = set(marker.get("files") or ())
    else:
        known = set(LEGACY) | {n for n in os.listdir(directory) if n.endswith(".png")}
    return sorted(n for n in os.listdir(directory) if not (_ours(n) or n in known))


def write_marker(directory: str, run_id: str | None = None, files: list[str] | None = None) -> str:
    """Mark ``directory`` as a ppvae run (``files``: the names ppvae wrote; None: every name there now)."""
    if files is None:
        files = sorted(n for n in os.listdir(directory) if n != MARKER)
    old = read_marker(directory) or {}
    marker = {"ppvae_version": __version__, "run_id": run_id or old.get("run_id") or uuid.uuid4().hex,
              "files": sorted(files)}
    atomic_write(os.path.join(directory, MARKER), lambda fh: fh.write(json.dumps(marker)))
    return marker["run_id"]


def check_writable(directory: str, what: str, need: int | None = None) -> None:
    """Raise unless new files can be made in ``directory`` (probed) and its file system has ``need`` bytes free
    (default :data:`MIN_FREE`)."""
    need = MIN_FREE if need is None else need
    # the probe's name is known before it exists, so a Ctrl-C or SIGTERM anywhere in here still removes it
    probe = os.path.join(directory, f".ppvae-probe-{os.getpid()}-{uuid.uuid4().hex}")
    try:
        os.mkdir(probe)
    except OSError as exc:
        raise PPVAEError(f"{what}: cannot write in {directory} ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(probe)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return  # not knowable here
    if free < need:
        raise PPVAEError(f"{what}: only {free} bytes free on the file system of {directory}; expected at least "
                         f"{need}")


def check_output_file(path, what: str, suffixes: tuple[str, ...] = ()) -> str:
    """Check, before any work, that the file ``path`` can be written: a path, not a directory or a symbolic
    link, a name within the file system's limit, in a writable directory with free space. Returns it absolute."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path).strip():
        raise PPVAEError(f"{what}: expected a file path; got {path!r}")
    full = os.path.abspath(os.fspath(path))
    if suffixes and not full.endswith(suffixes):
        raise PPVAEError(f"{what}: expected a file name ending in {' or '.join(suffixes)}; got {path}")
    if os.path.isdir(full):
        raise PPVAEError(f"{what}: expected a file path; {full} is a directory")
    if os.path.islink(full):
        raise PPVAEError(f"{what}: {full} is a symbolic link; give the file itself or a new path")
    parent = os.path.dirname(full)
    if not os.path.isdir(parent):
        raise PPVAEError(f"{what}: the directory {parent} does not exist")
    limit = _name_max(parent) - 16  # atomic_write's temporary name is '.tmp-XXXXXXXX' + the name
    if len(os.path.basename(full)) > limit:
        raise PPVAEError(f"{what}: the file name has {len(os.path.basename(full))} characters; expected at most "
                         f"{limit}")
    check_writable(parent, what)
    return full


def replace_dir(new: str, out: str) -> None:
    """Put the complete directory ``new`` at ``out``: the old ``out`` (if any) is renamed aside first and
    removed only after ``new`` is in place. If the move fails, ``new`` is kept as ``<out>.unsaved-<pid>``
    (never removed by a later run) and the error names it."""
    aside = None
    try:
        if os.path.lexists(out):
            aside = tempfile.mkdtemp(prefix=f"{os.path.basename(new)}-old-", dir=os.path.dirname(out))
            os.replace(out, aside)
        os.replace(new, out)
    except OSError as exc:
        if aside is not None and not os.path.lexists(out):
            os.replace(aside, out)  # the old run back in place
            aside = None
        kept = f"{out}.unsaved-{os.getpid()}"
        try:
            os.replace(new, kept)
        except OSError:
            kept = new
        raise PPVAEError(f"--out: the finished run could not be moved to {out} ({exc.strerror or exc}); it is "
                         f"kept complete in {kept}") from None
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
