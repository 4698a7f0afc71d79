"""Generate the Helm chart's values.schema.json and values.yaml: one source of truth.

The ``cscale`` values block IS the platform configuration, so its schema is
:func:`cscale_extensions.config.schema` (every section file), tightened where the chart
allows less than the local stack (Kubernetes spawner and gateway, a real OIDC issuer, no
embedded STAC sites). The rest comes from ``helm/cscale-hub/schema/values.base.schema.yaml``.

values.yaml carries every setting at its default (so the chart's templates see them and
``helm show values`` documents them), with the chart's own choices from
``schema/cscale.chart.yaml`` merged over it; the parts around it are ``schema/values.head.yaml``
and ``schema/values.rest.yaml``.

``python -m tools.chart_schema`` rewrites both files; ``--check`` exits 1
when a committed file is stale.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from cscale_extensions import config as settings

CHART_DIR = Path(__file__).resolve().parents[1] / "helm" / "cscale-hub"
SCHEMA_DIR = CHART_DIR / "schema"
BASE = SCHEMA_DIR / "values.base.schema.yaml"
TARGET = CHART_DIR / "values.schema.json"
VALUES = CHART_DIR / "values.yaml"
#: sections that only the local stack reads; left to their defaults in the chart
LOCAL_ONLY = ("embedded_oidc", "runtime")

#: (section, key) -> constraint the chart adds to the settings schema
CHART_ONLY: dict[tuple[str, str], tuple[dict[str, Any], str]] = {
    ("platform", "deployment"): ({"const": "kubernetes"}, "must be kubernetes"),
    ("spawner", "backend"): ({"const": "kubernetes"}, "must be kubernetes"),
    ("dask_gateway", "backend"): ({"const": "kubernetes"}, "must be kubernetes"),
    ("federation", "embedded_sites"): ({"const": False}, "must be false (local stack only)"),
    ("auth", "issuer"): ({"type": "string", "pattern": "^https://"}, "an https:// URL is required"),
    ("auth", "client_secret"): (
        {"type": "null"},
        "must be null: the ConfigMap is no place for secrets; use the Secret cscale-oidc",
    ),
    ("eomqs", "token_secret"): (
        {"type": "null"},
        "must be null: the chart's Secret cscale-eomqs-token is used",
    ),
    ("hub", "db_url"): (
        {"type": "null"},
        "must be null: set the hub database with jupyterhub.hub.db",
    ),
    ("platform", "public_url"): (
        {"type": "string", "pattern": "^https?://.+/$"},
        "required; an http(s) URL ending with /",
    ),
}


def cscale_schema() -> dict[str, Any]:
    """The settings schema as the chart's ``cscale`` property, with the chart's constraints."""
    full = copy.deepcopy(settings.schema())
    full.pop("$schema", None)
    full.pop("title", None)
    full["description"] = (
        "Platform settings: the same model as `cscale-hub up --config FILE` "
        "(cscale_extensions/config/sections). Omitted keys take their defaults."
    )
    for (section, key), (extra, note) in CHART_ONLY.items():
        prop = full["properties"][section]["properties"][key]
        prop.update(extra)
        prop["description"] = f"{prop.get('description', '').strip()} [Helm chart: {note}]"
    return full


def build() -> dict[str, Any]:
    """The complete values.schema.json document."""
    doc = yaml.safe_load(BASE.read_text())
    description = doc["properties"]["cscale"].get("description")
    doc["properties"]["cscale"] = cscale_schema()
    if description:
        doc["properties"]["cscale"]["description"] = description
    return doc


def render() -> str:
    return json.dumps(build(), indent=2, sort_keys=False) + "\n"


def chart_cscale_values() -> dict[str, Any]:
    """Settings defaults with the chart's own choices merged over them."""
    chart = yaml.safe_load((SCHEMA_DIR / "cscale.chart.yaml").read_text()) or {}
    merged = settings.deep_merge(settings.defaults(), chart)
    for section in LOCAL_ONLY:
        merged.pop(section, None)
    return merged


def _comment(text: str, indent: str) -> list[str]:
    words = " ".join(text.split())
    lines, line = [], ""
    for word in words.split(" "):
        if line and len(indent) + 2 + len(line) + 1 + len(word) > 96:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    if line:
        lines.append(line)
    return [f"{indent}# {x}" for x in lines]


def _emit(value: Any, node: dict[str, Any], depth: int) -> list[str]:
    indent = "  " * depth
    out: list[str] = []
    for key, val in value.items():
        sub = node.get("properties", {}).get(key, {})
        if sub.get("description"):
            out.extend(_comment(sub["description"], indent))
        if isinstance(val, dict) and val and "properties" in sub:
            out.append(f"{indent}{key}:")
            out.extend(_emit(val, sub, depth + 1))
        else:
            dumped = yaml.safe_dump(
                {key: val}, sort_keys=False, default_flow_style=False, width=1000
            )
            out.extend(f"{indent}{line}" for line in dumped.rstrip("\n").split("\n"))
    return out


def render_values() -> str:
    """The complete values.yaml."""
    head = (SCHEMA_DIR / "values.head.yaml").read_text()
    rest = (SCHEMA_DIR / "values.rest.yaml").read_text()
    body = _emit({"cscale": chart_cscale_values()}, {"properties": {"cscale": cscale_schema()}}, 0)
    note = [
        "# ---- generated by `python -m tools.chart_schema` from",
        "# ---- cscale_extensions/config/sections + schema/cscale.chart.yaml; do not edit here",
    ]
    return head + "\n".join(note + body) + "\n\n" + rest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate the chart's values.schema.json and values.yaml."
    )
    parser.add_argument("--check", action="store_true", help="fail if a file is not current")
    args = parser.parse_args(argv)
    stale = []
    for target, text in ((TARGET, render()), (VALUES, render_values())):
        current = target.read_text() if target.exists() else ""
        if current == text:
            continue
        if args.check:
            stale.append(str(target))
        else:
            target.write_text(text)
            print(target)
    if stale:
        print(
            f"stale: {', '.join(stale)}; run python -m tools.chart_schema",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
