"""ppvae._util.parallel (ordered map over worker processes) and parallel MCMC chains (identical draws)."""

import io

import pytest
import torch
from _helpers import cli, descendants, finish, owned, wait_gone, wait_until

import ppvae
from ppvae._util.parallel import parallel_map, report, resolve_workers
from ppvae._util.progress import Progress
from ppvae.infer.mcmc.sampler import run_mcmc
from ppvae.models import GMM


def _square_plus_draw(task):
    """A task that seeds its own randomness: the result cannot depend on which process runs it."""
    value, seed = task
    gen = torch.Generator().manual_seed(seed)
    report(1)
    return value * value + float(torch.rand(1, generator=gen)), torch.get_num_threads()


def _fail(task):
    raise ValueError(f"task {task} failed")


@pytest.mark.slow
def test_parallel_map_is_ordered_and_equal_to_sequential():
    tasks = [(v, 10 + v) for v in range(5)]
    sequential = parallel_map(_square_plus_draw, tasks, workers=1)
    parallel = parallel_map(_square_plus_draw, tasks, workers=2)
    assert [r[0] for r in parallel] == [r[0] for r in sequential]  # exact: same seeds, same arithmetic
    assert [int(r[0]) for r in parallel] == [0, 1, 4, 9, 16]  # in task order (each draw is in [0, 1))
    assert all(r[1] == 1 for r in parallel)  # one intra-op thread per worker


def test_parallel_map_reraises_task_error_and_refuses_unpicklable():
    with pytest.raises(ValueError, match="task 1 failed"):
        parallel_map(_fail, [1, 2], workers=2)
    with pytest.raises(ppvae.PPVAEError, match="picklable"):
        parallel_map(lambda t: t, [1, 2], workers=2)
    with pytest.raises(ppvae.PPVAEError, match="workers"):
        parallel_map(_square_plus_draw, [(1, 1)], workers=0)
    assert resolve_workers(8, 3) == 3 and resolve_workers(1, 3) == 1


def _pid_or_fail(task):
    """Task 0 runs in the main process (parallel_map's own share) and sleeps, so the dispatcher thread has long
    since handed task 1 to the worker (it would not have, were task 0 instant); ``task < 0`` fails."""
    import os
    import time

    if task == 0:
        time.sleep(1.0)
    if task < 0:
        raise ValueError(f"task {task} failed in a worker")
    return os.getpid(), torch.get_num_threads()


@pytest.mark.slow
def test_main_process_takes_task_zero_and_a_worker_error_still_surfaces():
    import os

    threads = torch.get_num_threads()
    pids = parallel_map(_pid_or_fail, [0, 1, 2], workers=2)
    assert pids[0] == (os.getpid(), 1)  # the main process's share, at one thread like a worker
    assert pids[1][0] != os.getpid() and all(t == 1 for _, t in pids)  # the worker took task 1, one thread
    assert torch.get_num_threads() == threads  # the caller's thread count is restored
    with pytest.raises(ValueError, match="task -1 failed in a worker"):
        parallel_map(_pid_or_fail, [0, -1], workers=2)  # the error of the worker's task, not lost in its thread


def test_progress_lines_when_not_a_terminal():
    stream = io.StringIO()
    with Progress("mcmc", [10, 10], enabled=None, part_name="chain", interval=0.0, stream=stream) as bar:
        bar.update(5, 0)
        bar.update(10, 1)
    first = stream.getvalue().splitlines()[0]
    assert first.startswith("mcmc: 25% (5/20 it)") and "ETA" in first and "chains 50% 0%" in first
    assert stream.getvalue().splitlines()[-1].startswith("mcmc: 75% (15/20 it)")
    silent = io.StringIO()
    with Progress("fit", 10, enabled=False, interval=0.0, stream=silent) as bar:
        bar.update(10)
    assert silent.getvalue() == ""


def test_mcmc_chains_on_two_cores_equal_one_core_bit_for_bit():
    data = ppvae.load_dataset("faithful", standardize=True)
    runs = [run_mcmc(GMM(K=2, covariance="diag"), data, num_draws=20, warmup=20, num_chains=3, cores=c,
                     progress=False) for c in (1, 2)]
    for name in runs[0].samples:
        assert torch.equal(runs[0].samples[name], runs[1].samples[name])
    assert runs[0].num_divergences == runs[1].num_divergences
    assert runs[1].config["cores"] == 2
    # chains differ from one another (each has its own seed and start)
    assert not torch.equal(runs[0].samples["locs"][0], runs[0].samples["locs"][1])


