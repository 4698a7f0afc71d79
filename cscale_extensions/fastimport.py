"""Run a console script with jsonschema's IRI checker loaded on first use, not at import.

``import jsonschema`` imports ``rfc3987_syntax`` (installed with ``jsonschema[format-nongpl]``,
which jupyter-events requires) for its "iri" and "iri-reference" formats, and that module builds
its Earley parsers while it is imported: about 2 s of CPU (python-jsonschema/jsonschema#1428).
The hub and every user server (jupyter_server → jupyter_events → jsonschema) pay it at each
start, although none of the schemas they validate uses those formats; on a 2-core machine a
workshop's spawns queue behind it. :func:`install` puts a stand-in in ``sys.modules`` whose
``is_valid_syntax`` imports the real module at its first call (same answers, paid only then).

``python -m cscale_extensions.fastimport jupyterhub-singleuser [args…]`` installs it and runs
that console script's entry point, as its own executable would; the runs executor and its fork
server call :func:`install` before importing papermill.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from importlib.metadata import entry_points

MODULE = "rfc3987_syntax"


def install() -> None:
    """Replace ``rfc3987_syntax`` by its lazy stand-in unless it is imported or not installed."""
    if MODULE in sys.modules or importlib.util.find_spec(MODULE) is None:
        return
    stub = types.ModuleType(MODULE, "stand-in: the real module is imported at the first call")

    def is_valid_syntax(term: str, value: str) -> bool:
        if sys.modules.get(MODULE) is stub:
            del sys.modules[MODULE]
        real = importlib.import_module(MODULE)
        stub.is_valid_syntax = real.is_valid_syntax
        return real.is_valid_syntax(term, value)

    stub.is_valid_syntax = is_valid_syntax
    sys.modules[MODULE] = stub


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m cscale_extensions.fastimport CONSOLE_SCRIPT [ARGS…]",
              file=sys.stderr)
        return 2
    found = entry_points(group="console_scripts", name=args[0])
    if not found:
        print(f"error: no console script {args[0]!r} is installed", file=sys.stderr)
        return 2
    install()
    sys.argv = list(args)
    result = next(iter(found)).load()()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
