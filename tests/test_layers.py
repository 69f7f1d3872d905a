"""ppvae's import graph is layered: no cycles, no import against the layer order, no hidden imports.

The imports of every module of the package (``ppvae/*.py`` and the bundled models ``ppvae.models``)
are read from the AST, at module level and inside functions, without importing anything. The layer
table :data:`LAYERS` is the one in the README's "Layout" section: a module may import modules of
its own layer or of a lower one, never of a higher one. Function-local imports are for optional
heavy third-party dependencies only (matplotlib, arviz, torch.distributed); a first-party import
inside a function hides a cycle or an upward import and is reported as such. A first-party module loaded on
first use by ``importlib.import_module("ppvae....")`` with a literal name (the command line's front door and the
package's PEP 562 ``__getattr__``, which must start without torch: issue 31) is an edge of the graph like any
import, checked for cycles and the layer order.

``python tests/test_layers.py`` prints the graph's measurements (levels, cycles, upward imports).
"""

from __future__ import annotations

import ast
import os
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = {"ppvae": os.path.join(ROOT, "ppvae"), "ppvae.models": os.path.join(ROOT, "models")}

# The engine's subpackages, lowest layer first. A module may import modules of its own subpackage and of the
# subpackages below it, never of one above. Mirrored in README "Layout" (one line per subpackage).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("util", ("ppvae._version", "ppvae._util")),
    ("plots", ("ppvae.plots",)),
    ("data", ("ppvae.data",)),
    ("model", ("ppvae.model",)),
    ("runs", ("ppvae.runs",)),
    ("results", ("ppvae.results",)),
    ("infer", ("ppvae.infer",)),
    ("evaluate", ("ppvae.evaluate",)),
    ("comparison", ("ppvae.comparison",)),
    ("cli", ("ppvae.cli",)),
    ("api", ("ppvae",)),  # the top-level __init__ alone: the public API
    ("models", ("ppvae.models",)),  # the bundled models: clients of the public API, like a user's own
]
MAX_MODULES_PER_FOLDER = 12
MAX_LINES_PER_MODULE = 400

# Function-local imports that are allowed, by (importer, imported module prefix): optional heavy dependencies.
# lda: the optional [topics] extra; multiprocessing: its forkserver exists on POSIX only; pandas (the MCMC summary
# table) and scipy (SBC's binomial band, the verdict's Wasserstein distance): heavy, declared, loaded where used;
# torch._inductor and torch.fx's make_fx (the potential SVI path's compiled step): seconds to import, used by long runs
LAZY_THIRD_PARTY = ("matplotlib", "arviz", "torch.distributed", "tqdm", "lda", "multiprocessing", "pandas", "scipy",
                    "torch._inductor", "torch.fx.experimental")

# Torch and NumPy loaded when called, by the one module that may: validation is imported by the command line's
# parser, and `ppvae --help` / `models` / `datasets` / `--version` must start without them (issue 31).
LAZY_FOR_STARTUP = {"ppvae._util.validation": ("torch", "numpy")}

# One first-party edge that points up on purpose: the model registry loads the bundled models (a client of
# the public API) on first lookup, as it would load a plugin. It is not part of the import graph.
PLUGIN_LOADS = {("ppvae.model.base", "ppvae.models")}


def _module_files() -> dict[str, str]:
    files = {}
    for pkg, folder in PACKAGES.items():
        for dirpath, dirnames, names in os.walk(folder):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
            rel = os.path.relpath(dirpath, folder)
            sub = pkg if rel == "." else pkg + "." + rel.replace(os.sep, ".")
            if pkg == "ppvae" and sub.startswith("ppvae.models"):
                continue
            for name in sorted(names):
                if name.endswith(".py") and name != "__main__.py":
                    files[sub if name == "__init__.py" else f"{sub}.{name[:-3]}"] = os.path.join(dirpath, name)
    return files


