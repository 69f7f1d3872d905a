"""Worker processes that never outlive their parent, and that run from any caller (a script without a main
guard, ``python -c``, ``python -`` from stdin, IPython/Jupyter).

* :func:`die_with_parent` -- Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``): the forkserver
  (parent: the main process) and each worker (parent: the forkserver) are killed by the kernel when their parent
  ends, by any signal including SIGKILL, so nothing runs on or holds the caller's stdout. Elsewhere a no-op.
* :func:`worker_plan` -- how tasks can reach workers. ``forkserver`` and ``spawn`` re-import the caller's
  ``__main__`` in each worker: harmless under ``if __name__ == "__main__":``, but an unguarded script re-runs
  itself there, and ``python -`` has no file to re-import (``FileNotFoundError: '<stdin>'``). So workers start
  without it (:func:`main_hidden`) whenever the tasks need nothing defined in ``__main__``; when they do, a
  worker re-imports it only when the call sits under the guard of a real script, and otherwise (a model class
  defined in a notebook or an unguarded script) the tasks run in this process, with one warning.
"""

from __future__ import annotations

import ast
import contextlib
import ctypes
import io
import os
import pickletools
import signal
import sys
import threading
import time

__all__ = ["Terminated", "die_with_parent", "forget_handled_interrupt", "main_hidden", "raise_if_swallowed",
           "signals_deferred", "signals_unwind", "watch_process", "worker_plan"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Ask the kernel to SIGKILL this process when its parent (thread) ends; if the parent ``parent`` (pid, by
    default the current one) is already gone, end now. Linux only; elsewhere nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid() if parent is None else parent
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # no libc prctl: the pipes still end the forkserver when the parent goes
        return
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def watch_process(pid: int, every_s: float = 0.5) -> None:
    """End this process (``os._exit``) as soon as the process ``pid`` is gone: a daemon thread polls it. A worker
    watches the main process this way too, for the moment before its parent-death signal is armed (a worker
    still importing when the main process is killed is reparented before it can arm it) and where there is none."""
    def watch() -> None:
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(every_s)

    threading.Thread(target=watch, name="ppvae-parent-watch", daemon=True).start()


def _refers_to_main(blob: bytes) -> bool:
    """Whether unpickling ``blob`` (one pickle, or several written one after another) needs a name from ``__main__``
    (a class or function defined there). ``STACK_GLOBAL`` takes the module's name from the stack, where it may have
    come from the memo (a name used before)."""
    stream = io.BytesIO(blob)
    while stream.tell() < len(blob):  # genops stops at each pickle's STOP
        memo: dict = {}
        pushed: list = []  # the strings (or None) the last operations put on the stack
        for op, arg, _ in pickletools.genops(stream):
            if op.name in ("GLOBAL", "INST") and str(arg).startswith("__main__ "):
                return True
            if op.name == "STACK_GLOBAL" and len(pushed) >= 2 and pushed[-2] == "__main__":
                return True
            if op.name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = pushed[-1] if pushed else None
            elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(arg))
            else:
                pushed.append(arg if isinstance(arg, str) else None)
    return False


def _main_source() -> str | None:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(spec, "origin", None) if spec is not None else getattr(main, "__file__", None)
    return path if isinstance(path, str) and path.endswith(".py") and os.path.isfile(path) else None


def _under_main_guard(path: str) -> bool:
    """Whether the running top level of ``__main__`` is inside ``if __name__ == "__main__":`` (so a worker that
    re-imports the script does not run this call again)."""
    main = sys.modules.get("__main__")
    frame, line = sys._getframe(), None
    while frame is not None:
        if frame.f_globals is getattr(main, "__dict__", None) and frame.f_code.co_name == "<module>":
            line = frame.f_lineno
        frame = frame.f_back
    if line is None:
        return True  # not called from the main module's top level (an atexit hook, a thread's function)
    try:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(
                node.test)
    return False


def worker_plan(blob: bytes) -> str:
    """How the tasks pickled in ``blob`` run: ``"workers"`` (re-importing ``__main__`` is safe),
    ``"hide_main"`` (workers start without ``__main__``), or ``"here"`` (they need ``__main__``, which no worker
    can have: run in this process)."""
    if not _refers_to_main(blob):
        return "hide_main"  # nothing to re-import: a worker then also starts sooner
    source = _main_source()
    return "workers" if source is not None and _under_main_guard(source) else "here"


