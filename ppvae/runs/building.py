"""Building a run directory: checked before the work, locked for the run, built beside ``--out`` and moved into
place whole when complete (rules: :mod:`ppvae.runs.outdir`; user documentation: docs/guide/runs.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import uuid

from ppvae._util.validation import PPVAEError
from ppvae.runs.lock import HELD, DirectoryLock
from ppvae.runs.outdir import (
    CHECKPOINTS,
    MARKER,
    check_writable,
    foreign_entries,
    is_run_dir,
    read_marker,
    replace_dir,
    safe_target,
    write_marker,
)

__all__ = ["check_out", "checkpoint_dir", "remove_stale", "run_directory", "save_run"]

PREFIX = ".ppvae-"
REPLACING: dict[str, bool] = {}  # out -> whether this process's run there replaces another (for the Ctrl-C message)


def host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(parent: str) -> list[str]:
    """Remove the ``.ppvae-<host>-<pid>-*`` temporary directories in ``parent`` whose process (on this host) is
    gone (SIGKILL leaves no chance to clean); another host's (a shared file system) or a live one is never
    touched, nor a finished result kept after a failed move (``<out>.unsaved-<pid>``, a visible name)."""
    removed, here = [], host()
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        parts = name[len(PREFIX):].rsplit("-", 2) if name.startswith(PREFIX) else []
        if len(parts) != 3 or parts[0] != here or not parts[1].isdigit():
            continue  # not ours, another host's, or an older ppvae's without a pid: its owner cannot be checked
        pid = int(parts[1])
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def _check_creatable(out: str) -> None:
    """Raise unless a directory can be made at ``out`` (its nearest existing ancestor accepts one)."""
    ancestor = os.path.dirname(out)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise PPVAEError(f"--out: expected a path whose parents are directories; {ancestor} is a file ({out})")
    try:
        check_writable(ancestor, "--out")
    except PPVAEError as exc:
        raise PPVAEError(f"--out: cannot create {out}: {str(exc).removeprefix('--out: ')}") from None


def check_out(out, overwrite: bool = False, checkpoints: bool = False, resume: bool = False) -> str:
    """Check that ``out`` may receive a run (see :mod:`ppvae.runs.outdir`); with ``checkpoints`` a ``checkpoints/``
    folder may already be there (an interrupted run), which only ``resume`` continues and ``overwrite`` starts
    over. Returns ``out`` absolute."""
    out = safe_target(out, "--out")
    if not os.path.exists(out):
        _check_creatable(out)
        return out
    if not os.path.isdir(out):
        raise PPVAEError(f"--out: expected a directory path; got an existing file {out}")
    entries = [n for n in os.listdir(out) if n != MARKER and not n.startswith(".tmp-")]  # a marker being written
    if entries and not is_run_dir(out):
        raise PPVAEError(f"--out: {out} holds files and is not a ppvae run directory (no {MARKER}); ppvae never "
                         "replaces a directory it did not write, with or without --overwrite: choose a new or "
                         "empty directory")
    foreign = foreign_entries(out) if entries else []
    if foreign and overwrite and not resume:
        raise PPVAEError(f"--out: {out} holds names ppvae did not write there ({', '.join(foreign[:5])}); "
                         "--overwrite would delete them: move them out or choose another directory")
    others = [n for n in entries if not (checkpoints and n == CHECKPOINTS)]
    if others and not overwrite:
        raise PPVAEError(f"--out: expected a new or empty directory; {out} already has files (pass --overwrite)")
    stale = os.path.join(out, CHECKPOINTS)
    if checkpoints and not resume and os.path.isdir(stale) and os.listdir(stale) and not overwrite:
        raise PPVAEError(f"--out: {stale} holds checkpoints of an earlier run; pass --resume {out} to "
                         "continue it or --overwrite to start over")
    check_writable(os.path.dirname(out), "--out")
    return out


def _replacing(out: str, resume: bool) -> bool:
    """Whether a new run replaces what is at ``out`` (then its checkpoints go into the temporary directory, so the
    old run and its checkpoints stay whole until the new run is complete)."""
    return not resume and os.path.isdir(out) and any(n != MARKER for n in os.listdir(out))


def checkpoint_dir(out: str, tmp: str, resume: bool = False) -> str:
    """Where a ``fit`` in :func:`run_directory` writes checkpoints: ``out/checkpoints`` (kept for ``--resume``
    if the run is killed), or, when the run replaces another, ``tmp/checkpoints``."""
    out = os.path.abspath(out)
    return os.path.join(tmp if _replacing(out, resume) else out, CHECKPOINTS)


@contextlib.contextmanager
def run_directory(out, overwrite: bool = False, checkpoints: bool = False, resume: bool = False):
    """Yield a temporary directory ``.ppvae-<host>-<pid>-<random>`` beside ``out`` while holding ``out``'s lock;
    on success mark it and move it to ``out`` whole (an old run there is removed only after that). With
    ``checkpoints`` on a new ``out``, ``out`` is made now (marked) and ``out/checkpoints/`` written during the
    run (a killed run leaves it for ``--resume``), then moved into the finished directory."""
    safe_target(out, "--out")
    with DirectoryLock(out, "--out"):
        out = check_out(out, overwrite, checkpoints, resume)  # after the lock: no other writer changes it now
        made, replacing = checkpoints and not os.path.exists(out), _replacing(out, resume)
        REPLACING[out] = replacing
        if checkpoints and not replacing:
            os.makedirs(out, exist_ok=True)
            if read_marker(out) is None:
                write_marker(out, files=[])
        parent = os.path.dirname(out)
        try:
            remove_stale(parent)
            tmp = tempfile.mkdtemp(prefix=f"{PREFIX}{host()}-{os.getpid()}-", dir=parent)
        except OSError as exc:
            raise PPVAEError(f"--out: cannot create a directory beside {out} ({exc.strerror or exc})") from None
        HELD.add(tmp)  # private to this process: no lock needed inside it
        try:
            yield tmp
            inside = os.path.join(out, CHECKPOINTS)
            if checkpoints and not replacing and os.path.isdir(inside):
                os.replace(inside, os.path.join(tmp, CHECKPOINTS))
            write_marker(tmp, (read_marker(tmp) or {}).get("run_id"))  # every name in it is ppvae's
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            _remove_if_unused(out, made)
            raise
        finally:
            HELD.discard(tmp)
        replace_dir(tmp, out)


def _remove_if_unused(out: str, made: bool) -> None:
    """Remove ``out`` made at the start of a failed run when it holds no checkpoint (only the marker)."""
    if not made or not os.path.isdir(out):
        return
    ckpt = os.path.join(out, CHECKPOINTS)
    if os.path.isdir(ckpt) and not os.listdir(ckpt):
        os.rmdir(ckpt)
    if sorted(os.listdir(out)) == [MARKER]:
        os.unlink(os.path.join(out, MARKER))
        os.rmdir(out)


def save_run(result, path, write, overwrite: bool = False, what: str = "save") -> str:
    """``write(directory)`` a result's files as the run directory ``path`` (``Result.save``).

    A new path or an empty directory receives it directly; a directory holding the same run (the marker's run
    id is this result's) is updated in place; another ppvae run is replaced whole only with ``overwrite``
    (built beside it, then swapped in); a directory ppvae did not write is refused. Returns ``path``."""
    path = safe_target(path, what)
    run_id = result.__dict__.setdefault("_run_id", uuid.uuid4().hex)
    if os.path.exists(path) and not os.path.isdir(path):
        raise PPVAEError(f"{what}: expected a directory path; {path} is an existing file")
    if not os.path.isdir(path) or not [n for n in os.listdir(path) if n != MARKER]:
        return _write_new(path, run_id, write, what)
    marker = read_marker(path)
    if marker is not None and marker.get("run_id") == run_id:
        write(path)
        write_marker(path, run_id)
        return path
    if not is_run_dir(path):
        raise PPVAEError(f"{what}: {path} holds files and is not a ppvae run directory (no {MARKER}); ppvae never "
                         "replaces a directory it did not write: choose a new or empty directory")
    if not overwrite:
        raise PPVAEError(f"{what}: {path} holds another ppvae run; pass overwrite=True to replace it whole, or "
                         "choose a new directory")
    foreign = foreign_entries(path)
    if foreign:
        raise PPVAEError(f"{what}: {path} holds names ppvae did not write there ({', '.join(foreign[:5])}); "
                         "overwrite would delete them: move them out or choose another directory")
    return _write_new(path, run_id, write, what)


def _write_new(path: str, run_id: str, write, what: str) -> str:
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise PPVAEError(f"{what}: cannot create {parent} ({exc.strerror or exc})") from None
    with DirectoryLock(path, what):
        try:
            tmp = tempfile.mkdtemp(prefix=f"{PREFIX}{host()}-{os.getpid()}-", dir=parent)
        except OSError as exc:
            raise PPVAEError(f"{what}: cannot write beside {path} ({exc.strerror or exc})") from None
        try:
            write(tmp)
            write_marker(tmp, run_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        replace_dir(tmp, path)
    return path
