"""The documentation's promises about the code: the doctest examples of the main public functions run and print
what their docstrings say, and every public name (``ppvae.__all__`` and each public subpackage's ``__all__``) has
an entry in the API reference that the docs build generates (docs/_ext/api_pages.py), with a docstring.

The docs build itself (``python -m sphinx -W --keep-going -b html docs docs/_build/html``, run by ``.ci/run``)
checks that every entry renders and every cross-reference resolves."""

import doctest
import importlib
import pkgutil
import re
import sys
from pathlib import Path

import pytest
import torch

import ppvae

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))
import api_pages  # noqa: E402

# the main public functions whose docstrings carry a runnable example (issue 28)
DOCTESTED = {"fit": ppvae.fit, "fit_em": ppvae.fit_em, "log_marginal": ppvae.log_marginal,
             "log_evidence": ppvae.log_evidence, "run_mcmc": ppvae.run_mcmc, "compare": ppvae.compare,
             "Result.predict": ppvae.Result.predict, "load_dataset": ppvae.load_dataset}


@pytest.mark.parametrize("name", [pytest.param(name, marks=[] if name == "load_dataset" else pytest.mark.slow)
                                  for name in DOCTESTED])  # each fits a model: a few seconds
def test_docstring_example_runs(name):
    """The docstring's `>>>` example runs (one thread, as documented) and prints exactly what it shows."""
    tests = doctest.DocTestFinder(recurse=False).find(DOCTESTED[name], name, globs={})
    assert tests and tests[0].examples, f"{name}: no doctest example in its docstring"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for test in tests:
            runner.run(test)
    finally:
        torch.set_num_threads(threads)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (output above)"


def _generated(tmp_path) -> str:
    api_pages.write_pages(tmp_path)
    return "\n".join(p.read_text() for p in sorted(tmp_path.glob("*.rst")))


def _documented_paths(text: str) -> set[str]:
    """Every dotted name the pages give an entry: full autodoc entries and the short entries of other paths."""
    full = set(re.findall(r"^\.\. auto(?:function|class|exception|module):: (\S+)$", text, flags=re.M))
    short = {f"{module}.{name}" for name, module in
             re.findall(r"^\.\. py:(?:function|class|exception|data):: (\S+)\n   :module: (\S+)$", text, flags=re.M)}
    return full | short


def test_every_public_subpackage_has_a_page():
    """A subpackage of ppvae with an `__all__` (not private) is listed in api_pages.SUBPACKAGES."""
    found = {info.name for info in pkgutil.walk_packages(ppvae.__path__, "ppvae.")
             if info.ispkg and not any(part.startswith("_") for part in info.name.split("."))
             and hasattr(importlib.import_module(info.name), "__all__")}
    assert found <= set(api_pages.SUBPACKAGES), found - set(api_pages.SUBPACKAGES)


def test_every_public_name_has_an_api_entry(tmp_path):
    """Each name of ppvae.__all__ and of every public subpackage's __all__ has an entry under its own path, and
    the entry names that same object; every fully documented object has a docstring of its own."""
    text = _generated(tmp_path)
    documented = _documented_paths(text)
    for package, names in api_pages.public_names().items():
        for name in names:
            path = f"{package}.{name}"
            assert path in documented, f"{path} has no entry in the API reference"
    for path in documented:
        parent, name = path.rsplit(".", 1)
        assert hasattr(importlib.import_module(parent), name), f"the API reference names {path}, which does not exist"
    for path in set(re.findall(r"^\.\. auto(?:function|class|exception):: (\S+)$", text, flags=re.M)):
        parent, name = path.rsplit(".", 1)
        obj = getattr(importlib.import_module(parent), name)
        assert (obj.__doc__ or "").strip(), f"{path} has no docstring"
    assert len(api_pages.public_names()["ppvae"]) == len(ppvae.__all__) >= 50
