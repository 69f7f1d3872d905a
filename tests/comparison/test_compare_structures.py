"""compare on models whose rows are not plain i.i.d. points (issue 29, ppvae/comparison/held_out.py): groups,
one sequence, plates of different sizes, a model that does not broadcast over draws; methods that cannot apply.
Short SVI runs: these check what compare does with each structure, not the quality of the fits."""

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch

import ppvae

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
EX = ROOT / "examples"


def _by_method(table):
    return {r["method"]: r for r in table.records}


@pytest.mark.slow
def test_groups_are_not_split_and_are_scored_by_loo_em_is_skipped_with_its_reason():
    schools = ppvae.import_model(str(EX / "eight_schools.py:EightSchools"))
    data = ppvae.load_dataset(str(EX / "data" / "schools.csv"))
    table = ppvae.compare(schools(), data, "svi:auto_normal,em", svi_steps=200, svi_lr=0.05, num_draws=200)
    rec = _by_method(table)
    assert rec["em"]["status"] == "skipped" and "does not declare ClosedFormEM" in rec["em"]["error"]
    svi = rec["svi:auto_normal"]
    assert svi["status"] == "ok" and svi["test_loglik"] is None and math.isfinite(svi["elpd_loo"])
    assert {"eta[0]", "mu", "tau"} <= set(svi["posterior"])  # the group effects are compared as globals
    assert table.settings["num_train"] == 8 and table.settings["num_test"] == 0
    assert any("PSIS-LOO over the 8 groups" in n for n in table.settings["notes"])


@pytest.mark.slow
def test_one_sequence_is_neither_split_nor_left_out():
    hmm = ppvae.import_model(str(EX / "hmm.py:HMM"))
    data = ppvae.load_dataset(str(EX / "data" / "hmm.csv"))
    table = ppvae.compare(hmm(), data, "svi:auto_mvn", svi_steps=100, svi_lr=0.05, num_draws=100)
    svi = _by_method(table)["svi:auto_mvn"]
    assert svi["status"] == "ok" and svi["test_loglik"] is None and "elpd_loo" not in svi
    assert math.isfinite(svi["train_loglik"])
    assert any("no held-out part and no PSIS-LOO: the data are one sequence" in n for n in table.settings["notes"])


@pytest.mark.slow
def test_two_plates_of_different_sizes_compare():
    annotation = ppvae.import_model(str(EX / "annotation.py:DawidSkene"))
    data = ppvae.load_dataset(str(EX / "data" / "annotation.csv"))  # 40 items x 4 annotators
    table = ppvae.compare(annotation(), data, "svi:auto_normal", svi_steps=100, svi_lr=0.05, num_draws=100)
    svi = _by_method(table)["svi:auto_normal"]
    assert svi["status"] == "ok", svi["error"]
    assert table.settings["num_test"] == 8 and math.isfinite(svi["test_loglik"]) and math.isfinite(svi["elpd_loo"])


class _NaiveHierLogistic(ppvae.Model):
    """Group intercepts b (G,) as one vector indexed b[..., g]: with draws b is (S, 1, G), so b[..., g] is
    (S, 1, N) and the packing fails ("Invalid tensor shape", issue 29); compare goes draw by draw."""

    def forward(self, batch):
        x = batch.x
        b = pyro.sample("b", dist.Normal(x.new_zeros(3), 1.0).to_event(1))
        with self.data_plate(batch):
            pyro.sample("y", dist.Bernoulli(logits=b[..., x[:, 0].long()] + x[:, 1]), obs=batch.y)


def test_a_model_that_does_not_broadcast_is_compared_draw_by_draw():
    g = torch.Generator().manual_seed(0)
    x = torch.stack([torch.arange(30) % 3, torch.randn(30, generator=g)], -1).float()
    y = torch.bernoulli(torch.sigmoid(x[:, 1] + torch.tensor([-1.0, 0.0, 1.0])[x[:, 0].long()]), generator=g)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        table = ppvae.compare(_NaiveHierLogistic(), ppvae.Dataset(x, y), "svi:auto_normal", svi_steps=20,
                              num_draws=20)
    svi = _by_method(table)["svi:auto_normal"]
    assert svi["status"] == "ok", svi["error"]
    assert math.isfinite(svi["test_loglik"]) and math.isfinite(svi["elpd_loo"])
    assert any("draw by draw" in str(w.message) for w in caught)
