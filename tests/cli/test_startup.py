"""``ppvae --help``, ``--version``, ``models`` and ``datasets`` start without the engine (issue 31).

Deterministic, not timed: a fresh interpreter runs those command lines and must end with no torch, Pyro, NumPy,
matplotlib or ArviZ imported; the static catalogue they print must equal the live registries, entry for entry;
the fast path must print exactly what the engine's command line prints. The wall times are measured by
``benchmarks/bench_startup.py``.
"""

import json
import os
import pprint
import subprocess
import sys
import warnings

import pytest
import torch
from _helpers import finish, start

import ppvae
from ppvae.cli import app, catalogue, entry
from ppvae.cli.models import live_models
from ppvae.data.loaders import list_datasets
from ppvae.infer.svi.guides import list_guides
from ppvae.infer.svi.objectives import list_elbos
from ppvae.model.importing import ENTRY_POINT_GROUP

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("torch", "pyro", "numpy", "matplotlib", "arviz", "scipy", "pandas")
FAST = (["--help"], ["models"], ["datasets"], ["--version"], ["fit", "--help"], [])

# Runs every fast command line through the console script's function in one fresh interpreter, then reports
# which heavy modules got imported. stdout is swallowed; the exit codes and the imports are written to argv[1].
PROBE = """
import contextlib, io, json, sys
from ppvae.cli import main
codes = []
for argv in json.loads(sys.argv[2]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(main(argv))
        except SystemExit as exc:  # --help and --version exit from argparse
            codes.append(exc.code)
heavy = sorted(m for m in json.loads(sys.argv[3]) if m in sys.modules)
open(sys.argv[1], "w").write(json.dumps({"codes": codes, "heavy": heavy}))
"""


def _mismatch(name: str, static, live) -> str:
    return (f"ppvae/cli/catalogue.py: {name} differs from the live registry; paste this:\n"
            f"{name} = {pprint.pformat(live, width=116)}")


@pytest.fixture
def zoo_only(monkeypatch):
    """The registry as a fresh process has it: models that other tests registered (examples/ imported in this
    process) are not the zoo, and the static catalogue never lists them."""
    import ppvae.model.base as base

    live = base.list_models()  # loads the zoo first
    zoo = {n: base.get_model_class(n) for n in live if base.get_model_class(n).__module__.startswith("ppvae.models.")}
    monkeypatch.setattr(base, "_MODELS", zoo)


def test_static_catalogue_equals_the_live_registries(zoo_only):
    assert catalogue.MODELS == live_models(), _mismatch("MODELS", catalogue.MODELS, live_models())
    assert catalogue.DATASETS == list_datasets(), _mismatch("DATASETS", catalogue.DATASETS, list_datasets())
    assert catalogue.GUIDES == tuple(list_guides()), _mismatch("GUIDES", catalogue.GUIDES, tuple(list_guides()))
    assert catalogue.ELBOS == tuple(list_elbos()), _mismatch("ELBOS", catalogue.ELBOS, tuple(list_elbos()))
    assert entry.ENTRY_POINT_GROUP == ENTRY_POINT_GROUP


def test_fast_commands_import_no_heavy_module(tmp_path):
    report = tmp_path / "report.json"
    proc = start([sys.executable, "-c", PROBE, str(report), json.dumps(FAST), json.dumps(HEAVY)], cwd=ROOT)
    code, _, err = finish(proc)
    assert code == 0, err
    result = json.loads(report.read_text())
    assert result["codes"] == [0, 0, 0, 0, 0, 2]  # no command at all is a usage error
    assert result["heavy"] == [], f"imported by --help/models/datasets/--version: {result['heavy']}"


def test_python_m_and_import_ppvae_load_no_torch():
    code = ("import sys, ppvae, ppvae.cli; print(ppvae.__version__, "
            "sorted(m for m in ('torch', 'pyro', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.stdout.split() == [ppvae.__version__, "[]"], out.stderr


@pytest.mark.parametrize("argv", FAST, ids=lambda a: " ".join(a) or "no-command")
def test_fast_path_prints_what_the_engine_prints(argv, capsys, zoo_only):
    def run(main):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        return (code, *capsys.readouterr())

    assert run(entry.main) == run(app.main)


def test_import_goes_to_the_engine(capsys):
    assert entry.main(["models", "--import", os.path.join(ROOT, "examples", "blr.py")]) == 0
    assert "blr" in capsys.readouterr().out  # only the live registry knows a user's model


def test_public_names_load_on_first_use():
    exported = [n for names in ppvae._EXPORTS.values() for n in names]
    assert sorted(exported) == sorted(ppvae.__all__) and len(exported) == len(set(exported))
    assert set(ppvae.__all__) <= set(dir(ppvae))
    assert all(getattr(ppvae, n) is not None for n in ppvae.__all__)
    assert ppvae.models.__name__ == "ppvae.models" and ppvae.infer.__name__ == "ppvae.infer"
    with pytest.raises(AttributeError, match="no attribute 'fitt'"):
        ppvae.fitt  # noqa: B018


def test_warning_inside_a_renamed_function_points_at_the_caller():
    """``fit_em`` is wrapped by ``@renamed``; its warning about a constant column must name this file and line
    (it named ppvae/_util/validation.py, the wrapper's file), so a user sees their own call."""
    x = torch.tensor([[0.0, 1.0], [0.5, 1.0], [3.0, 1.0], [3.5, 1.0]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        ppvae.fit_em(ppvae.build_model("gmm", K=2, covariance="diag"), x, restarts=1, max_iter=3)
    ours = [w for w in caught if "hold one value" in str(w.message)]
    assert ours, [str(w.message) for w in caught]
    assert ours[0].filename == __file__ and ours[0].lineno == line
