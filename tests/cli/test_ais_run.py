"""`ppvae evaluate --method ais` and `ppvae bdmc` on a saved run: metrics.json, figures, one-line errors."""

import json

import pytest

from ppvae.cli.app import main


@pytest.fixture(scope="module")
def ppca_run(tmp_path_factory):
    """A PPCA run on Old Faithful with an amortized guide (it can propose for simulated points too)."""
    run = tmp_path_factory.mktemp("ais") / "ppca"
    assert main(["fit", "ppca", "latent_dim=1", "--data", "faithful", "--standardize", "--guide", "amortized",
                 "--steps", "30", "--lr", "0.01", "--out", str(run), "--quiet"]) == 0
    return run


def test_evaluate_with_ais_records_method_settings_and_the_is_comparison(ppca_run, capsys):
    before = json.loads((ppca_run / "metrics.json").read_text())
    assert main(["evaluate", str(ppca_run), "--method", "ais", "--steps", "4", "--chains", "4", "--num-particles", "50",
                 "--quiet"]) == 0
    metrics = json.loads((ppca_run / "metrics.json").read_text())
    entry = metrics["log_marginal"]
    assert entry["method"] == "ais" and entry["num_points"] == 272 and entry["num_particles"] == 4
    assert entry["settings"]["num_steps"] == 4 and entry["settings"]["schedule"] == "sigmoid"
    assert entry["is"]["num_particles"] == 50 and 0 < entry["accept_rate_mean"] <= 1
    assert all(metrics[k] == v for k, v in before.items() if k != "log_marginal")
    assert (ppca_run / "ais_vs_is.png").stat().st_size > 1000
    assert "log p(x) by AIS" in capsys.readouterr().out


def test_bdmc_command_writes_bounds_per_T(ppca_run, capsys):
    assert main(["bdmc", str(ppca_run), "--points", "10", "--steps", "3,6", "--chains", "4", "--quiet"]) == 0
    entry = json.loads((ppca_run / "metrics.json").read_text())["bdmc"]
    assert [r["num_steps"] for r in entry["rows"]] == [3, 6] and entry["num_points"] == 10
    assert (ppca_run / "bdmc.png").stat().st_size > 1000
    assert "upper" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["evaluate", "RUN", "--method", "ais", "--steps", "0"], "argument --steps: expected an integer >= 1"),
    (["evaluate", "RUN", "--method", "ais", "--chains", "0"], "argument --chains: expected an integer >= 1"),
    (["bdmc", "RUN", "--steps", "5,x"], "--steps: expected comma-separated integers"),
    (["bdmc", "RUN", "--points", "0"], "argument --points: expected an integer >= 1"),
])
def test_bad_ais_flags_are_one_line_exit_2(ppca_run, capsys, argv, message):
    before = (ppca_run / "metrics.json").read_text()
    assert main([str(ppca_run) if a == "RUN" else a for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert (ppca_run / "metrics.json").read_text() == before
