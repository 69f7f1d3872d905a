"""Data-parallel SVI: two gloo processes on 127.0.0.1 reproduce a single-process run with the same
global batch and seed.

GMM with auto_delta has no Monte Carlo noise (the assignments are enumerated, the guide is a point
mass), so the two ranks' weighted half-batch gradients sum to the full-batch gradient and the
trajectories agree to float32 rounding (max relative deviation measured: ~1e-7)."""

import os
import socket
import sys
import textwrap

import pytest
import torch
from _helpers import HANG_S, kill_group, start

import ppvae
from ppvae.cli.app import main
from ppvae.infer.svi import train as svi_train
from ppvae.models import GMM
from ppvae.runs.checkpoint import latest_checkpoint, load_checkpoint

# batch 75 on N = 272: batches of 75, 75, 75 and 47 -- the last one splits unevenly (24 / 23)
FIT = dict(guide="auto_delta", steps=12, batch_size=75, seed=2, lr=0.05)
CLI = ["fit", "gmm", "K=2", "--data", "faithful", "--guide", "auto_delta", "--steps", "12", "--batch-size", "75",
       "--seed", "2", "--lr", "0.05", "--quiet", "--distributed"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(script: str, world: int = 2) -> list[str]:
    """Run ``script`` as ``world`` ranks, each in its own process group, killed whole when this returns or fails;
    the wait is a guard against hangs only (a rank ends by itself: the fit has a fixed step count)."""
    port = _free_port()
    procs = []
    try:
        for rank in range(world):
            env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
            procs.append(start([sys.executable, "-c", script], env=env))
        outs = [p.communicate(timeout=HANG_S) for p in procs]
    finally:
        for p in procs:
            kill_group(p)
    failed = [f"rank {rank} failed:\n{err[-3000:]}" for rank, (p, (_, err)) in enumerate(zip(procs, outs, strict=True))
              if p.returncode != 0]
    assert not failed, "\n".join(failed[::-1])  # the last rank's first: rank 0 usually fails because another did
    return [out for out, _ in outs]


def _close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_two_cli_processes_match_one_process_and_only_rank_0_writes(faithful, tmp_path, monkeypatch):
    """`ppvae fit ... --distributed` on 2 ranks (the environment torchrun sets; gloo on 127.0.0.1):
    the run equals a single-process fit to float32 rounding and checkpoints are written by rank 0 only."""
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import os, sys, torch
        torch.set_num_threads(1)
        from ppvae.runs import checkpoint
        save, rank = checkpoint.save_checkpoint, os.environ["RANK"]
        def counted_save(trainer, *args, **kwargs):  # record which rank writes each checkpoint
            with open({str(tmp_path)!r} + "/saves-rank" + rank, "a") as fh:
                fh.write(f"{{trainer.step}}\\n")
            return save(trainer, *args, **kwargs)
        checkpoint.save_checkpoint = counted_save
        from ppvae.cli.app import main
        sys.exit(main({CLI + ["--checkpoint-every", "5", "--out", str(out)]!r}))
    """)
    outs = _launch(script)
    assert sum(o.count("written to") for o in outs) == 1  # one summary, from rank 0
    assert (tmp_path / "saves-rank0").read_text().split() == ["5", "10", "12"]
    assert not (tmp_path / "saves-rank1").exists()
    fit = ppvae.Fit.load(str(out))
    # data-parallel runs take Pyro's path; so must the single-process run it is compared with (not the potential path)
    monkeypatch.setattr(svi_train, "potential_path", lambda trainer: (None, "compared with a data-parallel run"))
    single = ppvae.fit(GMM(K=2), faithful, progress=False, **FIT)
    torch.testing.assert_close(torch.tensor(fit.history["loss"]), torch.tensor(single.history["loss"]),
                               rtol=1e-6, atol=0)
    _close(fit.guide.state_dict(), single.guide.state_dict())
    assert sorted(os.listdir(out / "checkpoints")) == ["checkpoint-000000010.pt", "checkpoint-000000012.pt"]
    state = load_checkpoint(latest_checkpoint(str(out)))
    assert state["step"] == 12 and state["losses"] == fit.history["loss"]


def test_distributed_needs_the_torchrun_environment(tmp_path, capsys, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert main(["fit", "gmm", "--data", "faithful", "--out", str(tmp_path / "r"), "--distributed"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "expected the torchrun environment" in err and "torchrun --standalone" in err


def test_a_minibatch_too_small_to_share_is_refused(faithful):
    from ppvae.infer.svi.distributed import local_share

    batch, weight = local_share(faithful, torch.tensor([4, 9, 11]), rank=1, world_size=2)
    assert batch.index.tolist() == [11] and batch.size == 272 and weight == pytest.approx(1 / 3)
    assert torch.equal(batch.x, faithful.x[[11]])
    with pytest.raises(ppvae.PPVAEError, match="a minibatch of 1 points cannot be shared by 2 processes"):
        local_share(faithful, torch.tensor([3]), rank=1, world_size=2)
