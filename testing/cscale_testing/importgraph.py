"""The package's import graph, read statically from the source, and what each process loads.

Shared by the import contracts (tests/unit/test_import_contracts.py: no launcher code in the
other processes, no cycles) and the per-process extras (tests/helm/test_image_extras.py: each
image installs the third-party distributions its processes import). Every ``import`` counts,
also inside functions, so a function-level import can neither hide a cycle nor a dependency;
only imports under ``if TYPE_CHECKING:`` are left out (they never run). The closure is
therefore an over-approximation of what a process imports at run time, never less.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import cscale_extensions

PACKAGE = "cscale_extensions"
ROOT = Path(cscale_extensions.__file__).resolve().parent
#: code of the launcher's process and of the operator's command line only
LAUNCHER_SIDE = (f"{PACKAGE}.localstack", f"{PACKAGE}.cli")
#: the entry points of every other process of the platform (docs/architecture.md)
PROCESSES = {
    "hub": ["hub", "workshop.hub"],
    "dask-gateway": ["gateway"],
    "dask scheduler/worker": ["dashboard_guard.preload"],
    "eo-mqs": ["services.eomqs.__main__", "services.eomqs.app"],
    "runs service": ["services.runs.__main__", "services.runs.app"],
    "user server": ["singleuser.launch", "singleuser.hub_tls", "singleuser.lazy_extensions",
                    "singleuser.gateway_dashboards", "singleuser.kernelpool",
                    "singleuser.activity", "singleuser.contents", "singleuser.token",
                    "singleuser.seed_notebooks", "workshop.fetch", "services.runs.executor",
                    "services.runs.forkserver", "services.runs.active"],
    "kernel": ["notebook.helpers", "notebook.bands", "notebook.stats", "notebook.openeo_local",
               "notebook.sites"],
}
#: top-level names that are neither the product nor third-party distributions
OUTSIDE_PRODUCT = ("cscale_testing", "tools")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, at any depth, except under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        children = list(ast.iter_child_nodes(node))
        if _is_type_checking(node):  # its else branch still runs
            children = list(getattr(node, "orelse", []))
        todo.extend(children)
    return found


@cache
def _tree(path: Path) -> ast.AST:
    return ast.parse(path.read_text(), str(path))


def imports_of(path: Path, known: set[str] | frozenset[str]) -> set[str]:
    """The modules ``path`` imports (resolved to the deepest known module for product names)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in import_nodes(_tree(path)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # ``from pkg import sub`` imports the module pkg.sub; ``from mod import name`` mod
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        for t in targets:
            while t and t not in known and t.startswith(PACKAGE + "."):
                t = t.rpartition(".")[0]
            if t in known or t.split(".")[0] in OUTSIDE_PRODUCT:
                found.add(t)
    found.discard(name)
    return found


def third_party_of(path: Path) -> set[str]:
    """Top-level names of what ``path`` imports from outside the product and the stdlib."""
    found = set()
    for node in import_nodes(_tree(path)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif not node.level and node.module:
            found.add(node.module.split(".")[0])
    skip = {PACKAGE, "__future__", *OUTSIDE_PRODUCT}
    return {n for n in found if n not in skip and n not in sys.stdlib_module_names}


@cache
def graph() -> dict[str, frozenset[str]]:
    """Product module -> the product modules (and harness/tools names) it imports."""
    known = frozenset(modules())
    return {m: frozenset(imports_of(p, known)) for m, p in modules().items()}


def loaded_by(entry_points: list[str]) -> dict[str, str]:
    """Every product module the entry points load, with the module that imports it."""
    edges = graph()
    seen = {f"{PACKAGE}.{e}": "(entry point)" for e in entry_points}
    todo = list(seen)
    while todo:
        m = todo.pop()
        for t in edges[m]:
            if t in edges and t not in seen:
                seen[t] = m
                todo.append(t)
    return seen


def third_party_loaded_by(entry_points: list[str]) -> dict[str, str]:
    """Top-level third-party name -> a product module of the closure that imports it."""
    out: dict[str, str] = {}
    for m in sorted(loaded_by(entry_points)):
        for name in sorted(third_party_of(modules()[m])):
            out.setdefault(name, m)
    return out
