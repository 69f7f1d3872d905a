"""The command line's user models: ``--import SPEC`` and a model given as ``module:Class`` / ``file.py:Class``.

Every command that takes a model name takes an import path in its place, and every command takes
``--import SPEC`` (repeatable) to import a user's module before it runs, e.g. to load a run whose
model is not in the zoo (``ppvae evaluate runs/blr --import examples/blr.py``). Both import only what
the user typed; a run directory's recorded ``model_import`` is never imported by itself
(see :mod:`ppvae._model_import`).
"""

from __future__ import annotations

from ._model_import import is_import_spec
from ._validation import PPVAEError
from .model import get_model_class, import_model, model_import_path

__all__ = ["add_import_option", "apply_imports", "model_import_of"]


def add_import_option(p) -> None:
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="SPEC",
                   help="import a user's model first: MODULE[:CLASS] or FILE.py[:CLASS] (repeatable); needed to "
                        "load a run of a model that is not in the zoo or an installed package")


def apply_imports(args) -> None:
    """Import ``--import`` specs, then replace a model given as an import path by its registered name."""
    for spec in getattr(args, "imports", None) or []:
        import_model(spec)
    model = getattr(args, "model", None)
    if isinstance(model, str) and is_import_spec(model):
        if ":" not in model:
            raise PPVAEError(f"model: expected MODULE:CLASS or FILE.py:CLASS; got '{model}' (a file alone goes to "
                             f"--import {model}, with the model's registered name as the model)")
        args.model = import_model(model).name


def model_import_of(name: str) -> str | None:
    """The import path a run of model ``name`` records (None for the zoo)."""
    return model_import_path(get_model_class(name))
