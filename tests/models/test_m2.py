"""The semi-supervised M2 VAE: its objective against a hand enumeration, label handling, a small
accuracy check, and errors. (The 100-label mnist5k run is benchmarks/bench_m2.py.)"""

import math

import pyro
import pytest
import torch

import ppvae
from ppvae.models import M2


def _toy(n=6, d=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, d, generator=g) < 0.4).float()
    y = torch.tensor([2, -1, 0, -1, 1, -1])[:n]
    return ppvae.Dataset(x, y, name="toy", kind="binary")


def _labeled_elbo(model, x, y, eps):
    """log p(x | y, z) + log p(y) + log p(z) - log q(z | x, y) at z = mu + sigma * eps (Kingma et al. 2014, eq. 6)."""
    _, enc, dec = model._nets
    h = enc(x, y)
    loc, scale = h[..., :3], torch.nn.functional.softplus(h[..., 3:]) + model.min_scale
    z = loc + scale * eps
    log_px = torch.distributions.Bernoulli(logits=dec(z, y)).log_prob(x).sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    return log_px + math.log(1 / 3) + log_pz - torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)


def test_objective_is_eq_6_for_labeled_and_eq_7_for_unlabeled_points():
    """TraceEnum_ELBO's loss equals, with the same noise eps (one draw per point and class), the sum of
    L(x, y) (eq. 6) over labeled points and sum_y q(y|x) L(x, y) + H(q(y|x)) (eq. 7) over unlabeled ones."""
    data = _toy()
    torch.manual_seed(0)
    model = M2(num_classes=3, latent_dim=3, hidden=8, aux_weight=0.0)
    model.setup(data)
    batch = data.batch()
    with torch.no_grad(), pyro.validation_enabled(False):
        pyro.set_rng_seed(5)
        loss = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1).loss(model.enumerated(), model.guide, batch)
        pyro.set_rng_seed(5)
        eps = torch.randn(3, len(batch), 3)  # the guide's one draw of z, for every enumerated class
        per_y = torch.stack([_labeled_elbo(model, batch.x, torch.full((len(batch),), c), eps[c]) for c in range(3)])
        q = model.predict_proba(batch.x).T  # (3, M)
        unlabeled = (q * per_y).sum(0) - (q * q.log()).sum(0)
        labeled = per_y.gather(0, batch.y.clamp_min(0).unsqueeze(0)).squeeze(0)
        total = torch.where(batch.y >= 0, labeled, unlabeled).sum().item()
    assert loss == pytest.approx(-total, rel=1e-5)


def test_classification_term_weights_labeled_points():
    """aux_weight alpha adds alpha * N / N_labeled * log q(y_i | x_i) per labeled point (eq. 9)."""
    data = _toy()
    torch.manual_seed(0)
    model = M2(num_classes=3, latent_dim=3, hidden=8, aux_weight=0.5)
    model.setup(data)
    assert model.label_weight == pytest.approx(0.5 * 6 / 3)
    tr = pyro.poutine.trace(model).get_trace(data.batch())
    log_q = model.predict_proba(data.x).log()
    expected = sum(model.label_weight * log_q[i, data.y[i]].item() for i in range(6) if data.y[i] >= 0)
    site = tr.nodes["classify"]
    assert site["fn"].log_prob(site["value"]).sum().item() == pytest.approx(expected, rel=1e-5)


def test_few_labels_train_a_useful_classifier():
    """Digits 0, 1 and 7 from mnist5k (300 train images, 10 labels per class, 12 epochs, aux_weight 1,
    i.e. 10 x log q(y|x) per labeled point): q(y|x) reaches >= 85% accuracy on 150 held-out images of
    those classes (chance: 33%; measured 94-95% for seeds 0 and 1)."""
    keep = torch.tensor([0, 1, 7])
    train = ppvae.load_dataset("mnist5k", split="train")
    test = ppvae.load_dataset("mnist5k", split="test")

    def pick(ds, n):
        idx = torch.nonzero(torch.isin(ds.y, keep)).squeeze(-1)[:n]
        out = ds.subset(idx)
        out.y = torch.bucketize(out.y, keep)  # 0, 1, 7 -> 0, 1, 2
        return out

    train, test = pick(train, 300).hide_labels(10, seed=0), pick(test, 150)
    assert int((train.y >= 0).sum()) == 30
    model = M2(num_classes=3, latent_dim=8, hidden=64, aux_weight=1.0)
    fit = ppvae.fit(model, train, epochs=12, batch_size=50, lr=3e-3, seed=0, progress=False)
    assert fit.elbo_name == "enum"
    assert model.accuracy(test) >= 0.85


