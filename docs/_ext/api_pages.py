"""The API reference pages, generated from ``ppvae.__all__`` and each public subpackage's ``__all__`` at every build.

Each public object gets one full entry (autodoc) under one name: its top-level name ``ppvae.X`` when ``ppvae``
exports it (the name users import and docstrings cross-reference), else its subpackage's name. The entry sits on
the page of the deepest public subpackage that exports it; every other public path to the same object is listed
beside the entry ("also importable as"). ``tests/test_docs.py`` checks that every public name has its entry.
"""

from __future__ import annotations

import importlib
import inspect
import types
from pathlib import Path

# the public subpackages, in the order of the layers (lowest first), with each page's title
SUBPACKAGES = {
    "ppvae.data": "Data",
    "ppvae.model": "Models and capabilities",
    "ppvae.runs": "Runs and callbacks",
    "ppvae.results": "Results",
    "ppvae.infer": "Inference: EM",
    "ppvae.infer.svi": "Inference: SVI",
    "ppvae.infer.mcmc": "Inference: MCMC",
    "ppvae.evaluate": "Evaluation",
    "ppvae.comparison": "Comparison",
    "ppvae.plots": "Figures",
    "ppvae.cli": "Command line",
}
TOP = "ppvae"


def public_names() -> dict[str, list[str]]:
    """package -> its ``__all__``, for ``ppvae`` and every public subpackage (those in SUBPACKAGES)."""
    return {pkg: list(importlib.import_module(pkg).__all__) for pkg in [TOP, *SUBPACKAGES]}


def entries() -> dict[str, dict]:
    """documented name -> {"page": package whose page holds it, "object", "aliases": other public paths}."""
    names = public_names()
    paths_of: dict[int, list[str]] = {}
    objects: dict[int, object] = {}
    for pkg, all_names in names.items():
        module = importlib.import_module(pkg)
        for name in all_names:
            obj = getattr(module, name)
            paths_of.setdefault(id(obj), []).append(f"{pkg}.{name}")
            objects[id(obj)] = obj
    out = {}
    for key, paths in paths_of.items():
        top = [p for p in paths if p.rsplit(".", 1)[0] == TOP]
        subs = [p for p in paths if p.rsplit(".", 1)[0] != TOP]
        page = max((p.rsplit(".", 1)[0] for p in subs), key=lambda pkg: pkg.count("."), default=TOP)
        documented = top[0] if top else max(subs, key=lambda p: p.count("."))
        out[documented] = {"page": page, "object": objects[key],
                           "aliases": sorted(p for p in paths if p != documented)}
    return out


def _directive(name: str, obj) -> str:
    if isinstance(obj, types.ModuleType):
        return f".. automodule:: {name}\n   :members:\n"
    if inspect.isclass(obj):
        kind = "autoexception" if issubclass(obj, BaseException) else "autoclass"
        return f".. {kind}:: {name}\n   :members:\n   :show-inheritance:\n"
    return f".. autofunction:: {name}\n"


def _entry(name: str, info: dict) -> str:
    text = _directive(name, info["object"])
    if info["aliases"]:
        text += "\n   Also importable as " + ", ".join(f":py:obj:`{a}`" for a in info["aliases"]) + ".\n"
    return text + "\n"


def _alias(path: str, documented: str, obj) -> str:
    """A short entry for another public path of an object documented elsewhere (so it is indexed and
    cross-references to it resolve)."""
    if isinstance(obj, types.ModuleType):
        kind, role = "py:data", "mod"
    elif inspect.isclass(obj):
        kind, role = ("py:exception", "exc") if issubclass(obj, BaseException) else ("py:class", "class")
    else:
        kind, role = "py:function", "func"
    module, name = path.rsplit(".", 1)
    return (f".. {kind}:: {name}\n   :module: {module}\n   :no-contents-entry:\n\n"
            f"   The same object as :{role}:`{documented}`.\n\n")


def _lookup(target: str, context: tuple):
    """The object a dotted ``target`` names (absolute, or relative to one of the dotted ``context`` paths: the
    current module, the current class), or None."""
    import sys

    candidates = [target] + [f"{c}.{target}" for c in context if c]
    for path in candidates:
        parts = path.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return obj
    if "." not in target:  # an unqualified name: a module of ppvae that defines it (a docstring's own module)
        found = [getattr(m, target) for n, m in list(sys.modules.items())
                 if n.startswith("ppvae.") and m is not None and hasattr(m, target)]
        if found:
            return found[0]
    return None


