"""Checkpoints and resume: a run killed at any point continues to exactly the uninterrupted result."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import ppvae
from ppvae.cli.app import main
from ppvae.models import GMM
from ppvae.runs.checkpoint import latest_checkpoint, load_checkpoint

# auto_normal draws from the guide every step, so exact equality needs the RNG states restored too
CLI_ARGS = ["fit", "gmm", "K=2", "--data", "faithful", "--guide", "auto_normal", "--steps", "16",
            "--batch-size", "68", "--seed", "3", "--lr", "0.05", "--quiet"]


class _Stop(Exception):
    pass


def _stop_at(step):
    def callback(trainer):
        if trainer.step == step:
            raise _Stop

    return callback


def _same_params(a, b):
    sa, sb = a.guide.state_dict(), b.guide.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _wait_for_checkpoint(directory, min_step, proc, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before it could be killed:\n{proc.stderr.read()}")
        try:
            step = load_checkpoint(latest_checkpoint(directory))["step"]
            if step >= min_step:
                return step
        except ppvae.PPVAEError:
            pass
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared")


@pytest.mark.slow
def test_cli_run_killed_by_sigkill_resumes_to_the_uninterrupted_result(tmp_path):
    """A `ppvae fit` process is SIGKILLed after its step-8 checkpoint; `--resume` finishes it and the
    saved run equals an uninterrupted one bit for bit (losses and parameters)."""
    killed, whole = str(tmp_path / "killed"), str(tmp_path / "whole")
    script = textwrap.dedent(f"""
        import sys, time, torch
        torch.set_num_threads({torch.get_num_threads()})
        from ppvae.infer.svi import train
        step = train.Trainer.run_step
        def slow_step(self):  # slow the run down so the test can kill it between checkpoints
            time.sleep(0.1)
            return step(self)
        train.Trainer.run_step = slow_step
        from ppvae.cli.app import main
        sys.exit(main({CLI_ARGS + ["--checkpoint-every", "4", "--out", killed]!r}))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_checkpoint(os.path.join(killed, "checkpoints"), 8, proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert sorted(os.listdir(killed)) == [".ppvae-run", "checkpoints"]  # only its checkpoints, marked as ppvae's
    assert load_checkpoint(latest_checkpoint(killed))["step"] < 16

    assert main(CLI_ARGS + ["--checkpoint-every", "4", "--out", killed, "--resume", killed]) == 0
    assert main(CLI_ARGS + ["--out", whole]) == 0
    resumed, reference = ppvae.Fit.load(killed), ppvae.Fit.load(whole)
    assert resumed.history["loss"] == reference.history["loss"] and len(resumed.history["loss"]) == 16
    assert _same_params(resumed, reference)
    assert load_checkpoint(latest_checkpoint(killed))["step"] == 16  # the final checkpoint moved into the run


def test_resume_is_exact_with_a_schedule_and_early_stopping(faithful, tmp_path):
    """Interrupted at step 13 (checkpoint at 10), resumed: same losses, parameters, scheduler and the
    same early-stopping step as one uninterrupted run."""
    kw = dict(guide="auto_normal", steps=60, batch_size=50, seed=5, lr=0.1, lr_schedule="cosine",
              patience=3, tol=1e-2, progress=False)  # stops early at step 26
    reference = ppvae.fit(GMM(K=2, covariance="diag"), faithful, **kw)
    assert reference.history["stopped_early"] and 13 < reference.history["steps"] < 60
    ck = str(tmp_path / "ck")
    with pytest.raises(_Stop):
        ppvae.fit(GMM(K=2, covariance="diag"), faithful, checkpoint_dir=ck, checkpoint_every=5,
                  callbacks=[_stop_at(13)], **kw)
    state = load_checkpoint(latest_checkpoint(ck))
    assert state["step"] == 10 and state["losses"] == reference.history["loss"][:10]
    resumed = ppvae.fit(GMM(K=2, covariance="diag"), faithful, resume=ck, **kw)
    assert resumed.history["loss"] == reference.history["loss"]
    assert resumed.history["stopped_early"]
    assert _same_params(resumed, reference)


def test_checkpoint_contents_and_rotation(faithful, tmp_path):
    ck = str(tmp_path / "ck")
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=12, checkpoint_dir=ck, checkpoint_every=5,
                    progress=False)
    # every 5 steps and at the end; only the two newest are kept
    assert sorted(os.listdir(ck)) == ["checkpoint-000000010.pt", "checkpoint-000000012.pt"]
    state = torch.load(os.path.join(ck, "checkpoint-000000012.pt"), weights_only=True)
    assert state["step"] == 12 and state["losses"] == fit.history["loss"]
    assert set(state["rng"]) >= {"torch", "numpy", "python"}
    config = json.loads(state["config"])
    assert config["model"] == "gmm" and config["hparams"]["K"] == 2 and config["train"]["seed"] == 0
    assert config["ppvae_version"] == ppvae.__version__
    params = dict(fit.guide.named_parameters())
    # the potential path (ppvae/infer/svi/potential_svi.py) fits the guide's parameters as one flat vector
    assert fit.info["svi_path"] == "potential" and len(state["params"]) == 1
    assert state["params"][0].numel() == sum(p.numel() for p in params.values())
    assert len(state["optimizer"]["state"]) == len(state["params"])


