"""``ppvae predict --impute``: the missing (NaN) cells of a CSV filled from a saved run's posterior predictive."""

import numpy as np
import pytest
import torch

from ppvae.cli.app import main


def _csv(path, x):
    rows = ["a,b,c,d"] + [",".join("" if np.isnan(v) else f"{v:.6f}" for v in r) for r in x]
    path.write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_predict_impute_fills_the_missing_cells(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(60, 1, generator=g) * torch.tensor([[1.0, 2.0, -1.0, 0.5]])
         + 0.1 * torch.randn(60, 4, generator=g)).numpy().astype(float)
    holes = x.copy()
    holes[:10, 1] = np.nan
    _csv(tmp_path / "holes.csv", holes)
    # fitted on the incomplete data itself: each point's q(z_i) sees its observed cells only, never the held-out ones
    run = tmp_path / "run"
    assert main(["fit", "ppca", "latent_dim=1", "--data", str(tmp_path / "holes.csv"), "--steps", "1500", "--lr",
                 "0.02", "--out", str(run), "--quiet", "--no-convergence-check"]) == 0
    out = tmp_path / "imp.npz"
    assert main(["predict", str(run), "--impute", "--num-draws", "200", "--out", str(out)]) == 0
    assert "10 missing entries" in capsys.readouterr().out
    got = np.load(out)
    assert got["mean"].shape == (60, 4) and got["draws"].shape == (200, 60, 4) and not got["mask"][:10, 1].any()
    np.testing.assert_allclose(got["mean"][10:], x[10:], atol=1e-5)  # observed cells returned as they were
    # column b is about 2 a: the completion follows the observed a, far better than the column mean
    err = np.abs(got["mean"][:10, 1] - x[:10, 1]).mean()
    assert err < 0.5 * np.abs(x[:10, 1] - x[10:, 1].mean()).mean()


def test_predict_impute_without_missing_values_is_one_line(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(30, 4))
    _csv(tmp_path / "full.csv", x)
    run = tmp_path / "run"
    assert main(["fit", "ppca", "latent_dim=1", "--data", str(tmp_path / "full.csv"), "--steps", "20",
                 "--out", str(run), "--quiet", "--no-convergence-check"]) == 0
    capsys.readouterr()
    rc = main(["predict", str(run), "--impute", "--out", str(tmp_path / "i.npz")])
    err = capsys.readouterr().err
    assert rc == 2 and "has no missing values" in err and err.count("\n") == 1