def resolve_missing(app, env, node, contnode):
    """A cross-reference to an importable ppvae object under another of its paths (``:func:`fit``` inside
    ``ppvae.infer.svi``, ``ppvae.infer.mcmc.sampler.run_mcmc``) links to the object's entry; one to an importable
    ppvae name without an entry (a module, a private helper) renders as code without a link. A reference that
    names nothing importable is left alone, so Sphinx reports it (and the build, with -W, fails)."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    module, cls = node.get("py:module"), node.get("py:class")
    context = (f"{module}.{cls}" if module and cls else None, module)
    obj = _lookup(target, context)
    if obj is None or not (target.startswith("ppvae") or (module or "").startswith("ppvae")):
        return None
    documented = {id(info["object"]): name for name, info in _ENTRIES.items()}
    name = documented.get(id(obj))
    if name is None:
        return contnode
    domain = env.get_domain("py")
    for role in ("obj", "class", "func", "exc", "mod", "data"):
        ref = domain.resolve_xref(env, node["refdoc"], app.builder, role, name, node, contnode)
        if ref is not None:
            return ref
    return contnode


_ENTRIES: dict[str, dict] = {}


def _summary(obj) -> str:
    doc = inspect.getdoc(obj) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return first.replace("|", "\\|")


def write_pages(outdir: Path) -> list[Path]:
    """Write ``outdir/index.rst`` (every top-level name with its summary and page) and one page per subpackage
    (plus ``outdir/ppvae.rst`` for top-level names that no subpackage exports); returns the files written."""
    outdir.mkdir(parents=True, exist_ok=True)
    all_entries = entries()
    _ENTRIES.clear()
    _ENTRIES.update(all_entries)
    order = {name: i for names in public_names().values() for i, name in enumerate(names)}
    pages: dict[str, list[str]] = {}
    aliases: dict[str, list[tuple[str, str]]] = {}
    for name, info in sorted(all_entries.items(), key=lambda item: order[item[0].rsplit(".", 1)[1]]):
        pages.setdefault(info["page"], []).append(name)
        for path in info["aliases"]:
            aliases.setdefault(path.rsplit(".", 1)[0], []).append((path, name))
    written = []
    for pkg in [*SUBPACKAGES, TOP]:
        if pkg not in pages and pkg not in aliases:
            continue
        title = SUBPACKAGES.get(pkg, "Validation and errors")
        module = importlib.import_module(pkg)
        head = f"{title} (``{pkg}``)"
        body = [head, "=" * len(head), "", f".. module:: {pkg}" if pkg != TOP else ".. currentmodule:: ppvae", ""]
        if pkg != TOP and module.__doc__:
            body += [inspect.cleandoc(module.__doc__), ""]
        body += [_entry(name, all_entries[name]) for name in pages.get(pkg, [])]
        if aliases.get(pkg) and pkg != TOP:
            body += ["Also exported here", "-" * 18, "",
                     f"``{pkg}`` also exports these names, documented on the pages linked:", ""]
            body += [_alias(path, name, all_entries[name]["object"]) for path, name in aliases[pkg]]
        path = outdir / f"{pkg}.rst"
        path.write_text("\n".join(body))
        written.append(path)
    index = ["API reference", "=" * 13, "", ".. module:: ppvae", "",
             "Every public name of ``ppvae`` and of its subpackages, generated from their ``__all__`` and the",
             "docstrings. Names that ``import ppvae`` exports are documented under that name (``ppvae.fit``); the",
             "subpackages that also export them are listed with each entry.", "",
             ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   {p.stem}" for p in written]
    index += ["", "Top-level names", "---------------", "", ".. list-table::", "   :header-rows: 1",
              "   :widths: 25 75", "", "   * - name", "     - what it is"]
    for name in public_names()[TOP]:
        index += [f"   * - :py:obj:`ppvae.{name}`", f"     - {_summary(getattr(importlib.import_module(TOP), name))}"]
    (outdir / "index.rst").write_text("\n".join(index) + "\n")
    return [outdir / "index.rst", *written]
