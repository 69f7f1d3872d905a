"""Run directories of the command line: built in a temporary directory beside ``--out``, renamed into
place on success, removed on failure, SIGINT or SIGTERM; stale ones of killed runs are removed later.

A temporary directory is named ``.ppvae-<host>-<pid>-<random>``, so a later run in the same parent can
tell that the process which made it is gone (SIGKILL leaves no chance to clean) and remove it; one
whose process is alive, or which was made on another host (a shared file system), is never touched.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import tempfile

from ._validation import PPVAEError
from .checkpoint import _checkpoints

CHECKPOINTS = "checkpoints"  # the folder of a run directory written during `fit` (ppvae/checkpoint.py)
PREFIX = ".ppvae-"


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and temporary-directory cleanup run."""


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def sigterm_unwinds():
    """Within the block SIGTERM raises :class:`Terminated` (main thread only; elsewhere nothing changes);
    the previous handler comes back after it."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _host() -> str:
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
    """Remove the ``.ppvae-<host>-<pid>-*`` directories in ``parent`` whose process (on this host) is gone."""
    removed, host = [], _host()
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(PREFIX):
            continue
        parts = name[len(PREFIX):].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue  # another host's, or an older ppvae's without a pid: its owner cannot be checked
        pid = int(parts[1])
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
            removed.append(name)
    return removed


def _check_creatable(out: str) -> None:
    """Raise unless a directory can be made at ``out``: its nearest existing ancestor must be a directory
    that accepts new entries (probed with a temporary directory, removed at once)."""
    ancestor = os.path.dirname(out)
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise PPVAEError(f"--out: expected a path whose parents are directories; {ancestor} is a file ({out})")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ppvae-probe-", dir=ancestor))
    except OSError as exc:
        raise PPVAEError(f"--out: cannot create {out}: {ancestor} does not accept new directories "
                         f"({exc.strerror or exc})") from None


def check_out(out: str, overwrite: bool = False, checkpoints: bool = False, resume: bool = False) -> str:
    """Check that ``out`` may receive a run; with ``checkpoints`` a ``checkpoints/`` folder may already be
    there (an interrupted run), which only ``resume`` continues and ``overwrite`` starts over."""
    out = os.path.abspath(out)
    if os.path.exists(out):
        if not os.path.isdir(out):
            raise PPVAEError(f"--out: expected a directory path; got an existing file {out}")
        others = [n for n in os.listdir(out) if not (checkpoints and n == CHECKPOINTS)]
        if others and not overwrite:
            raise PPVAEError(f"--out: expected a new or empty directory; {out} already has files (pass --overwrite)")
        stale = os.path.join(out, CHECKPOINTS)
        if checkpoints and not resume and os.path.isdir(stale) and os.listdir(stale) and not overwrite:
            raise PPVAEError(f"--out: {stale} holds checkpoints of an earlier run; pass --resume {out} to "
                             "continue it or --overwrite to start over")
    else:
        _check_creatable(out)
    return out


@contextlib.contextmanager
def run_directory(out: str, overwrite: bool = False, checkpoints: bool = False, resume: bool = False):
    """Yield a temporary directory; on success move it to ``out`` (which must be new or empty).

    With ``checkpoints``, ``out/checkpoints/`` is written directly during the run (so a killed run
    leaves it for ``--resume``) and is moved into the finished run directory at the end; a failed run
    leaves only that folder."""
    out = check_out(out, overwrite, checkpoints, resume)
    if checkpoints and overwrite and not resume:
        shutil.rmtree(os.path.join(out, CHECKPOINTS), ignore_errors=True)
    parent = os.path.dirname(out)
    try:
        os.makedirs(parent, exist_ok=True)
        remove_stale(parent)
        tmp = tempfile.mkdtemp(prefix=f"{PREFIX}{_host()}-{os.getpid()}-", dir=parent)
    except OSError as exc:
        raise PPVAEError(f"--out: cannot create a directory beside {out} ({exc.strerror or exc})") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if checkpoints and os.path.isdir(os.path.join(out, CHECKPOINTS)):
        os.replace(os.path.join(out, CHECKPOINTS), os.path.join(tmp, CHECKPOINTS))
    if os.path.exists(out):
        shutil.rmtree(out)
    os.replace(tmp, out)


def interrupted_message(argv: list[str], args, elapsed: float, terminated: bool = False) -> str:
    """What an interrupted command kept: for ``fit`` with checkpoints, their folder, the newest step and
    the exact command that resumes; otherwise that nothing was written (the temporary directory is gone)."""
    head = f"ppvae: {'terminated' if terminated else 'interrupted'} after {elapsed:.1f} s"
    out = getattr(args, "out", None)
    if getattr(args, "command", None) != "fit" or not out:
        return f"{head}; nothing was written"

    found = _checkpoints(os.path.join(os.path.abspath(out), CHECKPOINTS))
    if not found:
        return f"{head}; nothing was written"
    rest, skip = [], False
    for item in argv:  # drop an earlier --resume so the command is the run's own plus one --resume
        if skip:
            skip = False
        elif item == "--resume":
            skip = True
        elif not item.startswith("--resume="):
            rest.append(item)
    command = shlex.join(["ppvae", *rest, "--resume", out])
    return (f"{head}; kept {len(found)} checkpoint(s) in {os.path.dirname(found[-1])} (newest "
            f"{os.path.basename(found[-1])}); resume with: {command}")
