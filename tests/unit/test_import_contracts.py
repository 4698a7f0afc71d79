"""Import contracts of the package: the layout by process holds (docs/architecture.md).

Read statically from the source by :mod:`cscale_testing.importgraph` (every ``import``, also
inside functions, so a function-level import cannot hide a cycle or a forbidden dependency):

- what the hub, the gateway, the services, user servers and kernels load (everything reachable
  from each process's entry points, :data:`PROCESSES`) never includes the launcher's code
  (``localstack``) or the command line (``cli``);
- nothing in the product imports the test harness (``cscale_testing``) or dev tooling (``tools``);
- the modules of the product import each other without cycles.
"""

from __future__ import annotations

import pytest
from cscale_testing.importgraph import (
    LAUNCHER_SIDE,
    OUTSIDE_PRODUCT,
    PACKAGE,
    PROCESSES,
    graph,
    loaded_by,
)

#: the graph (cscale_testing.importgraph, shared with tests/helm/test_image_extras.py)
GRAPH = graph()


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_graph_is_not_empty():
    """The contracts below see the package (a wrong root would make them pass vacuously)."""
    assert f"{PACKAGE}.hub.auth" in GRAPH and len(GRAPH) > 80
    assert f"{PACKAGE}.hub.auth" in GRAPH[f"{PACKAGE}.hub"]


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
