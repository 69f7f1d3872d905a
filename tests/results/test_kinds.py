"""``ppvae.load`` and the registry of result kinds (ppvae/results/kinds.py): every kind round-trips through a
run directory, and nothing outside the registry branches on a kind's name."""

import ast
import os

import pytest
import torch
from _helpers import REPO_ROOT

import ppvae
from ppvae.models import GMM, LDA

ROOT = str(REPO_ROOT)
KIND_NAMES = {"svi", "em", "mcmc", "cavi"}


@pytest.fixture(scope="module")
def faithful():
    return ppvae.load_dataset("faithful")


def test_every_bundled_kind_is_registered():
    assert KIND_NAMES <= set(ppvae.list_kinds())


def test_svi_round_trips(tmp_path, faithful):
    fit = ppvae.fit(GMM(K=2), faithful, guide="auto_delta", steps=5, seed=0, progress=False)
    fit.save(str(tmp_path / "svi"))
    back = ppvae.load(tmp_path / "svi")
    assert type(back) is ppvae.Fit and back.method == fit.method
    torch.testing.assert_close(back.log_likelihood(faithful), fit.log_likelihood(faithful))


def test_em_round_trips(tmp_path, faithful):
    em = ppvae.fit_em(GMM(K=2), faithful, restarts=1, max_iter=5, seed=0)
    em.save(str(tmp_path / "em"))
    back = ppvae.load(str(tmp_path / "em"))
    assert type(back) is ppvae.EMFit
    torch.testing.assert_close(back.log_likelihood(faithful), em.log_likelihood(faithful))


def test_mcmc_round_trips(tmp_path, faithful):
    run = ppvae.run_mcmc(GMM(K=2), faithful, num_draws=5, warmup=5, seed=0, progress=False)
    run.save(str(tmp_path / "mcmc"))
    back = ppvae.load(tmp_path / "mcmc")
    assert type(back) is ppvae.MCMCResult
    for site, draws in run.samples.items():
        torch.testing.assert_close(back.samples[site], draws)


def test_cavi_round_trips_as_a_plug_in_kind(tmp_path):
    counts = torch.tensor([[3.0, 0, 1, 0], [0, 2, 0, 4], [1, 1, 1, 1], [5, 0, 0, 1], [0, 3, 2, 0]])
    fit = LDA(topics=2).fit_cavi(ppvae.Dataset(counts, kind="counts"), max_iter=5, seed=0)
    fit.save(str(tmp_path / "cavi"))
    back = ppvae.load(tmp_path / "cavi")
    assert type(back) is type(fit) and back.method == "cavi"
    torch.testing.assert_close(back.lam, fit.lam)


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(ppvae.PPVAEError, match="run_dir: expected a run directory"):
        ppvae.load(tmp_path / "absent")
    with pytest.raises(ppvae.PPVAEError, match="run_dir: expected a run directory"):
        ppvae.load(None)
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text(
        '{"ppvae_version": "%s", "kind": "nonesuch", "model": "gmm", "hparams": {}, "data": {}}' % ppvae.__version__)
    with pytest.raises(ppvae.PPVAEError, match="kind: expected one of .*svi.*; got 'nonesuch'"):
        ppvae.load(tmp_path / "odd")


def _kind_dispatch(path: str) -> list[tuple[int, str]]:
    """Comparisons of a kind with a kind's name, and dict literals keyed only by kinds' names: dispatch on kinds."""
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read(), path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            consts += [e for c in node.comparators if isinstance(c, (ast.Tuple, ast.Set, ast.List)) for e in c.elts
                       if isinstance(e, ast.Constant)]
            names = {c.value for c in consts} & KIND_NAMES
            sides = [node.left, *node.comparators]
            about_kind = any("kind" in ast.unparse(s) for s in sides)
            if names and about_kind:
                found.append((node.lineno, ast.unparse(node)))
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if len(keys) >= 2 and keys <= KIND_NAMES:  # a table by kind (the CLI's table of commands is not)
                found.append((node.lineno, "dict keyed by kinds"))
    return found


def test_no_dispatch_on_kind_names_outside_the_registry():
    bad = []
    for top in ("ppvae", "models"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for f in files:
                path = os.path.join(dirpath, f)
                if f.endswith(".py") and not path.endswith(os.path.join("results", "kinds.py")):
                    bad += [(os.path.relpath(path, ROOT), line, text) for line, text in _kind_dispatch(path)]
    assert not bad, f"dispatch on result-kind names outside ppvae/results/kinds.py: {bad}"
