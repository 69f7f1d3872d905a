"""One writer per directory: an exclusive advisory lock (``fcntl.flock``) held while a run writes a directory.

The lock file lives beside the directory it guards, ``<parent>/.ppvae-lock.<name>``, so it survives the
directory being replaced by a finished run (a rename) and is there before the directory exists. The holder
writes its pid and host into it; a second process asking for the lock is refused at once with a
:class:`PPVAEError` naming that pid (``ppvae: error: ...``, exit 2 on the command line). ``flock`` locks
belong to the open file: the kernel drops them when the holder dies, however it dies (SIGKILL included),
so the lock of a dead holder is simply taken over by the next run. The holder removes the file when it
releases the lock; a new holder checks that the file it locked is still the one at the path (a releasing
holder may have unlinked it meanwhile) and retries otherwise.

On platforms without ``fcntl`` (Windows) the lock is a no-op.
"""

from __future__ import annotations

import os
import socket

from ppvae._util.validation import PPVAEError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer is then the user's to ensure
    fcntl = None

__all__ = ["DirectoryLock", "lock_path"]

LOCK_PREFIX = ".ppvae-lock."
HELD: set[str] = set()  # directories this process holds (or owns privately): a lock inside them is redundant


def lock_path(directory: str) -> str:
    """Where the lock of ``directory`` lives: ``<parent>/.ppvae-lock.<name>``."""
    directory = os.path.abspath(directory)
    return os.path.join(os.path.dirname(directory), LOCK_PREFIX + os.path.basename(directory))


def _holder(path: str) -> str:
    try:
        with open(path) as fh:
            text = fh.read().split()
    except OSError:
        return "pid unknown"
    return f"pid {text[0]}" + (f" on {text[1]}" if len(text) > 1 else "") if text else "pid unknown"


class DirectoryLock:
    """``with DirectoryLock(path, what):`` -- hold the exclusive lock of ``path`` for the block.

    ``what`` names the argument in the refusal (``--out``, ``checkpoint_dir``, ``save``)."""

    def __init__(self, directory: str, what: str = "--out"):
        self.directory, self.what = os.path.abspath(directory), what
        self.path = lock_path(self.directory)
        self.fd: int | None = None

    def acquire(self) -> "DirectoryLock":
        if fcntl is None or self.fd is not None or os.path.dirname(self.directory) in HELD:
            return self  # no locks here, already held, or inside a directory this process holds
        for _ in range(100):  # a retry only when a releasing holder unlinked the file between open and flock
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise PPVAEError(f"{self.what}: cannot create the lock file {self.path} "
                                 f"({exc.strerror or exc})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise PPVAEError(f"{self.what}: {self.directory} is being written by another ppvae process "
                                 f"({_holder(self.path)}, lock {self.path}); wait for it to finish or choose "
                                 "another directory") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                try:  # who holds it, for the refusal's message; a full disk only loses the pid
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
                except OSError:
                    pass
                self.fd = fd
                HELD.add(self.directory)
                return self
            os.close(fd)
        raise PPVAEError(f"{self.what}: could not take the lock {self.path}")

    def release(self) -> None:
        """Remove the lock file (still holding the lock, so no other holder's file is removed), then unlock."""
        if self.fd is None:
            return
        HELD.discard(self.directory)
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "DirectoryLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):  # a lock object dropped without release (an exception path) still frees the lock
        try:
            self.release()
        except Exception:  # noqa: BLE001 -- interpreter shutdown
            pass
