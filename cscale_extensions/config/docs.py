"""Render the configuration reference (docs/configuration.md) from the settings schema."""

from __future__ import annotations

import json
from typing import Any

from cscale_extensions.config import schema


def _type(node: dict[str, Any]) -> str:
    t = node.get("type", "")
    t = " or ".join(t) if isinstance(t, list) else t
    if "enum" in node:
        t += " (" + " \\| ".join(map(str, node["enum"])) + ")"
    return t.replace("null", "null")


def _rows(prefix: str, node: dict[str, Any], out: list[str]) -> None:
    for key, sub in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if sub.get("type") == "object" and "properties" in sub and "default" not in sub:
            _rows(path, sub, out)
            continue
        default = json.dumps(sub.get("default")) if "default" in sub else ""
        desc = " ".join(str(sub.get("description", "")).split())
        out.append(f"| `{path}` | {_type(sub)} | `{default}` | {desc} |")
        entry = sub.get("additionalProperties")
        if isinstance(entry, dict) and any(  # a map of documented entries: their keys
                "description" in v for v in entry.get("properties", {}).values()):
            _rows(f"{path}.<name>", entry, out)


def render() -> str:
    """The Markdown reference of every setting, section by section."""
    lines = [
        "# Configuration reference",
        "",
        "Generated from `cscale_extensions/config/sections/*.yaml` by "
        "`cscale-hub config docs`; do not edit by hand.",
        "Settings are read from the defaults below, then the YAML file given with "
        "`cscale-hub up --config FILE` (or the chart's `cscale:` values), and validated.",
        "",
    ]
    for section, node in schema()["properties"].items():
        lines += [f"## `{section}`", "", " ".join(str(node.get("description", "")).split()), ""]
        lines += ["| key | type | default | description |", "|---|---|---|---|"]
        rows: list[str] = []
        _rows(section, node, rows)
        lines += rows + [""]
    return "\n".join(lines)
