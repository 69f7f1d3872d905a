"""User models everywhere a zoo model goes: import paths, the ppvae.models entry point group, runs that
record where their model comes from, and regression data (Dataset(x, y), --data file.csv:target=COLUMN)."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch

import ppvae
from ppvae.cli.app import main

ROOT = pathlib.Path(__file__).resolve().parents[1]

MODEL_SOURCE = textwrap.dedent('''
    import pyro, pyro.distributions as dist
    import ppvae

    class PlainMean(ppvae.Model):
        """a Normal mean, registered by entry point"""
        def forward(self, batch):
            mu = pyro.sample("mu", dist.Normal(batch.x.new_zeros(batch.x.shape[1]), 10.0).to_event(1))
            with self.data_plate(batch):
                pyro.sample("obs", dist.Normal(mu, 1.0).to_event(1), obs=batch.x)
''')


def _run(args, env=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "ppvae.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


@pytest.mark.slow
def test_entry_point_package_is_listed_and_fit_by_name(tmp_path):
    # a throwaway installed package: its module and a dist-info with entry_points.txt on PYTHONPATH,
    # which importlib.metadata discovers as an installed distribution
    site = tmp_path / "site"
    site.mkdir()
    (site / "thirdparty_models.py").write_text(MODEL_SOURCE)
    info = site / "thirdparty_models-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-models\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[ppvae.models]\nplain_mean = thirdparty_models:PlainMean\n")
    env = {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    listed = _run(["models"], env)
    assert listed.returncode == 0, listed.stderr
    assert "plain_mean" in listed.stdout and "a Normal mean, registered by entry point" in listed.stdout
    out = tmp_path / "run"
    fitted = _run(["fit", "plain_mean", "--data", "faithful", "--guide", "auto_delta", "--steps", "300", "--lr",
                   "0.5", "--quiet", "--out", str(out)], env)
    assert fitted.returncode == 0, fitted.stderr
    config = (out / "config.json").read_text()
    assert '"model": "plain_mean"' in config and '"model_import": "thirdparty_models:PlainMean"' in config
    # the fitted mean is the data mean (flat prior relative to the data): the MAP of a Normal mean
    fit = subprocess.run([sys.executable, "-c", f"import ppvae; f = ppvae.Fit.load({str(out)!r}); "
                          "print(f.global_values(ppvae.load_dataset('faithful'))['mu'].tolist())"],
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=300)
    assert fit.returncode == 0, fit.stderr
    mu = torch.tensor(eval(fit.stdout))
    x = ppvae.load_dataset("faithful").x
    n = len(x)
    # the posterior mode sum(x) / (n + 1/10^2) of the eruption column (the waiting column, at scale 70, is still
    # on its way after 300 Adam steps of 0.5, which the convergence check reports)
    assert abs(float(mu[0]) - float(x[:, 0].sum() / (n + 1 / 100))) < 0.01


@pytest.mark.slow
def test_run_of_unregistered_model_names_its_import_path_and_never_imports_it(tmp_path):
    marker = tmp_path / "imported.txt"
    model_file = tmp_path / "my_model.py"
    model_file.write_text(MODEL_SOURCE + f"\nopen({str(marker)!r}, 'w').write('imported')\n")
    out = tmp_path / "run"
    code = main(["fit", f"{model_file}:PlainMean", "--data", "faithful", "--guide", "auto_delta", "--steps", "20",
                 "--quiet", "--no-convergence-check", "--out", str(out)])
    assert code == 0 and marker.exists()
    marker.unlink()
    loaded = _run(["evaluate", str(out), "--num-particles", "10"])
    assert loaded.returncode == 2
    assert f"--import {model_file}:PlainMean" in loaded.stderr and "ppvae.import_model(" in loaded.stderr
    assert not marker.exists()  # loading named the file; it did not run it
    with_import = _run(["evaluate", str(out), "--num-particles", "10", "--import", f"{model_file}:PlainMean"])
    assert with_import.returncode == 0, with_import.stderr
    assert marker.exists()


def test_import_path_errors_are_one_line(tmp_path, capsys):
    assert main(["fit", "no_such_module_xyz:Model", "--data", "faithful", "--out", str(tmp_path / "a")]) == 2
    assert "no module named 'no_such_module_xyz'" in capsys.readouterr().err
    assert main(["fit", f"{ROOT / 'examples' / 'blr.py'}:Nope", "--data", "faithful", "--out",
                 str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "has no attribute 'Nope'" in err and "BayesianLinearRegression" in err
    with pytest.raises(ppvae.PPVAEError, match="is not registered in this process"):
        ppvae.build_model("somewhere/else.py:Model")


# -- regression data ------------------------------------------------------------------------------------
def test_dataset_with_real_response():
    x, y = torch.randn(10, 3), torch.randn(10)
    ds = ppvae.Dataset(x, y)
    assert ds.has_response and ds.y.dtype == torch.get_default_dtype()
    assert torch.equal(ds.batch(torch.tensor([2, 5])).y, y[[2, 5]])
    labels = ppvae.Dataset(x, torch.tensor([0, 1] * 5))
    assert not labels.has_response and labels.y.dtype == torch.long
    with pytest.raises(ppvae.PPVAEError, match="response y of 'custom': expected 10 values"):
        ppvae.Dataset(x, torch.randn(9))
    with pytest.raises(ppvae.PPVAEError, match="response y of 'custom': expected finite"):
        ppvae.Dataset(x, torch.tensor([float("nan")] * 10))
    with pytest.raises(ppvae.PPVAEError, match="labels_per_class: needs a data set with class labels"):
        ds.hide_labels(1)


def test_csv_target_by_name_and_index(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,price\n1,2,3.5\n4,5,6.5\n7,8,9.5\n")
    by_name = ppvae.load_dataset(f"{path}:target=price")
    assert torch.equal(by_name.y, torch.tensor([3.5, 6.5, 9.5])) and by_name.x.shape == (3, 2)
    assert by_name.meta["columns"] == ["a", "b"] and by_name.meta["target"] == "price"
    by_index = ppvae.load_dataset(f"{path}:target=0")
    assert torch.equal(by_index.y, torch.tensor([1.0, 4.0, 7.0])) and by_index.meta["columns"] == ["b", "price"]
    with pytest.raises(ppvae.PPVAEError, match="target: expected a column of .*a, b, price.*got 'cost'"):
        ppvae.load_dataset(f"{path}:target=cost")
    with pytest.raises(ppvae.PPVAEError, match="target: expected a column index in 0..2"):
        ppvae.load_dataset(f"{path}:target=5")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,y\n1,2\n3,cheap\n")
    with pytest.raises(ppvae.PPVAEError, match="expected numeric CSV values"):
        ppvae.load_dataset(f"{bad}:target=y")


def test_module_form_fits_and_mcmc_writes_labelled_figures(tmp_path, monkeypatch, capsys):
    # package.module:Class resolves against the working directory, as `python -m` does (here the repository root)
    monkeypatch.chdir(ROOT)
    data = f"{ROOT / 'examples' / 'data' / 'regression.csv'}:target=y"
    out = tmp_path / "nuts"
    code = main(["mcmc", "examples.blr:BayesianLinearRegression", "noise_sd=0.5", "--data", data, "--chains", "1",
                 "--num-draws", "30", "--warmup", "20", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert (out / "trace.png").stat().st_size > 0 and (out / "rank.png").stat().st_size > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "blr" and metrics["model_import"] == "examples.blr:BayesianLinearRegression"
