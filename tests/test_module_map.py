"""The README's module map names every module of the package, and no module it does not have;
and the package's own imports keep to it: no module imports from a higher layer (a later row of
the map), and the imports form no cycle. Imports inside functions and ``if TYPE_CHECKING:``
blocks count: a lazy import is still an import."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
PACKAGE = "pagkd_lite"
ENTRY = re.compile(r"`([\w.]+)`:")  # "`module`: its one concern"


def map_rows(readme: str) -> list[list[str]]:
    """The module names of each row of the README's "Module map" table, bottom layer first."""
    section = readme.split("\n## Module map\n", 1)[1].split("\n## ", 1)[0]
    rows = [ENTRY.findall(line) for line in section.splitlines() if line.startswith("| ")]
    return [row for row in rows if row]


def map_entries(readme: str) -> list[str]:
    """The module names of the README's "Module map" table, in order."""
    return [name for row in map_rows(readme) for name in row]


def map_layers(readme: str) -> dict[str, int]:
    """Module name -> its layer: the index of its row in the map (0 = the bottom row)."""
    return {name: i for i, row in enumerate(map_rows(readme)) for name in row}


def package_modules() -> set[str]:
    """Every module of ``pagkd_lite`` as a dotted name below the package (``a`` or ``sub.a``)."""
    pkg = ROOT / PACKAGE
    return {".".join(p.relative_to(pkg).with_suffix("").parts) for p in pkg.rglob("*.py")
            if p.name != "__init__.py"}


def package_sources() -> dict[str, str]:
    """Every file of ``pagkd_lite``: its path below the package (``sub/a.py``) -> its source."""
    pkg = ROOT / PACKAGE
    return {p.relative_to(pkg).as_posix(): p.read_text(encoding="utf-8")
            for p in sorted(pkg.rglob("*.py"))}


def _module_name(path: str) -> tuple[str, list[str]]:
    """``sub/a.py`` -> (``sub.a``, its package ``["sub"]``); ``sub/__init__.py`` -> (``sub``,
    ``["sub"]``); the top ``__init__.py`` -> (``""``, ``[]``)."""
    parts = path[:-len(".py")].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join(parts), parts
    return ".".join(parts), parts[:-1]


def _dotted(parts: list[str]) -> str:
    return ".".join(parts)


def _targets(node: ast.AST, package: list[str], known: set[str]) -> set[str]:
    """The package modules an import statement imports (dotted names below the package):
    ``import pagkd_lite.a.b`` -> ``a.b``; ``from .a import b`` -> ``a.b`` if that is a module,
    else ``a`` (``b`` is a name defined in ``a``)."""
    if isinstance(node, ast.Import):
        return {_dotted(a.name.split(".")[1:]) for a in node.names
                if a.name.split(".")[0] == PACKAGE} & known
    if not isinstance(node, ast.ImportFrom):
        return set()
    if node.level:
        if node.level - 1 > len(package):
            return set()
        base = package[:len(package) - (node.level - 1)] + (node.module or "").split(".")
        base = [part for part in base if part]
    elif (node.module or "").split(".")[0] == PACKAGE:
        base = node.module.split(".")[1:]
    else:
        return set()
    found = set()
    for alias in node.names:
        sub = _dotted([*base, alias.name])
        found.add(sub if sub in known else _dotted(base))
    return found & known


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the package modules it imports, from the sources' own import statements
    (every statement anywhere in the file: top level, functions, ``TYPE_CHECKING`` blocks).
    ``sources`` maps each file's path below the package (``sub/a.py``) to its text; a package
    (``sub/__init__.py``) is the module ``sub``, the top one ``""``."""
    names = {path: _module_name(path) for path in sources}
    known = {name for name, _ in names.values()}
    graph: dict[str, set[str]] = {}
    for path, text in sources.items():
        name, package = names[path]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(text, filename=path)):
            edges |= _targets(node, package, known)
        graph[name] = edges - {name}
    return graph


def _layer(name: str, layers: dict[str, int]) -> int | None:
    """A module's layer; a package's is its modules' lowest (None: the top package)."""
    if name in layers:
        return layers[name]
    inside = [v for k, v in layers.items() if name and k.startswith(name + ".")]
    return min(inside) if inside else None


