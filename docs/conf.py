"""Sphinx configuration of ppvae's documentation (MyST Markdown pages, myst-nb tutorials, autodoc API reference).

Build (offline, warnings as errors): ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ppvae  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent / "_ext"))
import api_pages  # noqa: E402

# the API reference is generated from the public names' __all__ at every build (docs/api/, not committed)
api_pages.write_pages(Path(__file__).parent / "api")

project = "ppvae"
author = "the ppvae developers"
copyright = "2026, the ppvae developers"
release = ppvae.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",  # MyST Markdown pages and executed tutorials (myst-parser comes with it)
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx-mathjax-offline",  # MathJax copied into _static: the site renders math without a network
]

source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "jupyter_execute"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# Tutorials: executed at every build (no cache, so a broken tutorial fails the build), one kernel per page.
nb_execution_mode = "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

# API reference
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# Every cross-reference must resolve (warnings are errors in the build); names of other libraries cannot be
# resolved offline (no intersphinx inventories), so they are ignored by pattern.
nitpicky = True
# a type hint naming a class that ppvae exports under several paths (``Batch``: ppvae.Batch, ppvae.data.Batch) is
# not broken: the first target is taken; this silences only that ambiguity warning
suppress_warnings = ["ref.python"]
nitpick_ignore_regex = [
    (r"py:.*", r"ppvae\.(.*\.)?_.*"),  # private modules and names are not part of the reference
    (r"py:.*", r"(torch|pyro|numpy|np|arviz|az|matplotlib|scipy|sklearn|pandas|xarray|collections|typing|"
               r"pathlib|os|io|argparse|concurrent|dataclasses|abc|enum|json|contextlib|types|nn)(\..*)?"),  # nn: torch.nn
    (r"py:.*", r"(int|float|str|bool|bytes|dict|list|tuple|set|callable|object|None|type|Tensor|Path|"
               r"Callable|Sequence|Mapping|Iterable|Iterator|Any|Optional|Union|Literal|ndarray|array_like|"
               r"optional|default|PathLike|Figure|Axes|Exception|ValueError|TypeError|RuntimeError|Warning|UserWarning)"),
]

html_theme = "furo"
html_title = f"ppvae {release}"
html_static_path = ["_static"]
html_theme_options = {"navigation_with_keys": True}


def _require_docstring(app, what, name, obj, options, lines):
    """A public name documented without a docstring fails the build (a warning, and warnings are errors)."""
    if what in ("function", "class", "exception", "method") and not "".join(lines).strip():
        from sphinx.util import logging

        logging.getLogger(__name__).warning("public name without a docstring: %s", name)


def setup(app):
    app.connect("autodoc-process-docstring", _require_docstring)
    app.connect("missing-reference", api_pages.resolve_missing)
