"""The command line's user models: ``--import SPEC`` and a model given as ``module:Class`` / ``file.py:Class``.

Every command that takes a model name takes an import path in its place, and every command takes
``--import SPEC`` (repeatable) to import a user's module before it runs, e.g. to load a run whose
model is not in the zoo (``ppvae evaluate runs/blr --import examples/blr.py``). Both import only what
the user typed; a run directory's recorded ``model_import`` is never imported by itself
(see :mod:`ppvae.model.importing`).
"""

from __future__ import annotations

import inspect

from ppvae._util.validation import PPVAEError
from ppvae.cli.catalogue import models_text
from ppvae.cli.parser import add_import_option
from ppvae.model.base import get_model_class, import_model, list_models, model_import_path
from ppvae.model.importing import is_import_spec

__all__ = ["add_import_option", "apply_imports", "model_import_of", "model_hyperparameters", "cmd_models",
           "live_models"]


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


def model_hyperparameters(name: str) -> str:
    """``KEY=DEFAULT (type)`` for each constructor argument of the registered model ``name``."""
    parts = []
    for p in list(inspect.signature(get_model_class(name).__init__).parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        kind = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        kind = kind or ("" if p.default is p.empty else type(p.default).__name__)
        value = "(required)" if p.default is p.empty else f"={p.default}"
        parts.append(f"{p.name}{value}" + (f" ({kind})" if kind else ""))
    return ", ".join(parts) or "no hyperparameters"


def cmd_models(args) -> int:
    """``ppvae models``: the zoo, models imported by ``--import`` and installed packages' entry points."""
    print(models_text(live_models()))
    return 0


def live_models() -> dict[str, tuple[str, str]]:
    """The registered models as :data:`ppvae.cli.catalogue.MODELS` lists them: name -> (description,
    hyperparameters as ``ppvae fit NAME KEY=VALUE`` takes them)."""
    return {name: (desc, model_hyperparameters(name)) for name, desc in list_models().items()}