def climbs(graph: dict[str, set[str]], layers: dict[str, int]) -> list[tuple[str, str]]:
    """Every import ``(importer, imported)`` whose imported module sits in a higher layer."""
    found = []
    for mod, targets in sorted(graph.items()):
        low = _layer(mod, layers)
        for target in sorted(targets):
            high = _layer(target, layers)
            if low is not None and high is not None and high > low:
                found.append((mod, target))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of two or more modules, sorted
    (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


# ------------------------------------------------------------------ the checkers themselves
def test_the_parser_reads_a_map():
    text = ("x\n## Module map\n\n| layer | m |\n|---|---|\n"
            "| data | `a`: one · `b.c`: two |\n| `top/` | `top.d`: three |\n## Next\n`e`:")
    assert map_entries(text) == ["a", "b.c", "top.d"]
    assert map_layers(text) == {"a": 0, "b.c": 0, "top.d": 1}


#: a tiny package with one climb (method -> training, in a function, as the distiller's was),
#: a cycle through it, and a cycle through a ``TYPE_CHECKING`` import (as SynthEndo's config was)
FAKE = {
    "__init__.py": "",
    "errors.py": "class E(Exception):\n    pass\n",
    "data/__init__.py": "",
    "data/low.py": "from ..errors import E\n",
    "data/gen.py": "from .base import x\nfrom . import low\n",
    "data/base.py": ("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                     "    from .gen import Cfg\nx = 1\n"),
    "method/__init__.py": "",
    "method/loss.py": ("import math\n\n\ndef after_epoch():\n"
                       "    from ..training.loop import log\n    return log()\n"),
    "training/__init__.py": "",
    "training/loop.py": ("import pagkd_lite.data.low\n"
                         "from pagkd_lite.method.loss import after_epoch\n"
                         "from .. import errors\n"),
}
FAKE_LAYERS = {"errors": 0, "data.low": 1, "data.gen": 1, "data.base": 1, "method.loss": 2,
               "training.loop": 3}


def test_the_import_graph_reads_every_kind_of_import():
    graph = import_graph(FAKE)
    assert graph["training.loop"] == {"data.low", "method.loss", "errors"}
    assert graph["method.loss"] == {"training.loop"}                   # in a function
    assert graph["data.base"] == {"data.gen"}                          # under TYPE_CHECKING
    assert graph["data.gen"] == {"data.base", "data.low"}
    assert graph["data"] == set() and graph[""] == set()


def test_the_checker_reports_the_climb_and_the_cycles():
    graph = import_graph(FAKE)
    assert climbs(graph, FAKE_LAYERS) == [("method.loss", "training.loop")]
    assert cycles(graph) == [["data.base", "data.gen"], ["method.loss", "training.loop"]]
    fixed = {**FAKE, "method/loss.py": "def after_epoch():\n    return 0\n",
             "data/base.py": "x = 1\n"}
    assert climbs(import_graph(fixed), FAKE_LAYERS) == [] and cycles(import_graph(fixed)) == []


# ------------------------------------------------------------------ the package
def test_module_map_matches_the_package():
    names = map_entries((ROOT / "README.md").read_text())
    assert len(names) == len(set(names)), "a module is listed twice"
    modules = package_modules()
    extra, missing = set(names) - modules, modules - set(names)
    assert not extra, f"the map names modules that do not exist: {sorted(extra)}"
    assert not missing, f"modules missing from the map: {sorted(missing)}"


def test_no_module_imports_from_a_higher_layer():
    layers = map_layers((ROOT / "README.md").read_text())
    graph = import_graph(package_sources())
    assert set(layers) <= set(graph), "the map names modules the package does not have"
    bad = climbs(graph, layers)
    assert not bad, "imports against the module map's layer order (importer -> imported): " \
        + ", ".join(f"{a} -> {b}" for a, b in bad)


def test_the_package_imports_form_no_cycle():
    found = cycles(import_graph(package_sources()))
    assert not found, f"import cycles among the package's modules: {found}"
