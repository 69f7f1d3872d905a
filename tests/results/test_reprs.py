"""Console and notebook views of results (issue 31): one-line reprs with the kind, shapes and headline numbers and
no tensor dumps (before: Dataset 7,807 characters, LogMarginal 10,434, MCMCResult 31,688 over 1,487 lines, Summary a
2,480-character dict), and an HTML table for Jupyter."""

import math

import torch

import ppvae
from ppvae.comparison.report import Comparison
from ppvae.evaluate.marginal import LogMarginal
from ppvae.infer.mcmc.sampler import MCMCResult
from ppvae.models.gmm import GMM
from ppvae.results.summary import summarize


def _one_line(text: str, limit: int = 300) -> None:
    assert "\n" not in text and len(text) <= limit, (len(text), text[:400])
    assert "tensor(" not in text


def _html_table(html: str, *cells: str) -> None:
    assert html.startswith("<table>") and html.count("<tr>") >= 2 and "tensor(" not in html
    for cell in cells:
        assert f"<td>{cell}</td>" in html or f"<th>{cell}</th>" in html, (cell, html[:500])


def test_dataset_repr_names_shape_and_columns_not_values(faithful):
    big = ppvae.Dataset(torch.rand(10_000, 784), torch.arange(10_000) % 10, name="images", kind="image")
    _one_line(repr(big))
    assert repr(big) == "Dataset(name='images', kind='image', points=10000, x=(10000, 784) float32, y=(10000,) labels)"
    assert repr(faithful).startswith("Dataset(name='faithful', kind='real', points=272, x=(272, 2) ")
    assert "columns=eruptions, waiting" in repr(faithful)
    _html_table(big._repr_html_(), "points", "10000", "(10000, 784) float32", "(10000,) labels")


def test_log_marginal_repr_has_the_headline_numbers():
    n = 5000
    values = torch.linspace(-5.0, -3.0, n, dtype=torch.float64)
    lm = LogMarginal(values=values, ess=torch.full((n,), 500.0, dtype=torch.float64),
                     khat=torch.full((n,), 0.2, dtype=torch.float64), elbo=values - 0.1,
                     mc_stderr=torch.full((n,), 0.01, dtype=torch.float64), num_particles=1000, proposal="guide",
                     chunk_size=100)
    text = repr(lm)
    _one_line(text)
    assert text.startswith(f"LogMarginal(is, 5000 points: mean -4.0000 +- {lm.stderr:.4f} (Monte Carlo ")
    assert "total -20000.00, 1000 samples/point, guide proposal, k-hat max 0.2)" in text
    _html_table(lm._repr_html_(), "mean log p(x_i) (nats)", "-4", "max Pareto k-hat", "0.2")


def test_summary_repr_and_html_table():
    g = torch.Generator().manual_seed(0)
    s = summarize({"locs": torch.randn(1, 1000, 40, 2, generator=g), "sigma": torch.rand(1, 1000, generator=g)},
                  method="svi:auto_normal")
    text = repr(s)
    _one_line(text)
    assert text.startswith("Summary(svi:auto_normal, 1 chain(s) x 1000 draw(s), 81 entries: locs[0,0] ")
    html = s._repr_html_()
    _html_table(html, "entry", "mean", "q5", "q95", "r_hat", "locs[0,0]", "locs[29,1]")
    assert "locs[30,0]" not in html and "first 60 of 81 entries shown" in html  # the rest named, not dropped silently


def test_mcmc_result_repr_is_shapes_and_headline_numbers():
    g = torch.Generator().manual_seed(0)
    samples = {"weights": torch.rand(4, 1000, 2, generator=g), "locs": torch.randn(4, 1000, 2, 2, generator=g),
               "z": torch.randint(0, 2, (4, 1000, 272), generator=g)}
    r = MCMCResult(GMM(K=2), None, samples, "nuts", 12.34, 3, {"num_data": 272})
    text = repr(r)
    _one_line(text)
    assert text == ("MCMCResult(gmm, nuts, 4 chains x 1000 draws, 3 divergences, 12.3 s; "
                    "sites weights[2], locs[2, 2], z[272])")
    _html_table(r._repr_html_(), "site", "weights", "2", "locs", "2x2", "z", "272")


def test_fit_and_comparison_html(faithful):
    fit = ppvae.fit(GMM(K=2), faithful, steps=3, seed=0, progress=False, check_convergence=False)
    _one_line(repr(fit))
    loss = fit.history["loss"][-1]
    _html_table(fit._repr_html_(), "svi:auto_normal", "steps", "3", f"{loss:.4g}")
    records = [{"method": "em", "status": "ok", "time_s": 0.5, "train_loglik": -1130.26, "test_loglik": None},
               {"method": "nuts", "status": "failed", "time_s": 2.0, "error": "boom"}]
    c = Comparison("gmm", "faithful", records)
    _one_line(repr(c))
    assert repr(c) == "Comparison(gmm on faithful: 2 methods: em ok, nuts failed)"
    _html_table(c._repr_html_(), "method", "em", "-1130", "nuts", "failed")
    assert math.isfinite(loss)