def test_cli_threads_and_cores_refuse_bad_values(tmp_path, capsys):
    from ppvae.cli.app import main

    assert main(["mcmc", "gmm", "K=2", "--data", "faithful", "--cores", "0", "--out", str(tmp_path / "a")]) == 2
    assert "cores: expected an integer >= 1; got 0" in capsys.readouterr().err
    assert main(["em", "gmm", "K=2", "--data", "faithful", "--threads", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--threads: expected an integer >= 1; got 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="reads the process table from /proc")
def test_ctrl_c_on_parallel_mcmc_stops_every_worker_and_writes_nothing(tmp_path):
    """SIGINT to `ppvae mcmc --cores 2` once its worker exists (the event): exit 130, no process of its tree
    (forkserver, worker, resource tracker) left running, nothing in --out's directory. The draw count ends by
    itself if no signal came; the process group is killed whatever happens."""
    import os
    import signal
    import subprocess

    argv = ["mcmc", "gmm", "K=2", "--data", "faithful", "--chains", "4", "--cores", "2", "--warmup", "20",
            "--num-draws", "20000", "--quiet", "--out", "r"]
    tree: dict[int, str] = {}

    def pool_started():  # resource tracker + forkserver + 1 worker forked from it (the main process is the other)
        tree.update(descendants(proc.pid))
        if not any(descendants(p) for p in tree):
            return False
        tree.update(descendants(proc.pid))  # with the worker just seen
        return True

    with owned(cli(*argv), cwd=tmp_path, stdout=subprocess.DEVNULL) as proc:
        wait_until(pool_started, proc, "a worker process")
        proc.send_signal(signal.SIGINT)
        rc, _, err = finish(proc)
        alive = wait_gone(tree, 60)  # they end with the main process (parent-death signal, pipes)
    assert rc == 130, err
    assert err.strip().splitlines()[-1].startswith("ppvae: interrupted after"), err
    assert "Traceback" not in err, err
    assert len(tree) >= 3 and not alive, f"still running after Ctrl-C: {alive}"
    assert os.listdir(tmp_path) == []  # no run directory, no .ppvae-* temporary directory, no lock file


def test_em_restarts_on_two_cores_equal_one_core():
    data = ppvae.load_dataset("faithful", standardize=True)
    fits = [ppvae.fit_em(GMM(K=3), data, restarts=4, max_iter=50, seed=3, cores=c) for c in (1, 2)]
    assert fits[0].traces == fits[1].traces  # every restart's trace, exactly
    assert fits[0].best_restart == fits[1].best_restart
    for name in fits[0].params:
        assert torch.equal(fits[0].params[name], fits[1].params[name])
    assert len({round(h[-1], 6) for h in fits[0].traces}) > 1  # the restarts really differ
    with pytest.raises(ppvae.PPVAEError, match="cores: expected an integer >= 1; got 0"):
        ppvae.fit_em(GMM(K=2), data, cores=0)


CALLER = """
import torch, ppvae
from ppvae.models import GMM
data = ppvae.load_dataset("faithful", standardize=True)
kw = dict(num_draws=10, warmup=10, num_chains=4, seed=0, progress=False)
parallel = ppvae.run_mcmc(GMM(K=2, covariance="diag"), data, **kw)  # default cores: every core, at most 4
alone = ppvae.run_mcmc(GMM(K=2, covariance="diag"), data, cores=1, **kw)
print("cores", parallel.config["cores"], "identical", all(torch.equal(parallel.samples[k], alone.samples[k])
                                                       for k in alone.samples))
"""


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["script", "-c", "stdin"])
def test_parallel_chains_from_an_unguarded_script_python_c_and_stdin(caller, tmp_path):
    """Issue 22 item 4: before, a script without `if __name__ == "__main__":` re-ran itself in the worker and died
    ("a worker process died"), and `python -` failed on '<stdin>'. Now all three return the draws of cores=1."""
    import subprocess
    import sys

    from ppvae._util.parallel import available_cores

    script = tmp_path / "unguarded.py"
    script.write_text(CALLER)
    argv = {"script": [sys.executable, str(script)], "-c": [sys.executable, "-c", CALLER],
            "stdin": [sys.executable, "-"]}[caller]
    with owned(argv, cwd=tmp_path, stdin=subprocess.PIPE) as proc:
        rc, out, err = finish_with_input(proc, CALLER if caller == "stdin" else "")
    assert rc == 0, err
    assert f"cores {min(4, available_cores())} identical True" in out
    assert "Traceback" not in err and "warning" not in err.lower()


