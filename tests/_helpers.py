"""Helpers shared by test modules (imported as ``from _helpers import ...``; tests/ is on sys.path)."""

import contextlib
import os
import pickle
import signal
import subprocess
import sys
import time

import torch


class Payload:
    """Unpickling this calls ``exec``, which would create ``marker``: what a malicious file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def write_payload(path, marker, raw: bool = False) -> None:
    """Write ``{"model": Payload(marker)}`` to ``path``: a torch.save zip file, or with ``raw`` a bare pickle."""
    obj = {"model": Payload(str(marker))}
    if raw:
        with open(path, "wb") as fh:
            pickle.dump(obj, fh, protocol=2)
    else:
        torch.save(obj, path)


# the repository's root, for tests at any depth of tests/ (they mirror the engine's subpackages)
REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


# -- processes a test starts: owned, waited on by event, always killed -------------------------------------------

HANG_S = 600.0  # a guard against hangs only: every wait below ends on an event long before it on any machine


def cli(*argv) -> list[str]:
    """The command line of ``ppvae ARGV`` run by this interpreter."""
    return [sys.executable, "-m", "ppvae.cli", *map(str, argv)]


def start(argv, **popen) -> subprocess.Popen:
    """Start ``argv`` in a process group of its own (so its workers, forkserver and resource tracker can be
    killed together), with one intra-op thread and text pipes for stdout and stderr unless given."""
    env = dict(popen.pop("env", None) or os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:  # a background job's: the child's Ctrl-C must work
        popen.setdefault("preexec_fn", _default_sigint)
    return subprocess.Popen(argv, env=env, text=True, start_new_session=True, **popen)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s group (still alive or not) and reap ``proc``; closes its pipes."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.wait(timeout=60)
    for stream in (proc.stdout, proc.stderr, proc.stdin):
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()


@contextlib.contextmanager
def owned(argv, **popen):
    """``with owned(argv) as proc:`` -- the process and its whole group are killed when the block ends, however."""
    proc = start(argv, **popen)
    try:
        yield proc
    finally:
        kill_group(proc)


def wait_until(condition, proc: subprocess.Popen | None = None, what: str = "the event", timeout: float = HANG_S):
    """Poll ``condition()`` until it is true (returned); fail at once if ``proc`` ends first (with its stderr)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {what} after {timeout:.0f} s (a hang)")


def finish(proc: subprocess.Popen, timeout: float = HANG_S) -> tuple[int, str, str]:
    """Wait for ``proc`` to end by itself (a guard against hangs only); its exit status, stdout and stderr."""
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out or "", err or ""


def descendants(root: int) -> dict[int, str]:
    """{pid: start time} of every live (not zombie) descendant of ``root``, read from /proc (the start time
    tells a pid reused by a new process from the old one)."""
    children, start_time = {}, {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
                start_time[int(entry)] = fields[19]
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = start_time[child]
            todo.append(child)
    return out


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def still_alive(tree: dict[int, str]) -> dict[int, str]:
    """The processes of ``tree`` ({pid: start time}) that still run (same pid and start time, not a zombie)."""
    alive = {}
    for pid, started in tree.items():
        fields = _stat(pid)
        if fields is not None and fields[0] != "Z" and fields[19] == started:
            alive[pid] = started
    return alive


def wait_gone(tree: dict[int, str], timeout: float) -> dict[int, str]:
    """Wait up to ``timeout`` s for every process of ``tree`` to end; those still alive then."""
    deadline = time.monotonic() + timeout
    alive = still_alive(tree)
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = still_alive(tree)
    return alive


# -- the session's processes: every process a test starts inherits this mark in its environment -----------------
SESSION_MARK = "PPVAE_TEST_SESSION"


def marked_processes(mark: str) -> dict[int, str]:
    """{pid: command line} of live processes (other than this one) whose environment holds ``SESSION_MARK=mark``,
    except this process's own multiprocessing helpers (the forkserver and resource tracker of in-process tests,
    which end with this process)."""
    needle, found, me = f"{SESSION_MARK}={mark}".encode(), {}, os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = _stat(int(entry))
        if fields is None or fields[0] == "Z":
            continue
        if int(fields[1]) == me and "multiprocessing" in cmdline:
            continue
        found[int(entry)] = cmdline
    return found


def planted_corpus(K=3, V=12, D=300, n=50, alpha=0.3, seed=0):
    """Documents from LDA with topic k putting mass 1/4.16 on words 4k..4k+3 (0.02/4.16 elsewhere); returns the
    counts Dataset and the true topic-word matrix beta (shared by the LDA, ProdLDA and online-LDA tests)."""
    import ppvae  # here, not at the top: the process helpers above must not import the package

    g = torch.Generator().manual_seed(seed)
    beta = torch.full((K, V), 0.02)
    for k in range(K):
        beta[k, 4 * k: 4 * k + 4] = 1.0
    beta = beta / beta.sum(1, keepdim=True)
    theta = torch._standard_gamma(torch.full((D, K), alpha), generator=g)
    theta = theta / theta.sum(1, keepdim=True)
    x = torch.stack([torch.bincount(torch.multinomial(theta[d] @ beta, n, replacement=True, generator=g),
                                    minlength=V) for d in range(D)]).float()
    return ppvae.Dataset(x, kind="counts", meta={"vocab": [f"w{i}" for i in range(V)]}), beta


def matched_l1(estimate, truth):
    """Per-topic L1 distance after the best one-to-one matching of topics (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment

    cost = torch.cdist(estimate.double(), truth.double(), p=1)
    r, c = linear_sum_assignment(cost.numpy())
    return cost[r, c]
