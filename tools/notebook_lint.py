"""Lint workflow notebooks: the conventions every template notebook of C-SCALE Hub follows.

A notebook passes when

- its first cell is markdown with a title and the sections *What it does*, *Use case*,
  *What this is / is not* (the claims: what the notebook does and does not show, so no reader
  takes it for the C-SCALE workflow it relates to), *Parameters* and *Run time* (as
  headings), and the Parameters section names every variable of the parameters cell; the
  claims section must say both what the notebook is and what it is not;
- exactly one code cell carries the ``parameters`` tag (papermill injects after it);
- its last cell is a code cell that records results with scrapbook (``sb.glue(...)``);
- no code cell holds a URL literal (service addresses come from the environment);
- (``clean=True``) no code cell has outputs or an execution count (committed clean).

Run ``python -m tools.notebook_lint NOTEBOOK...``: prints one line per problem,
exits 1 when there is any.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import nbformat

#: heading text (lower case) each header must contain -> the name used in messages
HEADER_SECTIONS = {
    "what it does": "What it does",
    "use case": "Use case",
    "what this is / is not": "What this is / is not",
    "parameters": "Parameters",
    "run time": "Run time",
}
URL_LITERAL = re.compile(r"""["'][a-z][a-z0-9+.-]*://""", re.I)
GLUE_CALL = re.compile(r"\b(?:sb|scrapbook)\.glue\(")


def _source(cell: Any) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _headings(markdown: str) -> list[str]:
    return [
        line.lstrip("#").strip().lower() for line in markdown.splitlines() if line.startswith("#")
    ]


def _section(markdown: str, name: str) -> str:
    """The text under the first heading containing ``name`` (up to the next heading)."""
    out: list[str] = []
    inside = False
    for line in markdown.splitlines():
        if line.startswith("#"):
            if inside:
                break
            inside = name in line.lower()
            continue
        if inside:
            out.append(line)
    return "\n".join(out)


def parameter_names(code: str) -> list[str]:
    """Names assigned at the top level of a parameters cell."""
    names: list[str] = []
    for node in ast.parse(code).body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for t in targets:
            if isinstance(t, ast.Name):
                names.append(t.id)
    return names


def lint_notebook(nb: Any, clean: bool = True) -> list[str]:
    """Problems of the notebook ``nb`` (an nbformat node or a path); empty when it passes."""
    if isinstance(nb, (str, Path)):
        nb = nbformat.read(str(nb), as_version=4)
    cells = nb.get("cells", [])
    if not cells:
        return ["the notebook has no cells"]
    problems: list[str] = []

    header = cells[0]
    header_md = _source(header) if header.get("cell_type") == "markdown" else ""
    if not header_md:
        problems.append("the first cell must be the markdown header")
    else:
        if not header_md.lstrip().startswith("# "):
            problems.append("the header must start with a '# ' title")
        heads = _headings(header_md)
        for key, label in HEADER_SECTIONS.items():
            if not any(key in h for h in heads):
                problems.append(f"the header has no '{label}' section")
        claims = _section(header_md, "what this is / is not").lower()
        if any("what this is / is not" in h for h in heads) and not (
            re.search(r"\bis:", claims) and re.search(r"\bis not:", claims)
        ):
            problems.append(
                "the 'What this is / is not' section must say what the notebook is ('Is:') "
                "and what it is not ('Is not:')"
            )

    tagged = [
        i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    if len(tagged) != 1:
        problems.append(f"exactly one cell must be tagged 'parameters' (found {len(tagged)})")
    else:
        cell = cells[tagged[0]]
        if cell.get("cell_type") != "code":
            problems.append("the 'parameters' cell must be a code cell")
        else:
            try:
                names = parameter_names(_source(cell))
            except SyntaxError as exc:
                names = []
                problems.append(f"the parameters cell does not parse: {exc}")
            if not names:
                problems.append("the parameters cell assigns no variables")
            documented = _section(header_md, "parameters")
            for name in names:
                if not re.search(rf"`{re.escape(name)}`", documented):
                    problems.append(
                        f"parameter `{name}` is not described in the header's Parameters section"
                    )

    last = cells[-1]
    if last.get("cell_type") != "code" or not GLUE_CALL.search(_source(last)):
        problems.append("the last cell must be a code cell recording results with sb.glue(...)")

    for i, cell in enumerate(cells):
        if cell.get("cell_type") != "code":
            continue
        if URL_LITERAL.search(_source(cell)):
            problems.append(
                f"cell {i} holds a URL literal; read service addresses from the environment"
            )
        if clean and (cell.get("outputs") or cell.get("execution_count") is not None):
            problems.append(
                f"cell {i} has outputs or an execution count (commit notebooks cleared)"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print("usage: python -m tools.notebook_lint NOTEBOOK...", file=sys.stderr)
        return 2
    failed = False
    for path in paths:
        try:
            problems = lint_notebook(path)
        except (OSError, ValueError) as exc:  # unreadable or not a notebook
            problems = [f"cannot read: {exc}"]
        for p in problems:
            print(f"{path}: {p}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
