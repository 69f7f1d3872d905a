"""Loading a run or a checkpoint never runs code from the file; broken or foreign files give clear errors."""

import json
import os
import shutil

import pytest
import torch
from _helpers import write_payload

import ppvae
from ppvae.models import GMM
from ppvae.runs.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, faithful):
    base = tmp_path_factory.mktemp("runs")
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=3, checkpoint_dir=str(base / "ck"), progress=False)
    fit.save(str(base / "run"))
    return base


@pytest.fixture
def run(saved_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(saved_run / "run", path)
    return path


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: the crafted file executes code under a plain (unsafe) torch.load."""
    marker = tmp_path / "ran"
    write_payload(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("raw", [False, True], ids=["torch-zip", "raw-pickle"])
def test_fit_load_refuses_a_params_file_that_would_run_code(run, tmp_path, raw):
    marker = tmp_path / "ran"
    write_payload(run / "params.pt", marker, raw=raw)
    with pytest.raises(ppvae.PPVAEError, match="params.pt .*refused without running anything") as err:
        ppvae.Fit.load(str(run))
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(saved_run, tmp_path, faithful):
    marker = tmp_path / "ran"
    ck = tmp_path / "ck"
    shutil.copytree(saved_run / "ck", ck)
    (newest,) = sorted(ck.iterdir())
    write_payload(newest, marker)
    with pytest.raises(ppvae.PPVAEError, match=r"checkpoint-000000003\.pt holds Python objects .*refused"):
        ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=6, resume=str(ck), progress=False)
    with pytest.raises(ppvae.PPVAEError, match="refused"):
        load_checkpoint(str(newest))
    assert not marker.exists()


def test_a_saved_run_loads_back(run, faithful):
    fit = ppvae.Fit.load(str(run))
    assert fit.config.steps == 3 and fit.log_likelihood(faithful).shape == (272,)


def _set_version(run, version):
    config = json.loads((run / "config.json").read_text())
    config["ppvae_version"] = version
    (run / "config.json").write_text(json.dumps(config))


def test_version_rule_same_major_minor_loads_other_is_refused(run):
    major, minor, *_ = ppvae.__version__.split(".")
    _set_version(run, f"{major}.{minor}.99")  # another patch release: same format, loads
    assert ppvae.Fit.load(str(run)).config.steps == 3
    other = f"{major}.{int(minor) + 1}.0"
    _set_version(run, other)
    with pytest.raises(ppvae.PPVAEError, match=rf"config.json was written by ppvae {other}; this is ppvae "):
        ppvae.Fit.load(str(run))
    _set_version(run, None)
    with pytest.raises(ppvae.PPVAEError, match="written by ppvae None"):
        ppvae.Fit.load(str(run))


@pytest.mark.parametrize("name", ["config.json", "params.pt", "history.json"])
def test_a_missing_file_is_named(run, name):
    os.unlink(run / name)
    with pytest.raises(ppvae.PPVAEError, match=rf"{name} is missing; not a complete ppvae run"):
        ppvae.Fit.load(str(run))


@pytest.mark.parametrize("name,why", [
    ("config.json", "is corrupted"),
    ("history.json", "is corrupted"),
    ("params.pt", "is corrupted or truncated"),
])
def test_a_truncated_file_is_named(run, name, why):
    data = (run / name).read_bytes()
    (run / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(ppvae.PPVAEError, match=rf"{name} {why}"):
        ppvae.Fit.load(str(run))


def test_a_truncated_checkpoint_is_named(saved_run, tmp_path, faithful):
    ck = tmp_path / "ck"
    shutil.copytree(saved_run / "ck", ck)
    (newest,) = sorted(ck.iterdir())
    newest.write_bytes(newest.read_bytes()[:100])
    with pytest.raises(ppvae.PPVAEError, match=r"checkpoint-000000003\.pt is corrupted or truncated"):
        ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=6, resume=str(ck), progress=False)


def test_foreign_but_safe_files_are_named(run, tmp_path):
    torch.save({"weights": torch.ones(2)}, run / "params.pt")
    with pytest.raises(ppvae.PPVAEError, match="params.pt is not a ppvae parameter file"):
        ppvae.Fit.load(str(run))
    torch.save({"step": 3}, tmp_path / "checkpoint-000000003.pt")
    with pytest.raises(ppvae.PPVAEError, match="is not a ppvae checkpoint"):
        load_checkpoint(str(tmp_path / "checkpoint-000000003.pt"))
    (run / "config.json").write_text("[1, 2]")
    with pytest.raises(ppvae.PPVAEError, match="config.json is not a ppvae run config"):
        ppvae.Fit.load(str(run))


def test_parameters_of_another_model_are_named(run):
    config = json.loads((run / "config.json").read_text())
    config["hparams"]["K"] = 3
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ppvae.PPVAEError, match="params.pt does not match model 'gmm'"):
        ppvae.Fit.load(str(run))