def folder_of(mod: str) -> str:
    """The layer entry (a subpackage, or a top-level module) that ``mod`` belongs to."""
    if mod.startswith("ppvae.models"):
        return "ppvae.models"
    best = ""
    for _, members in LAYERS:
        for m in members:
            if (mod == m or (m != "ppvae" and mod.startswith(m + "."))) and len(m) > len(best):
                best = m
    return best or mod


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    """The first-party modules an import statement loads (the deepest known module of each name)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            base = importer.split(".") if is_package else importer.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            prefix = ".".join(base + ([node.module] if node.module else []))
        else:
            prefix = node.module or ""
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in known else prefix for a in node.names]
    out = []
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        if parts:
            out.append(".".join(parts))
    return out


class _Imports(ast.NodeVisitor):
    def __init__(self):
        self.depth = 0  # > 0 inside a function body
        self.found: list[tuple[ast.AST, bool]] = []  # (node, is function-local)
        self.type_only = False

    def visit_FunctionDef(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node):
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            for child in node.orelse:
                self.visit(child)  # type-only imports load nothing at run time
            return
        self.generic_visit(node)

    def visit_Import(self, node):
        self.found.append((node, self.depth > 0))

    visit_ImportFrom = visit_Import

    def visit_Call(self, node):
        """``importlib.import_module("ppvae.x")``: a deliberate lazy load, an edge of the graph (not function-local)."""
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr == "import_module" and isinstance(func.value, ast.Name)
                and func.value.id == "importlib" and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)):
            self.found.append((ast.Import(names=[ast.alias(name=node.args[0].value)], lineno=node.lineno), False))
        self.generic_visit(node)


def import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]], list[tuple[str, str, int]]]:
    """``(edges, local_first_party, local_third_party)``: module -> first-party modules it imports (module
    level and function level), and the function-local imports as ``(importer, imported, line)``."""
    files = _module_files()
    known = set(files)
    edges: dict[str, set[str]] = {m: set() for m in files}
    local_first, local_third = [], []
    for mod, path in files.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        visitor = _Imports()
        visitor.visit(tree)
        for node, is_local in visitor.found:
            targets = _resolve(mod, path.endswith("__init__.py"), node, known)
            if is_local and not targets:
                name = node.names[0].name if isinstance(node, ast.Import) else (node.module or "")
                local_third.append((mod, name, node.lineno))
            for target in targets:
                if target == mod or (mod, _layer_key(target)) in PLUGIN_LOADS:
                    continue
                edges[mod].add(target)
                if is_local:
                    local_first.append((mod, target, node.lineno))
    return edges, local_first, local_third


def _layer_key(mod: str) -> str:
    return folder_of(mod)


def layer_of(mod: str) -> int | None:
    key = folder_of(mod)
    for i, (_, members) in enumerate(LAYERS):
        if key in members:
            return i
    return None


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def levels(edges: dict[str, set[str]]) -> int:
    """Length of the longest import chain, counted in modules, on the graph with each cycle collapsed."""
    comp_of = {}
    for i, comp in enumerate(cycles(edges)):
        for m in comp:
            comp_of[m] = f"cycle{i}"
    dag: dict[str, set[str]] = defaultdict(set)
    for a, bs in edges.items():
        for b in bs:
            ca, cb = comp_of.get(a, a), comp_of.get(b, b)
            if ca != cb:
                dag[ca].add(cb)
    memo: dict[str, int] = {}

    def depth(v):
        if v not in memo:
            memo[v] = 1 + max((depth(w) for w in dag.get(v, ())), default=0)
        return memo[v]

    nodes = set(comp_of.get(m, m) for m in edges)
    return max(depth(v) for v in nodes)


def upward(edges: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a module to a module of a higher layer."""
    return sorted((a, b) for a, bs in edges.items() for b in bs
                  if layer_of(a) is not None and layer_of(b) is not None and layer_of(b) > layer_of(a))


def test_every_module_has_a_layer():
    missing = sorted(m for m in _module_files() if layer_of(m) is None)
    assert not missing, f"modules missing from LAYERS (and the README Layout section): {missing}"


def test_no_import_cycles():
    edges, _, _ = import_graph()
    bad = cycles(edges)
    assert not bad, f"import cycles: {bad}"


def test_no_upward_imports():
    edges, _, _ = import_graph()
    bad = upward(edges)
    assert not bad, f"imports against the layer order (importer, imported): {bad}"