def test_bad_labels_and_pixels_are_clear_errors():
    data = _toy()
    bad = ppvae.Dataset(data.x, torch.tensor([0, 1, 2, 3, -1, 0]), kind="binary")
    expected = r"labels: m2 expects classes -1 \(unlabeled\) or 0..2; got values in \[-1, 3\]"
    with pytest.raises(ppvae.PPVAEError, match=expected):
        ppvae.fit(M2(num_classes=3, hidden=4, latent_dim=2), bad, steps=1, progress=False)
    bad = ppvae.Dataset(data.x, torch.tensor([0, 1, 2, -2, -1, 0]), kind="binary")
    with pytest.raises(ppvae.PPVAEError, match="labels"):
        ppvae.fit(M2(num_classes=3, hidden=4, latent_dim=2), bad, steps=1, progress=False)
    grey = ppvae.Dataset(data.x * 0.5, data.y, kind="binary")
    with pytest.raises(ppvae.PPVAEError, match="binary pixels"):
        ppvae.fit(M2(num_classes=3, hidden=4, latent_dim=2), grey, steps=1, progress=False)
    with pytest.raises(ppvae.PPVAEError, match="labels_per_class: expected an integer >= 0; got -1"):
        data.hide_labels(-1)


def test_cli_keeps_labels_per_class_and_fits_m2(tmp_path):
    """``--data mnist5k:labels_per_class=10``: 100 labels kept (10 per class), the rest -1; the fit runs traced."""
    import json

    from ppvae.cli.app import main

    data = ppvae.load_dataset("mnist5k", split="train", labels_per_class="10", label_seed="3")
    kept = data.y[data.y >= 0]
    assert len(kept) == 100 and torch.equal(torch.bincount(kept), torch.full((10,), 10))
    assert torch.equal(data.y, ppvae.load_dataset("mnist5k", split="train", labels_per_class=10, label_seed=3).y)
    out = tmp_path / "m2"
    rc = main(["fit", "m2", "hidden=16", "latent_dim=4", "--data", "mnist5k:labels_per_class=10", "--steps", "3",
               "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["train"]["jit"] is True and metrics["elbo"] == "enum"


def test_class_samples_put_one_class_per_row_with_shared_styles():
    """Row block c of class_samples(n) is the decoder at (z_j, y = c) for the same n draws z_j."""
    model = M2(num_classes=3, hidden=8, latent_dim=2)
    model.setup(_toy())
    images = model.class_samples(4, torch.Generator().manual_seed(5))
    z = torch.randn(4, 2, generator=torch.Generator().manual_seed(5))
    for c in range(3):
        expected = torch.sigmoid(model._nets[2](z, torch.full((4,), c)))
        torch.testing.assert_close(images[4 * c : 4 * c + 4], expected)


def test_cli_prints_held_out_accuracy_and_draws_classes_as_rows(tmp_path, capsys, monkeypatch):
    """`ppvae fit m2 --data mnist5k:...` prints the accuracy on mnist5k's 1,000 test images (before: no
    accuracy at all) and keeps it in metrics.json; samples.png has one row per class, named on its y
    axis; latent.png is coloured by argmax q(y|x), not by the labels (-1 for 3,900 of 4,000 points)."""
    import json

    from ppvae.cli.app import main
    from ppvae.plots import figures as plots

    figs = {}
    for name in ("plot_image_grid", "plot_latent_2d"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _real=real, _n=name, **k: figs.setdefault(_n, []).append(
            _real(*a, **k)))
    out = tmp_path / "m2"
    assert main(["fit", "m2", "hidden=16", "latent_dim=4", "--data", "mnist5k:labels_per_class=10", "--steps", "3",
                 "--out", str(out), "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_test"] == 1000 and 0.0 <= metrics["accuracy_test"] <= 1.0
    line = (f"m2: test accuracy of argmax q(y|x) = {metrics['accuracy_test']:.4f} on the 1000 held-out images of "
            "mnist5k (split=test)")
    assert line in capsys.readouterr().out.splitlines()
    grid = figs["plot_image_grid"][-1].axes[0]  # reconstructions.png first, then samples.png
    assert [t.get_text() for t in grid.get_yticklabels()] == [str(c) for c in range(10)]
    assert grid.get_ylabel() == "class y" and "row = class y" in grid.get_title()
    assert figs["plot_latent_2d"][0].axes[0].get_legend().get_title().get_text() == "argmax q(y|x)"
    assert (out / "samples.png").exists() and (out / "latent.png").exists()
