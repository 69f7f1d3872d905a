"""Map a picklable function over independent tasks in worker processes: MCMC chains and EM restarts today; other
embarrassingly parallel work (importance sampling over chunks of data points) fits the same call.

:func:`parallel_map(fn, tasks, workers=N)` returns ``[fn(t) for t in tasks]`` in task order, each task
run by one of N processes with one intra-op thread (N processes x 1 thread, never oversubscribed):
N - 1 worker processes and this process itself, which starts on the first task at once instead of
waiting while the workers start (forking and loading a worker costs seconds: on 2 cores, 4 MCMC chains
of ~10 s each lose 20% of the speed-up to it when this process only waits). With one worker (or one
task) it runs the tasks here one after another, so a result cannot depend on the worker count as long
as each task seeds its own randomness (as ``run_mcmc`` does per chain). Tasks report progress with
:func:`report` (``report(k)``: k more units done), shown by :class:`ppvae._util.progress.Progress` with one
part per task.

Why Python's ``concurrent.futures.ProcessPoolExecutor`` and not Pyro's ``MCMC(num_chains=..,
mp_context=..)``: Pyro starts one process per chain and falls back to running chains one after another
when ``num_chains > cpu_count - 1`` (so 4 chains on 2 cores would not run in parallel at all), ships
every draw through a queue with a lock-step event, keeps the workers' thread count, and seeds chain c
with ``initial_seed + c`` so its draws differ from its sequential sampler's. The executor runs any
number of tasks on N workers, reports a dead worker (``BrokenProcessPool``) instead of hanging as
``multiprocessing.Pool`` does, and returns each chain's draws once.

Start method: ``forkserver`` where the platform has it (Linux, macOS), else ``spawn``. Plain ``fork``
copies a parent whose OpenMP/MKL thread pools and locks may be mid-use (a known deadlock with torch)
and is unavailable on macOS/Windows; ``forkserver`` forks each worker from a clean single-threaded
server that has imported torch, Pyro and ppvae once (``set_forkserver_preload``), so a worker starts in
a fraction of a second instead of the seconds a ``spawn`` re-import of torch costs. Both start methods would
re-import the caller's main module in each worker; :mod:`ppvae._util.procs` decides when they may (a call under
``if __name__ == "__main__":``), starts them without it otherwise (an unguarded script, ``python -c``,
``python -``, IPython), and runs the tasks in this process with one warning when they need code defined in
``__main__``. The forkserver and the workers carry Linux's parent-death signal: they end with this process,
even when it is SIGKILLed.

Ctrl-C: the workers ignore SIGINT; the main process catches it, terminates every worker and re-raises,
so nothing runs on and nothing is written (workers only return values; callers write results).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import torch

from ppvae._util.procs import (
    die_with_parent,
    main_hidden,
    raise_if_swallowed,
    signals_deferred,
    watch_process,
    worker_plan,
)
from ppvae._util.progress import Progress
from ppvae._util.validation import PPVAEError, check_int, warn_at_caller

__all__ = ["parallel_map", "available_cores", "prestart_workers", "report", "resolve_workers", "start_method"]

# Imported once by the forkserver, so a worker forked from it starts with them. torch.fx's symbolic_shapes (and sympy
# under it) is imported lazily by torch.broadcast_shapes on the first MultivariateNormal a model builds: about
# 1.2 s that every worker would otherwise pay before its first chain. A name that fails to import is skipped.
_PRELOAD = ["ppvae._util.forkserver_init", "torch", "torch.fx.experimental.symbolic_shapes", "pyro",
            "ppvae.infer.mcmc.sampler", "ppvae.infer.em", "ppvae.models"]
_REPORT_EVERY_S = 0.2  # batch progress messages: a queue put per leapfrog iteration would cost more than it shows

# worker-side state, set by _init_worker (a worker runs one task at a time)
_queue = None
_task_index = 0
_pending = 0
_last_put = 0.0
# in-process state: the progress display of the running map (a Progress, or a _Shared), when tasks run here
_local_progress = None


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(cores, num_tasks: int, name: str = "cores") -> int:
    """Worker count for ``num_tasks`` tasks: ``cores`` (None: every available core), at most ``num_tasks``."""
    if cores is None:
        cores = available_cores()
    cores = check_int(name, cores, low=1)
    return max(1, min(cores, num_tasks))


def start_method() -> str:
    """``forkserver`` where available, else ``spawn`` (see the module docstring)."""
    return "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"


def report(n: int = 1) -> None:
    """Called by a task: ``n`` more units of it are done (shown by the map's progress display)."""
    global _pending, _last_put
    if _queue is None:
        raise_if_swallowed()  # a task in this process: a Ctrl-C/SIGTERM some library discarded stops it here
        if _local_progress is not None:
            _local_progress.update(n, _task_index)
        return
    _pending += n
    now = time.perf_counter()
    if now - _last_put >= _REPORT_EVERY_S:
        _flush(now)


def _flush(now: float) -> None:
    global _pending, _last_put
    if _pending:
        _queue.put((_task_index, _pending))
    _pending, _last_put = 0, now


def _init_worker(progress_queue, threads: int, dtype) -> None:
    global _queue
    die_with_parent()  # killed with the forkserver, which is killed with the main process (ppvae/_util/procs.py)
    main = mp.parent_process()
    if main is not None:
        watch_process(main.pid)  # and with the main process itself, whatever happened before the signal was armed
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides: it terminates the workers on Ctrl-C
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    torch.set_default_dtype(dtype)
    _queue = progress_queue


def _run_task(fn: Callable, index: int, task: bytes):
    """In a worker: ``fn`` of the task pickled by the main process (see :func:`_map_in_workers`)."""
    global _task_index, _pending, _last_put
    _task_index, _pending, _last_put = index, 0, time.perf_counter()
    try:
        return fn(pickle.loads(task))
    finally:
        if _queue is not None:
            _flush(time.perf_counter())


def _pickled(fn, tasks) -> tuple[bytes, list[bytes]]:
    try:
        return pickle.dumps(fn), [pickle.dumps(t) for t in tasks]
    except Exception as exc:  # pickle raises several types (PicklingError, AttributeError, TypeError)
        raise PPVAEError(
            f"cores: running tasks in worker processes needs the model and its data to be picklable "
            f"(defined in an importable module, no lambdas); pickling failed: {type(exc).__name__}: {exc}; "
            "run with cores=1") from None


def parallel_map(fn: Callable, tasks: Sequence, *, workers: int | None = 1, threads: int = 1,
                 progress: bool | None = False, desc: str = "tasks", totals: Sequence[int] | None = None,
                 unit: str = "it", part_name: str = "task") -> list:
    """``[fn(t) for t in tasks]``, in order, on ``workers`` processes of ``threads`` intra-op threads each.

    ``workers``: None for every available core (at most one per task); 1 runs in this process.
    ``fn`` and the tasks must be picklable when workers > 1 (a module-level function; checked first,
    with a one-line error). ``totals``: units of work per task for the progress display (tasks call
    :func:`report`). A task's exception is re-raised here; Ctrl-C terminates every worker.
    """
    global _local_progress, _task_index
    tasks = list(tasks)
    if not tasks:
        return []
    workers = resolve_workers(workers, len(tasks), "workers")
    threads = check_int("threads", threads, low=1)
    display = Progress(desc, list(totals) if totals is not None else [1] * len(tasks), unit=unit,
                       enabled=progress, part_name=part_name)
    plan = None
    if workers > 1:
        fn_blob, blobs = _pickled(fn, tasks)
        plan = worker_plan(fn_blob + b"".join(blobs))  # can workers start from this caller? (ppvae/_util/procs.py)
        if plan == "here":
            warn_at_caller(f"{part_name}s run one after another in this process: they use code defined in "
                           "__main__ (a notebook, or a script without `if __name__ == \"__main__\":`), which "
                           "worker processes cannot import; define the model in a module to run them in parallel")
    with display:
        if workers == 1 or plan == "here":
            return _map_here(fn, tasks, display, count_tasks=totals is None)
        return _map_in_workers(fn, tasks, blobs, workers, threads, display, count_tasks=totals is None,
                               hide_main=plan == "hide_main")


def _map_here(fn, tasks, display: Progress, count_tasks: bool) -> list:
    """The tasks one after another in this process."""
    global _local_progress, _task_index
    outer = _local_progress
    _local_progress = display
    try:
        results = []
        for i, task in enumerate(tasks):
            _task_index = i
            results.append(fn(task))
            if count_tasks:
                display.update(1, i)
        return results
    finally:
        _local_progress, _task_index = outer, 0


def _context():
    ctx = mp.get_context(start_method())
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def prestart_workers() -> None:
    """Start the forkserver now, without waiting for it: it imports ``_PRELOAD`` (torch, Pyro, ppvae: the seconds
    a fresh interpreter takes to import them) while the caller prepares the tasks, instead of
    after. A no-op under ``spawn``, and when the server already runs (it serves every later map too)."""
    if _context().get_start_method() == "forkserver":
        from multiprocessing import forkserver  # only where the platform has it

        forkserver.ensure_running()


class _Shared:
    """What this process's thread and its dispatcher thread share in :func:`_map_in_workers`: the next task
    to take, the first error, and the progress display (updated from both threads, so behind a lock)."""

    def __init__(self, num_tasks: int, display: Progress):
        self.lock = threading.Lock()
        self.next, self.num_tasks, self.error, self.display = 0, num_tasks, None, display
        self.stop = threading.Event()

    def take(self) -> int | None:
        with self.lock:
            if self.next >= self.num_tasks or self.error is not None or self.stop.is_set():
                return None
            self.next += 1
            return self.next - 1

    def update(self, n: int, part: int) -> None:
        with self.lock:
            self.display.update(n, part)


def _map_in_workers(fn, tasks, blobs, workers, threads, display: Progress, count_tasks: bool,
                    hide_main: bool = False) -> list:
    """Tasks on ``workers`` processes: ``workers - 1`` worker processes and this one, each taking the next task
    when it is free. This process starts on its first task at once, while the workers are still being
    forked and loading (the seconds a worker takes to start are not lost), and runs its tasks with
    ``threads`` intra-op threads like a worker (its own setting is restored after). A dispatcher thread keeps
    the workers fed and shows their progress. A worker's error is re-raised when this process's current
    task ends; Ctrl-C in this process terminates every worker."""
    global _local_progress, _task_index
    ctx = _context()
    prestart_workers()  # from this thread: the forkserver's parent-death signal is tied to the thread that starts it
    progress_queue = ctx.Queue()
    executor = ProcessPoolExecutor(workers - 1, mp_context=ctx, initializer=_init_worker,
                                   initargs=(progress_queue, threads, torch.get_default_dtype()))
    # ``blobs`` were pickled before this process starts on its own tasks: the dispatcher thread then submits bytes,
    # never reading a model or tensor that a task running in this thread may be using
    shared = _Shared(len(tasks), display)
    results: list = [None] * len(tasks)
    own_threads, outer = torch.get_num_threads(), _local_progress
    processes: list = []
    dispatcher, stopped = threading.Thread(), False
    try:
        i = shared.take()  # task 0 is this process's, before the workers get the next ones
        # every worker starts here, in this thread (one per first submit); a signal waits until each start is
        # complete and the worker registered with the executor, so that the except clause below terminates it
        with main_hidden(hide_main), signals_deferred():
            running = {}
            for _ in range(workers - 1):
                j = shared.take()
                if j is not None:
                    running[executor.submit(_run_task, fn, j, blobs[j])] = j
        processes = list((getattr(executor, "_processes", None) or {}).values())
        dispatcher = threading.Thread(target=_dispatch, args=(fn, blobs, executor, running, shared, results,
                                                              progress_queue, count_tasks), daemon=True)
        dispatcher.start()
        _local_progress = shared
        torch.set_num_threads(threads)
        while i is not None:
            _task_index = i
            results[i] = fn(tasks[i])
            if count_tasks:
                shared.update(1, i)
            i = shared.take()
        while dispatcher.is_alive():  # joined in steps, so Ctrl-C still reaches this thread
            dispatcher.join(0.1)
            raise_if_swallowed()
        if isinstance(shared.error, BrokenProcessPool):
            raise PPVAEError(f"cores: a worker process died ({_how_workers_died(processes)}); nothing was kept; "
                             "run with fewer cores or cores=1") from None
        if shared.error is not None:
            raise shared.error
        return results
    except BaseException:  # Ctrl-C or a task's error: stop the others now rather than let them run on
        shared.stop.set()
        _terminate(executor)
        stopped = True
        raise
    finally:
        torch.set_num_threads(own_threads)
        _local_progress, _task_index = outer, 0
        shared.stop.set()
        if dispatcher.ident is not None:
            dispatcher.join(5)
        if stopped:  # a worker the dispatcher thread was starting meanwhile
            _terminate(executor)
        executor.shutdown(wait=True, cancel_futures=True)
        progress_queue.close()


def _dispatch(fn, blobs: list[bytes], executor, running: dict, shared: _Shared, results: list, progress_queue,
              count_tasks: bool) -> None:
    """The dispatcher thread: keep ``slots`` tasks running in the workers, store their results, show their progress.
    Any error here (a task's, a dead pool's, a failed submit) is kept for the main thread to raise."""
    try:
        _feed_workers(fn, blobs, executor, running, shared, results, progress_queue, count_tasks)
    except BaseException as exc:  # the main thread re-raises it; a thread's own traceback would be lost to it
        with shared.lock:
            shared.error = shared.error or exc


def _feed_workers(fn, blobs, executor, running, shared, results, progress_queue, count_tasks) -> None:
    def submit() -> None:
        i = shared.take()
        if i is not None:
            running[executor.submit(_run_task, fn, i, blobs[i])] = i

    while running and not shared.stop.is_set():
        done, _ = wait(running, timeout=0.1)
        _drain(progress_queue, shared)
        for f in done:
            i = running.pop(f)
            if f.exception() is not None:
                with shared.lock:
                    shared.error = shared.error or f.exception()
                return
            results[i] = f.result()
            if count_tasks:
                shared.update(1, i)
            submit()
    _drain(progress_queue, shared)


def _drain(progress_queue, display) -> None:
    while True:
        try:
            index, n = progress_queue.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        display.update(n, index)


def _how_workers_died(processes: list) -> str:
    """The exit of the worker processes that ended abnormally: a signal's name or an exit status."""
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=1)
    ends = []
    for process in processes:
        code = process.exitcode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            ends.append(f"pid {process.pid} killed by {name}"
                        + (" (the system's out-of-memory killer sends it)" if -code == signal.SIGKILL else ""))
        elif code:
            ends.append(f"pid {process.pid} exited with status {code}")
    return "; ".join(ends) or "it ended without saying how"


def _terminate(executor: ProcessPoolExecutor) -> None:
    """Terminate every worker (Python 3.14's ``terminate_workers`` where present; before it, the executor's
    process table, the only handle on its workers)."""
    terminate = getattr(executor, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()
    for process in list((getattr(executor, "_processes", None) or {}).values()):
        process.join(timeout=5)
