"""ppvae._parallel (ordered map over worker processes) and parallel MCMC chains (identical draws)."""

import io

import pytest
import torch

import ppvae
from ppvae._parallel import parallel_map, report, resolve_workers
from ppvae._progress import Progress
from ppvae.mcmc import run_mcmc
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
    runs = [run_mcmc(GMM(K=2, covariance="diag"), data, num_samples=20, warmup=20, num_chains=3, cores=c,
                     progress=False) for c in (1, 2)]
    for name in runs[0].samples:
        assert torch.equal(runs[0].samples[name], runs[1].samples[name])
    assert runs[0].num_divergences == runs[1].num_divergences
    assert runs[1].config["cores"] == 2
    # chains differ from one another (each has its own seed and start)
    assert not torch.equal(runs[0].samples["locs"][0], runs[0].samples["locs"][1])


def test_cli_threads_and_cores_refuse_bad_values(tmp_path, capsys):
    from ppvae.cli import main

    assert main(["mcmc", "gmm", "K=2", "--data", "faithful", "--cores", "0", "--out", str(tmp_path / "a")]) == 2
    assert "cores: expected an integer >= 1; got 0" in capsys.readouterr().err
    assert main(["em", "gmm", "K=2", "--data", "faithful", "--threads", "0", "--out", str(tmp_path / "b")]) == 2
    assert "--threads: expected an integer >= 1; got 0" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