@contextlib.contextmanager
def main_hidden(hide: bool = True):
    """While workers are started: ``__main__`` shows neither a file nor a module spec, so a worker does not
    re-import it (see the module docstring). Restored afterwards."""
    main = sys.modules.get("__main__")
    if not hide or main is None:
        yield
        return
    missing = object()
    saved = {k: main.__dict__.get(k, missing) for k in ("__file__", "__spec__")}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is missing:
                main.__dict__.pop(key, None)
            else:
                main.__dict__[key] = value


# -- signals: SIGINT and SIGTERM unwind the main thread, once, whatever a library does with the exception ----------
class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that ``finally`` blocks and temporary-directory cleanup run."""


_swallowable: list[int] = []  # the signal whose exception was raised in the block of signals_unwind, if any


def _raise_for(signum, frame):
    _swallowable[:] = [signum]
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def signals_unwind():
    """Within the block SIGTERM raises :class:`Terminated` and Ctrl-C (SIGINT, unless ignored) ``KeyboardInterrupt``
    in the main thread; the previous handlers come back after. An ignored SIGINT (a background job's) stays ignored.

    Python runs a signal handler at the next bytecode of the main thread, whatever it is doing, and a few C paths
    discard whatever exception a Python callback raises (``hasattr`` on an object with a Python ``__getattr__``,
    finalizers, some library callbacks). A signal that lands there would be lost and the command would run on to the
    end (seen once in a thousand signals during parallel MCMC). So the handler also records the signal, and
    :func:`raise_if_swallowed`, called by the work loops (a training step, a chain's progress), raises it again,
    once. Outside the main thread this is a no-op."""
    signums = [signal.SIGTERM, signal.SIGINT]
    try:
        previous = {s: signal.getsignal(s) for s in signums}
        for s in signums:
            if previous[s] is not signal.SIG_IGN:
                signal.signal(s, _raise_for)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        _swallowable.clear()
        for s in signums:
            if previous[s] is not signal.SIG_IGN and previous[s] is not None:
                signal.signal(s, previous[s])


def raise_if_swallowed() -> None:
    """Raise again, once, a signal of :func:`signals_unwind` whose exception did not unwind the main thread (the work
    that called this goes on, so something discarded it). Cheap enough for every step of a loop: one list test."""
    if _swallowable and threading.current_thread() is threading.main_thread():
        signum = _swallowable.pop()
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def signals_deferred():
    """Within the block (main thread only) SIGINT and SIGTERM are held, then handed to the handler in place before
    it when the block ends: for a step that must not stop halfway, such as starting a worker process (a start cut
    short leaves a worker its parent no longer knows, which outlives the interrupt and prints a traceback when the
    parent's semaphores are gone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    live = [s for s, h in previous.items() if h is not signal.SIG_IGN and h is not None]
    for s in live:
        signal.signal(s, lambda signum, frame: held.append((signum, frame)))
    try:
        yield
    finally:
        for s in live:
            signal.signal(s, previous[s])
        if held:
            signum, frame = held[0]
            if callable(previous[signum]):
                previous[signum](signum, frame)
            else:  # SIG_DFL: what the signal would have done
                signal.raise_signal(signum)


def forget_handled_interrupt() -> None:
    """Clear CPython's record of an unhandled ``KeyboardInterrupt`` after the command has handled it.

    CPython (3.8-3.11 at least) sets the process-wide flag ``_Py_UnhandledKeyboardInterrupt`` when a
    ``KeyboardInterrupt`` leaves code run by ``exec``/``eval`` of a string (``collections.namedtuple`` and
    ``dataclasses`` run such code while a module is imported), even when an outer ``except`` handles it; under
    ``python -m`` the interpreter then ends by sending itself SIGINT after the command returned 130 or 143, so the
    caller sees "killed by SIGINT" (exit -2) instead of the status the command chose. Where the flag is not a
    visible symbol (other builds, later versions) this does nothing."""
    with contextlib.suppress(Exception):
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
