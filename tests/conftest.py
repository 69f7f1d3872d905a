import contextlib
import os
import signal
import time

import pytest
import torch
from _helpers import SESSION_MARK, marked_processes

import ppvae

# The tests use tiny tensors: intra-op threads only add overhead, and on a busy 2-core machine
# oversubscription slows them by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def faithful():
    return ppvae.load_dataset("faithful")


@pytest.fixture(autouse=True)
def _fresh_param_store():
    import pyro

    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def coin_tosses():
    """The three-coin textbook data 1,1,0,1,0,0,1,0,1,1 (Li 2012, example 9.1)."""
    return torch.tensor([1, 1, 0, 1, 0, 0, 1, 0, 1, 1.0]).unsqueeze(-1)


# -- no test leaves a process of the project running (issue 30) ------------------------------------------------
# Every process started during the session inherits this mark in its environment (forkserver and workers too),
# so a process left behind is found even after its parent died and it was reparented.
os.environ[SESSION_MARK] = str(os.getpid())


@pytest.fixture(autouse=True)
def _no_process_left_behind():
    """After each test: a process the test started that is still running (waited for up to 10 s to end) is
    killed and the test fails, naming it."""
    yield
    left = marked_processes(os.environ[SESSION_MARK])
    deadline = time.monotonic() + 10
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = marked_processes(os.environ[SESSION_MARK])
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"the test left {len(left)} process(es) running (killed now): "
                    + "; ".join(f"{pid}: {cmd[:120]}" for pid, cmd in left.items()), pytrace=False)


def pytest_sessionfinish(session, exitstatus):
    """The whole session: nothing of the project may still run when pytest ends."""
    left = marked_processes(os.environ.get(SESSION_MARK, ""))
    if left:
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        print(f"\nERROR: {len(left)} process(es) of the test session were still running (killed): {left}")
        session.exitstatus = 1