def finish_with_input(proc, text: str):
    out, err = proc.communicate(text, timeout=600)  # a guard against hangs only
    return proc.returncode, out, err


def _main_defined_task(task):
    return task


def test_tasks_that_need_main_run_here_with_one_warning(monkeypatch):
    """A task defined in __main__ (a notebook, an unguarded script) cannot reach a worker: the map runs it in this
    process with one warning, never fails."""
    import sys
    import types

    fake_main = types.ModuleType("__main__")
    fake_main._main_defined_task = _main_defined_task
    _main_defined_task.__module__ = "__main__"
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    try:
        with pytest.warns(UserWarning, match="run one after another in this process: they use code defined in"):
            assert parallel_map(_main_defined_task, [1, 2, 3], workers=2) == [1, 2, 3]
    finally:
        _main_defined_task.__module__ = __name__


def _killed(task):
    import os
    import signal

    if task == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return task


def test_a_worker_that_dies_is_reported_with_its_signal():
    """Before: "killed, or out of memory" whatever happened. Now the worker's pid and signal are named."""
    with pytest.raises(ppvae.PPVAEError, match=r"cores: a worker process died \(pid \d+ killed by SIGKILL"):
        parallel_map(_killed, [0, 1], workers=2)


class _MainDefined:
    pass


def test_a_reference_to_main_is_found_in_any_of_several_pickles_and_through_the_memo(monkeypatch):
    """The map checks the function's pickle and the tasks' pickles written one after another; a class of
    ``__main__`` may be named through the memo (its module name already written as a string)."""
    import pickle
    import sys
    import types

    from ppvae._util.procs import _refers_to_main

    fake_main = types.ModuleType("__main__")
    fake_main._MainDefined = _MainDefined
    monkeypatch.setitem(sys.modules, "__main__", fake_main)
    monkeypatch.setattr(_MainDefined, "__module__", "__main__")
    task = pickle.dumps({"module": "__main__", "model": _MainDefined()})
    assert _refers_to_main(task)  # '__main__' for STACK_GLOBAL comes from the memo here
    assert _refers_to_main(pickle.dumps(_main_defined_task) + pickle.dumps([1, 2]) + task)
    assert not _refers_to_main(pickle.dumps(_main_defined_task) + pickle.dumps({"module": "__main__"}))


SCRIPT_MODEL = """
import torch, pyro, pyro.distributions as dist, ppvae

class Shift(ppvae.Model):  # defined in the script: a worker cannot import it
    def forward(self, batch):
        mu = pyro.sample("mu", dist.Normal(batch.x.new_zeros(()), 10.0))
        with self.data_plate(batch):
            pyro.sample("obs", dist.Normal(mu, 1.0), obs=batch.x[..., 0])

def run():
    x = torch.linspace(-1, 3, 20)[:, None]
    kw = dict(num_draws=20, warmup=20, num_chains=2, seed=0, progress=False)
    parallel, alone = ppvae.run_mcmc(Shift(), x, cores=2, **kw), ppvae.run_mcmc(Shift(), x, cores=1, **kw)
    print("identical", torch.equal(parallel.samples["mu"], alone.samples["mu"]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("caller", ["script", "stdin", "guarded"])
def test_chains_of_a_model_defined_in_the_script(caller, tmp_path):
    """Before: the model's class was in the tasks, not in the function, so the check of the function's pickle
    alone let workers start and each failed with "Can't get attribute 'Shift' on <module '__main__'>". Now an
    unguarded script and ``python -`` run the chains here with one warning; a guarded script uses the workers."""
    import subprocess
    import sys

    code = SCRIPT_MODEL + ("if __name__ == '__main__':\n    run()\n" if caller == "guarded" else "run()\n")
    script = tmp_path / "model_script.py"
    script.write_text(code)
    argv = [sys.executable, "-"] if caller == "stdin" else [sys.executable, str(script)]
    with owned(argv, cwd=tmp_path, stdin=subprocess.PIPE) as proc:
        rc, out, err = finish_with_input(proc, code if caller == "stdin" else "")
    assert rc == 0, err
    assert "identical True" in out and "Traceback" not in err
    assert ("chains run one after another in this process" in err) == (caller != "guarded"), err
