"""Finding a user's model class: an import path the user names, or an installed package's entry point.

Two ways beyond the bundled zoo bring a model class into a process (see :mod:`ppvae.model.base`):

* an **import path** the user names, ``"package.module:Class"`` or ``"path/to/file.py:Class"``
  (``ppvae.import_model`` in Python; ``ppvae fit package.module:Class`` or ``--import SPEC`` on the
  command line). ``"path/to/file.py"`` or ``"package.module"`` without a class imports the module only,
  for a module whose classes register themselves with ``@ppvae.register_model``;
* an **entry point** in the group ``ppvae.models`` of an installed distribution (``NAME = module:Class``
  in its ``entry_points.txt``; in ``pyproject.toml``: ``[project.entry-points."ppvae.models"]``), found
  through :func:`importlib.metadata.entry_points`. Entry points are loaded only when a model of that
  name is asked for or the models are listed: installing the package is the user's consent.

A saved run records the import path of its model (``model_import`` in ``config.json``); loading never
imports it: only code the user names in the call or on the command line is run.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import sys

from ppvae._util.validation import PPVAEError, one_line

__all__ = ["ENTRY_POINT_GROUP", "is_import_spec", "load_object", "model_entry_points"]

ENTRY_POINT_GROUP = "ppvae.models"


def is_import_spec(text: str) -> bool:
    """Whether ``text`` names code to import (``module:Class``, ``file.py[:Class]``) rather than a model name."""
    text = str(text)
    return ":" in text or text.endswith(".py")


def load_object(spec: str):
    """Import what ``spec`` names and return it: ``"module:Attr"`` or ``"file.py:Attr"`` gives the
    attribute, ``"module"`` or ``"file.py"`` the module. A file is imported once per path (as
    ``ppvae_user.<stem>``, recorded in ``sys.modules``), so a second import returns the same classes."""
    spec = str(spec)
    target, _, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if not target:
        raise PPVAEError(f"model: expected an import path MODULE:CLASS or FILE.py:CLASS; got '{spec}'")
    module = _import_file(target, spec) if target.endswith(".py") else _import_module(target, spec)
    if not attr:
        return module
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = ", ".join(n for n in dir(module) if not n.startswith("_") and isinstance(getattr(module, n), type))
            raise PPVAEError(f"model: '{target}' has no attribute '{attr}' (classes there: {names or 'none'}); "
                             f"got '{spec}'")
        obj = getattr(obj, part)
    return obj


def _import_module(name: str, spec: str):
    if os.getcwd() not in sys.path and "" not in sys.path:  # as `python -m`: modules of the working directory
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise PPVAEError(f"model: no module named '{exc.name}' on the Python path (for a file, give "
                             f"path/to/file.py:CLASS); got '{spec}'") from None
        raise PPVAEError(f"model: importing '{name}' raised {one_line(exc)}") from exc
    except Exception as exc:  # the user's module failed to import: name it, in one line
        raise PPVAEError(f"model: importing '{name}' raised {one_line(exc)}") from exc


_USER_PACKAGE = "ppvae_user"  # files imported by path live under it, as ppvae_user.f_<hex of the real path>


def _module_name(path: str) -> str:
    return f"{_USER_PACKAGE}.f_{os.path.realpath(path).encode().hex()}"


class _FileFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``ppvae_user.f_<hex path>`` to that file, so a model class imported from a file pickles by
    reference into MCMC worker processes (which import ppvae, installing this finder, before the model).
    It only ever imports a file this process was asked to import: the name comes from a pickle made here."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _USER_PACKAGE:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        prefix = f"{_USER_PACKAGE}.f_"
        if fullname.startswith(prefix):
            try:
                file = bytes.fromhex(fullname[len(prefix):]).decode()
            except ValueError:
                return None
            return importlib.util.spec_from_file_location(fullname, file)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        module.__path__ = []


if not any(isinstance(f, _FileFinder) for f in sys.meta_path):
    sys.meta_path.append(_FileFinder())


def _import_file(path: str, spec: str):
    if not os.path.isfile(path):
        raise PPVAEError(f"model: expected an existing Python file in '{spec}'; {path} does not exist")
    key = _module_name(path)
    if key in sys.modules:
        return sys.modules[key]
    try:
        return importlib.import_module(key)
    except Exception as exc:
        sys.modules.pop(key, None)
        raise PPVAEError(f"model: importing {path} raised {one_line(exc)}") from exc


def model_entry_points() -> dict:
    """The ``ppvae.models`` entry points of the installed distributions, name -> EntryPoint (not loaded)."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