def test_no_function_local_first_party_imports():
    _, local_first, _ = import_graph()
    bad = list(local_first)
    assert not bad, f"first-party imports inside functions (importer, imported, line): {bad}"


def test_function_local_third_party_imports_are_heavy_optional_and_explained():
    _, _, local_third = import_graph()
    files = _module_files()
    bad = []
    for mod, name, line in local_third:
        with open(files[mod], encoding="utf-8") as fh:
            text = fh.read().splitlines()[line - 1]
        allowed = LAZY_THIRD_PARTY + LAZY_FOR_STARTUP.get(mod, ())
        heavy = any(name == p or name.startswith(p + ".") for p in allowed)
        if not heavy or "#" not in text:
            bad.append((mod, name, line))
    assert not bad, ("function-local imports must be of " + ", ".join(LAZY_THIRD_PARTY)
                     + f" with a one-line reason comment: {bad}")


def test_readme_layout_lists_the_layers():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    section = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    for name, members in LAYERS:
        line = next((ln for ln in section.splitlines() if ln.startswith(f"* {name}: ")), None)
        assert line is not None, f"README Layout: no line for layer {name!r}"
        for m in members:
            short = m if m == "ppvae" else m.split(".", 1)[1]
            assert f"`{short}`" in line, f"README Layout: layer {name!r} line does not list `{short}`"


def _package(mod: str, files: dict[str, str]) -> str:
    """The package a module lives in (a package's ``__init__`` belongs to the package itself)."""
    return mod if files[mod].endswith("__init__.py") else mod.rsplit(".", 1)[0]


def private_crossings() -> list[tuple[str, str, str]]:
    """``(importer, module, name)`` for every underscored name imported from a module of another package:
    a subpackage's private names stay inside it (its public names are the ones without an underscore)."""
    files = _module_files()
    known = set(files)
    out = []
    for mod, path in files.items():
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.level or not (node.module or "").startswith("ppvae"):
                continue
            if node.module not in known:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and (
                        _package(node.module, files) != _package(mod, files)):
                    out.append((mod, node.module, alias.name))
    return sorted(out)


def test_no_private_names_cross_subpackages():
    bad = private_crossings()
    assert not bad, f"private names imported from another package (importer, module, name): {bad}"


def test_folders_and_modules_stay_small():
    files = _module_files()
    per_folder: dict[str, int] = defaultdict(int)
    long = []
    for mod, path in files.items():
        if mod.startswith("ppvae.models"):
            continue
        if not path.endswith("__init__.py"):
            per_folder[os.path.dirname(path)] += 1
        with open(path, encoding="utf-8") as fh:
            n = sum(1 for _ in fh)
        if n > MAX_LINES_PER_MODULE:
            long.append((mod, n))
    crowded = {os.path.relpath(f, ROOT): n for f, n in per_folder.items() if n > MAX_MODULES_PER_FOLDER}
    assert not crowded, f"folders with more than {MAX_MODULES_PER_FOLDER} modules: {crowded}"
    assert not long, f"modules over {MAX_LINES_PER_MODULE} lines: {long}"


def report() -> str:
    edges, local_first, local_third = import_graph()
    ups = upward(edges)
    cyc = cycles(edges)
    lines = [
        f"modules: {len(edges)}; first-party imports: {sum(map(len, edges.values()))}",
        f"levels (longest import chain, cycles collapsed): {levels(edges)}",
        f"cycles: {len(cyc)}" + "".join(f"\n  {' <-> '.join(c)}" for c in cyc),
        f"upward imports (against LAYERS): {len(ups)}" + "".join(f"\n  {a} -> {b}" for a, b in ups),
        f"function-local first-party import statements: {len({(a, line) for a, _, line in local_first})}",
        f"imports inside a cycle: {sum(1 for c in cyc for a in c for b in edges[a] if b in c)}",
        f"private names imported across packages: {len(private_crossings())}"
        + "".join(f"\n  {a} <- {m}.{n}" for a, m, n in private_crossings()),
        f"function-local third-party import statements: {len(local_third)} ("
        + ", ".join(sorted({n for _, n, _ in local_third})) + ")",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report())
