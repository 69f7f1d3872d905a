"""ppvae._util.parallel (ordered map over worker processes) and parallel MCMC chains (identical draws)."""

import io

import pytest
import torch

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


def _descendants(root: int) -> dict[int, str]:
    """{pid: start time} of every live descendant of ``root``, read from /proc (the start time tells a pid
    reused by a new process from the old one)."""
    import os

    children, start = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if fields[0] != "Z":  # a zombie has stopped running; only its parent's wait() is left
            children.setdefault(int(fields[1]), []).append(int(entry))
            start[int(entry)] = fields[19]
    out, todo = {}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out[child] = start[child]
            todo.append(child)
    return out


def _start_time(pid: int) -> str | None:
    """The start time of a running (not zombie) process ``pid``, None when there is none."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self"), reason="reads the process table from /proc")
def test_ctrl_c_on_parallel_mcmc_stops_every_worker_and_writes_nothing(tmp_path):
    """SIGINT to `ppvae mcmc --cores 2` while the main process and its worker sample: exit 130, no process of its
    tree (forkserver, worker, resource tracker) left running, nothing in --out's directory."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, OMP_NUM_THREADS="1")
    argv = ["mcmc", "gmm", "K=2", "--data", "faithful", "--chains", "4", "--cores", "2", "--warmup", "20",
            "--num-draws", "1000000", "--quiet", "--out", "r"]
    proc = subprocess.Popen([sys.executable, "-m", "ppvae.cli", *argv], cwd=tmp_path, env=env,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240  # generous: starting the forkserver imports torch, slow on a busy machine
    tree: dict[int, str] = {}
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        tree.update(_descendants(proc.pid))
        # resource tracker + forkserver + 1 worker forked from the forkserver (the main process is the other core)
        forkserver = [p for p in tree if _descendants(p)]
        if len(tree) >= 3 and forkserver:
            break
        time.sleep(0.2)
    workers = _descendants(forkserver[0])
    assert len(workers) == 1, tree
    time.sleep(1.0)  # into the chains
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("ppvae: interrupted after"), err
    assert "Traceback" not in err, err
    deadline = time.monotonic() + 60  # the forkserver and tracker exit when they read EOF from the parent
    alive = dict(tree)
    while alive and time.monotonic() < deadline:
        alive = {p: s for p, s in tree.items() if _start_time(p) == s}
        if alive:
            time.sleep(0.2)
    assert not alive, f"still running after Ctrl-C: {alive}"
    assert os.listdir(tmp_path) == []  # no run directory, no .ppvae-* temporary directory


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