def test_a_write_that_dies_midway_leaves_the_previous_checkpoint(faithful, tmp_path, monkeypatch):
    """A torn temporary file is never taken for a checkpoint, and a failing write removes it."""
    ck = tmp_path / "ck"
    ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=4, checkpoint_dir=str(ck), checkpoint_every=4,
              progress=False)
    good = latest_checkpoint(str(ck))
    (ck / ".tmp-abcdcheckpoint-000000008.pt").write_bytes(b"PK\x03\x04 torn")  # what SIGKILL mid-write leaves
    assert latest_checkpoint(str(ck)) == good

    real_save = torch.save

    def dying_save(obj, fh, *a, **k):
        fh.write(b"PK\x03\x04 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(ppvae.PPVAEError, match=r"write: cannot write .*checkpoint-000000008\.pt \(disk full\)"):
        ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=8, checkpoint_dir=str(ck), checkpoint_every=8,
                  resume=str(ck), progress=False)
    monkeypatch.setattr(torch, "save", real_save)
    assert latest_checkpoint(str(ck)) == good and load_checkpoint(good)["step"] == 4
    assert sorted(p.name for p in ck.iterdir()) == [".tmp-abcdcheckpoint-000000008.pt", "checkpoint-000000004.pt"]


def test_resume_checks_that_the_run_is_the_same(faithful, tmp_path):
    ck = str(tmp_path / "ck")
    ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=3, checkpoint_dir=ck, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="seed must match.*has 0, got 1"):
        ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=6, seed=1, resume=ck, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="checkpoint .* is of model 'gmm'"):
        ppvae.fit(GMM(K=3), faithful, guide="auto_delta", steps=6, resume=ck, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="past the 2 steps"):
        ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=2, resume=ck, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="found none"):
        ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=2, resume=str(tmp_path), progress=False)
    with pytest.raises(ppvae.PPVAEError, match="checkpoint_every: expected a checkpoint_dir"):
        ppvae.fit(GMM(K=2), faithful, steps=2, checkpoint_every=1)


def test_cli_refuses_to_mix_a_new_run_with_old_checkpoints(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "checkpoint-000000005.pt").write_bytes(b"old")
    args = ["fit", "gmm", "K=2", "--data", "faithful", "--steps", "2", "--out", str(out), "--checkpoint-every", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds checkpoints of an earlier run; pass --resume" in err
    assert main(["fit", "gmm", "--data", "faithful", "--out", str(out), "--resume", str(out)]) == 2
    assert "is not a tensors-only torch file" in capsys.readouterr().err
