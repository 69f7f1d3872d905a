"""What the package says (issue 31): one warning format with a third-party warning's source named, one summary
format and one labelling of scalars, unambiguous correlation headers, a Markdown table that a ``|`` in a label
does not break, and a summary of a model without global latents (PPCA) that is not an empty table."""

import re

import numpy as np
import torch

import ppvae
from ppvae._util.warning_format import warning_line, warning_source
from ppvae.cli import app
from ppvae.comparison.report import Comparison
from ppvae.models.ppca import PPCA
from ppvae.results.summary import summarize


def test_third_party_warnings_name_their_source(capsys):
    """Before: "ppvae: warning: invalid value encountered in scalar divide" read as ppvae's own verdict."""
    numpy_file = "/venv/lib/python3.11/site-packages/numpy/_core/fromnumeric.py"
    assert warning_source(numpy_file) == "numpy"
    assert warning_source("/x/site-packages/arviz/stats/diagnostics.py") == "arviz"
    assert warning_source("/work/ppvae/ppvae/evaluate/marginal.py") is None  # ppvae's own (editable install)
    assert warning_source("/x/site-packages/ppvae/evaluate/marginal.py") is None  # ppvae's own (installed)
    assert warning_source("/home/me/my_model.py") is None and warning_source(None) is None
    app._show_warning(RuntimeWarning("invalid value encountered\n  in scalar divide"), RuntimeWarning,
                      numpy_file, 3)
    app._show_warning(UserWarning("log_marginal: Pareto k-hat > 0.7"), UserWarning, "/w/ppvae/x.py", 1)
    assert capsys.readouterr().err.splitlines() == [
        "ppvae: warning: numpy: invalid value encountered in scalar divide",
        "ppvae: warning: log_marginal: Pareto k-hat > 0.7"]
    assert warning_line("a\n  b") == "ppvae: warning: a b"


def test_summary_labels_and_correlation_headers_are_whole():
    """Before: headers cut to 8 characters made corr[0,1,0] and corr[0,1,1] look alike; a Cholesky factor's
    entries (L[1,1] = sqrt(1 - rho^2)) were shown as if they were correlations."""
    g = torch.Generator().manual_seed(0)
    rho = torch.rand(1, 400, 2, generator=g) * 0.6 - 0.3
    L = torch.zeros(1, 400, 2, 2, 2)
    L[..., 0, 0] = 1.0
    L[..., 1, 0] = rho
    L[..., 1, 1] = (1 - rho ** 2).sqrt()
    s = summarize({"corr": L, "locs": torch.randn(1, 400, 2, 2, generator=g)}, method="nuts", correlations=True)
    assert [r["name"] for r in s.rows] == ["corr[0,1,0]", "corr[1,1,0]", "locs[0,0]", "locs[0,1]", "locs[1,0]",
                                           "locs[1,1]"]
    assert abs(s.row("corr[1,1,0]")["mean"] - float(rho[..., 1].mean())) < 1e-9
    header = s.to_text().split("correlations:\n")[1].splitlines()[0].split()
    assert header == [r["name"] for r in s.rows] and len(set(header)) == len(header)


def test_comparison_markdown_escapes_a_pipe_in_labels():
    """Before: the pair b|w[0] split its row into one cell too many."""
    records = [{"method": "nuts", "status": "ok", "posterior": {"b": {"mean": 1.0, "sd": 0.1}},
                "pairs": {"b|w[0]": {"corr": 0.5, "scale_dep": 0.1}}}]
    md = Comparison("m", "d", records).to_markdown()
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert "| b\\|w[0] | 0.5 / 0.1 |" in rows
    for table in re.split(r"\n\n+", md):
        lines = [line for line in table.splitlines() if line.startswith("|")]
        cells = {len(re.split(r"(?<!\\)\|", line)) for line in lines}
        assert len(cells) <= 1, table


def test_ppca_summary_shows_its_fitted_parameters(faithful):
    """Before: an empty table, "1 chain(s) x 0 draw(s)", no word why (PPCA's W, mu, sigma are parameters)."""
    fit = ppvae.fit(PPCA(latent_dim=1), faithful, steps=5, seed=0, progress=False, check_convergence=False)
    s = fit.summary(faithful)
    assert [r["name"] for r in s.rows] == ["W[0,0]", "W[1,0]", "mu[0]", "mu[1]", "sigma"]
    assert s.point and "no global latent sites" in s.notes[0]
    np.testing.assert_allclose(s.row("mu[1]")["mean"], float(fit.model.mu[1]), rtol=1e-6)
    assert "W[0,0]" in s.to_text() and "0 draw(s)" not in s.to_text()


def test_a_point_estimate_keeps_its_rows_in_the_comparison():
    """A point estimate's draws repeat one value: constant, but not to be dropped (auto_delta's column would be
    empty); a method with spread drops only its constant entries."""
    from ppvae.comparison.compare_methods import _summarize_draws

    point = {"locs": torch.tensor([[1.0, 2.0]]).expand(50, 2), "c": torch.ones(50)}
    assert {k: v["mean"] for k, v in _summarize_draws(point).items()} == {"locs[0]": 1.0, "locs[1]": 2.0, "c": 1.0}
    spread = {"locs": torch.randn(50, 2, generator=torch.Generator().manual_seed(0)), "c": torch.ones(50)}
    assert list(_summarize_draws(spread)) == ["locs[0]", "locs[1]"]
