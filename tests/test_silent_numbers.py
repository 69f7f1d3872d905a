"""Numbers that used to come back silently wrong (issue 31): the evidence of a point-mass guide, and a fitted
mixture whose component holds no data point; and the package's LICENSE and py.typed."""

import configparser
import json
import pathlib
import warnings

import pytest
import torch

import ppvae
from ppvae import PPVAEError
from ppvae.cli import write as _run_write
from ppvae.model.mixture_check import EmptyComponentWarning, empty_components
from ppvae.models.gmm import GMM

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_log_evidence_refuses_an_auto_delta_fit_in_one_line(faithful):
    """Before: -1157.3366 with stderr 0.0 and ESS 1000, the log joint at the MAP, 17 nats above the evidence."""
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=5, seed=0, progress=False,
                    check_convergence=False)
    with pytest.raises(PPVAEError, match=r"^proposal: the guide is a point mass \(Delta\) at weights, locs") as info:
        ppvae.log_evidence(fit, faithful)
    assert "\n" not in str(info.value) and "auto_normal" in str(info.value)
    assert ppvae.log_evidence(fit, faithful, proposal="prior", num_particles=10).stderr > 0  # the prior has a density


def test_empty_components_are_the_ones_no_point_prefers():
    resp = torch.tensor([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    assert empty_components(resp) == [2]
    assert empty_components(torch.eye(3)) == []


def test_an_em_fit_with_a_dead_component_warns_and_names_it(faithful, tmp_path):
    """K = 3 on Old Faithful's two clusters, the third component started far from every point: EM drives its
    weight to ~1e-17. Before: mixture.png said w=0.00 and nothing warned; metrics.json did not say it."""
    init = {"weights": [0.5, 0.499, 0.001], "locs": [[2.0, 55.0], [4.3, 80.0], [3.0, 200.0]],
            "covs": [[[0.1, 0.0], [0.0, 30.0]]] * 3}
    result = ppvae.fit_em(GMM(K=3), faithful, init=init, max_iter=50)
    assert float(result.params["weights"][2]) < 1e-6
    with pytest.warns(EmptyComponentWarning, match=r"^gmm: mixture component\(s\) 2 \(weight 0.00\) of K=3 hold no"):
        metrics, figures = _run_write.write_em(str(tmp_path), "gmm", result, faithful)
    assert metrics["empty_components"] == [2] and not figures.failed
    assert json.loads((tmp_path / "metrics.json").read_text())["empty_components"] == [2]
    result = ppvae.fit_em(GMM(K=2), faithful, max_iter=50, seed=0)  # every component holds points: silent
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyComponentWarning)
        metrics, _ = _run_write.write_em(str(tmp_path / "k2"), "gmm", result, faithful)
    assert metrics["empty_components"] == []


def test_license_is_mit_and_py_typed_is_package_data():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 ppvae developers" in text
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["metadata"]["license"] == "MIT" and cfg["metadata"]["license_files"].strip() == "LICENSE"
    assert cfg["options.package_data"]["ppvae"].strip() == "py.typed"
    assert (ROOT / "ppvae" / "py.typed").exists()
