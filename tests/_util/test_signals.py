"""Signals in the main thread (ppvae/_util/procs.py): an interrupt is raised once and never lost, a held signal is
delivered when the critical section ends, and a handled interrupt leaves the exit status the command chose."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ppvae._util.procs import Terminated, raise_if_swallowed, signals_deferred, signals_unwind

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _until(condition, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.001)  # bytecodes between sleeps: where Python runs a pending signal handler


@pytest.fixture
def ctrl_c_raises():
    """Python's own Ctrl-C handler, whatever the suite inherited (a background job's SIGINT is ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_a_signal_inside_the_deferred_block_is_delivered_when_it_ends(ctrl_c_raises):
    ran_on = []
    with pytest.raises(KeyboardInterrupt):
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the handler has run by now: it only held the signal
            ran_on.append(True)
    assert ran_on == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler in place before is back


def test_an_ignored_ctrl_c_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with signals_deferred(), signals_unwind():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigterm_unwinds_the_main_thread_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(Terminated):
        with signals_unwind():
            os.kill(os.getpid(), signal.SIGTERM)
            _until(lambda: False, timeout=5)
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    raise_if_swallowed()  # nothing left to raise after the block


def test_a_signal_whose_exception_a_finalizer_discarded_is_raised_again_once(monkeypatch):
    """A handler that runs inside ``__del__`` raises there, and Python discards the exception (an "unraisable"):
    the command would run on. ``raise_if_swallowed`` in the work loop raises it again, once."""
    discarded = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: discarded.append(u.exc_type))

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            _until(lambda: False, timeout=5)  # the handler runs here and raises Terminated inside __del__

    with signals_unwind():
        Finalized()  # freed at once: __del__ runs and its exception is discarded
        assert discarded == [Terminated]
        with pytest.raises(Terminated):
            for _ in range(1000):  # the work loop goes on ...
                raise_if_swallowed()  # ... and stops at its first check
        raise_if_swallowed()  # once only


def test_a_handled_interrupt_keeps_the_exit_status_under_python_m(tmp_path):
    """CPython records a KeyboardInterrupt that leaves ``exec`` of a string even when it is handled; under
    ``python -m`` it then ends by SIGINT (exit -2) instead of the status returned. ``forget_handled_interrupt``
    clears that record."""
    (tmp_path / "interrupted_cmd.py").write_text(textwrap.dedent("""
        import sys
        from ppvae._util.procs import forget_handled_interrupt
        try:
            exec("raise KeyboardInterrupt")  # as during the import of a module that builds a namedtuple
        except KeyboardInterrupt:
            if sys.argv[1] == "forget":
                forget_handled_interrupt()
        sys.exit(130)
    """))
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run = [subprocess.run([sys.executable, "-m", "interrupted_cmd", arg], env=env, timeout=120,
                          capture_output=True) for arg in ("forget", "keep")]
    assert run[0].returncode == 130, run[0].stderr
    assert run[1].returncode in (130, -signal.SIGINT)  # -2 where CPython has the quirk (3.11), 130 where not
