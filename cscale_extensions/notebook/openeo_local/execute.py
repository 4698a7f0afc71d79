"""Run an openEO process graph locally, with a clear error for processes not available here."""

from __future__ import annotations

import difflib
import logging
from typing import Any

log = logging.getLogger(__name__)


class UnsupportedProcessError(ValueError):
    """A process graph uses processes that local openEO processing does not implement."""

    def __init__(self, missing: list[str], available: list[str]):
        self.missing, self.available = missing, available
        hints = []
        for name in missing:
            close = difflib.get_close_matches(name, available, n=3)
            hints.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        super().__init__(
            "this process graph uses processes that local openEO processing does not provide: "
            + "; ".join(hints)
            + f". {len(available)} processes are available: see "
            "cscale_extensions.notebook.openeo_local.available_processes() or docs/openeo.md"
        )


def available_processes() -> list[str]:
    """Names of the openEO processes that run locally (openeo-processes-dask's registry)."""
    from cscale_extensions.notebook.openeo_local import compat

    compat.install()
    from openeo.local.processing import PROCESS_REGISTRY

    return sorted({key[1] if isinstance(key, tuple) else key for key in PROCESS_REGISTRY})


def _walk(graph: dict[str, Any]) -> set[str]:
    found: set[str] = set()

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if "process_graph" in value and isinstance(value["process_graph"], dict):
                found.update(_walk(value["process_graph"]))
            for v in value.values():
                visit(v)
        elif isinstance(value, list):
            for v in value:
                visit(v)

    for node in graph.values():
        if isinstance(node, dict) and "process_id" in node:
            found.add(str(node["process_id"]))
            visit(node.get("arguments", {}))
    return found


def used_processes(cube_or_graph: Any) -> set[str]:
    """Every process id in a data cube's (or a flat graph's) process graph, callbacks included."""
    graph = cube_or_graph.flat_graph() if hasattr(cube_or_graph, "flat_graph") else cube_or_graph
    if isinstance(graph, dict) and "process_graph" in graph and "process_id" not in graph:
        graph = graph["process_graph"]
    return _walk(graph)


def check_processes(cube_or_graph: Any) -> None:
    """Raise :class:`UnsupportedProcessError` when the graph needs a process not available here."""
    available = available_processes()
    missing = sorted(used_processes(cube_or_graph) - set(available))
    if missing:
        raise UnsupportedProcessError(missing, available)


def run(cube: Any, *, compute: bool = True):
    """Execute ``cube``'s process graph locally and return the result (an xarray object).

    The processes are checked first (a clear :class:`UnsupportedProcessError` instead of a
    failure deep inside the executor). With ``compute`` the lazy result is computed: on the
    Dask cluster of the current ``distributed.Client`` when there is one (e.g. a dask-gateway
    cluster the notebook connected to), else on local threads.
    """
    from cscale_extensions.notebook.openeo_local import compat

    compat.install()
    check_processes(cube)
    from openeo.local.processing import PROCESS_REGISTRY
    from openeo_pg_parser_networkx import OpenEOProcessGraph

    graph = cube.flat_graph() if hasattr(cube, "flat_graph") else cube
    result = OpenEOProcessGraph(graph).to_callable(PROCESS_REGISTRY)()
    if compute and hasattr(result, "compute"):
        where = compute_target()
        log.info("computing the openEO result on %s", where)
        result = result.compute()
    return result


def compute_target() -> str:
    """Where Dask computes now: the scheduler of the current distributed client, or threads."""
    try:
        from distributed import default_client

        return f"the Dask cluster at {default_client().scheduler.address}"
    except (ImportError, ValueError):
        return "local threads"
