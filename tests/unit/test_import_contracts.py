"""Import contracts of the package: the layout by process holds (docs/architecture.md).

Read statically from the source (every ``import``, also inside functions, so a function-level
import cannot hide a cycle or a forbidden dependency):

- what the hub, the gateway, the services, user servers and kernels load (everything reachable
  from each process's entry points, :data:`PROCESSES`) never includes the launcher's code
  (``localstack``) or the command line (``cli``);
- nothing in the product imports the test harness (``cscale_testing``) or dev tooling (``tools``);
- the modules of the product import each other without cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "cscale_extensions"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
#: code of the launcher's process and of the operator's command line only
LAUNCHER_SIDE = (f"{PACKAGE}.localstack", f"{PACKAGE}.cli")
#: the entry points of every other process of the platform (docs/architecture.md)
PROCESSES = {
    "hub": ["hub", "workshop.hub"],
    "dask-gateway": ["gateway"],
    "dask scheduler/worker": ["dashboard_guard.preload"],
    "eo-mqs": ["services.eomqs.__main__", "services.eomqs.app"],
    "runs service": ["services.runs.__main__", "services.runs.app"],
    "user server": ["singleuser.activity", "singleuser.contents", "singleuser.token",
                    "singleuser.seed_notebooks", "workshop.fetch", "services.runs.executor",
                    "services.runs.forkserver", "services.runs.active"],
    "kernel": ["notebook.helpers", "notebook.bands", "notebook.stats", "notebook.openeo_local",
               "notebook.sites"],
}
OUTSIDE_PRODUCT = ("cscale_testing", "tools")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in ROOT.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The modules ``path`` imports (resolved to the deepest known module for product names)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
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


GRAPH = {m: imports_of(p, set(modules())) for m, p in modules().items()}


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_graph_is_not_empty():
    """The contracts below see the package (a wrong root would make them pass vacuously)."""
    assert f"{PACKAGE}.hub.auth" in GRAPH and len(GRAPH) > 80
    assert f"{PACKAGE}.hub.auth" in GRAPH[f"{PACKAGE}.hub"]


def loaded_by(entry_points: list[str]) -> dict[str, str]:
    """Every product module the entry points load, with the module that imports it."""
    seen = {f"{PACKAGE}.{e}": "(entry point)" for e in entry_points}
    todo = list(seen)
    while todo:
        m = todo.pop()
        for t in GRAPH[m]:
            if t in GRAPH and t not in seen:
                seen[t] = m
                todo.append(t)
    return seen


@pytest.mark.parametrize("process", sorted(PROCESSES))
def test_processes_never_load_the_launcher_or_cli(process):
    """Hub, gateway, services, user servers and kernels run without the local stack's code
    (in the chart's images it is dead weight at best, and a second source of truth at worst)."""
    for e in PROCESSES[process]:
        assert f"{PACKAGE}.{e}" in GRAPH, f"entry point {e} of {process} does not exist"
    loaded = loaded_by(PROCESSES[process])
    bad = {m: by for m, by in loaded.items() if _under(m, LAUNCHER_SIDE)}
    assert not bad, f"{process} loads {sorted(bad)} (imported by {sorted(set(bad.values()))})"


def test_the_contract_can_fail():
    """The launcher itself does load the hub's code: the closure walk sees real edges."""
    assert f"{PACKAGE}.hub" in loaded_by(["localstack.launcher"])


def test_product_never_imports_the_harness_or_tools():
    bad = {m: sorted(t for t in ts if t.split(".")[0] in OUTSIDE_PRODUCT) for m, ts in GRAPH.items()}
    assert not {m: t for m, t in bad.items() if t}


def test_no_import_cycles():
    """Tarjan's strongly connected components of the module graph: all of size one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH.get(v, ()):
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
