"""Rebuild the vendored subchart archives (helm/cscale-hub/charts/*.tgz) from upstream sources.

Why: the chart repositories of z2jh and dask-gateway are not reachable from CI or from the
development machines, and no package registry that is (PyPI, npm, Debian) carries their chart
archives, so the archives are committed. This script makes them reproducible from the upstream
git tag, doing what the upstream release pipelines do before `helm package`: set the chart
version and the images' "set-by-chartpress" tags to the release, and generate values.schema.json
from values.schema.yaml without descriptions. helm's own archives differ only in file order,
timestamps and the artifacthub annotations; `helm dependency update` (where the chart repositories
are reachable) replaces them with the published ones, and tests/helm/test_vendored_subcharts.py
accepts either.

Usage (SRC is an upstream checkout at the tag, e.g. `git archive 4.4.0 jupyterhub | tar x`):
    python helm/subcharts/build.py jupyterhub 4.4.0 SRC/jupyterhub
    python helm/subcharts/build.py dask-gateway 2026.3.0 SRC/resources/helm/dask-gateway
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "helm" / "cscale-hub" / "charts"
PLACEHOLDER_VERSION = "0.0.1-set.by.chartpress"
PLACEHOLDER_TAG = '"set-by-chartpress"'


def strip_descriptions(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema without its "description" keywords (a value named "description" is kept)."""
    out = {k: v for k, v in schema.items() if k != "description"}
    if isinstance(out.get("properties"), dict):
        out["properties"] = {
            k: strip_descriptions(v) if isinstance(v, dict) else v
            for k, v in out["properties"].items()
        }
    return out


def prepare(src: Path, dest: Path, version: str) -> None:
    """Copy the chart source to dest with the release version, image tags and JSON schema."""
    shutil.copytree(src, dest)
    chart_yaml = dest / "Chart.yaml"
    text = chart_yaml.read_text()
    if PLACEHOLDER_VERSION not in text:
        raise SystemExit(f"{chart_yaml}: no {PLACEHOLDER_VERSION!r} placeholder")
    chart_yaml.write_text(text.replace(PLACEHOLDER_VERSION, version))
    values = dest / "values.yaml"
    values.write_text(values.read_text().replace(PLACEHOLDER_TAG, f'"{version}"'))
    schema_yaml = dest / "values.schema.yaml"
    if schema_yaml.exists():
        schema = strip_descriptions(yaml.safe_load(schema_yaml.read_text()))
        (dest / "values.schema.json").write_text(json.dumps(schema))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name")
    ap.add_argument("version")
    ap.add_argument("source", type=Path, help="the chart directory of the upstream checkout")
    ap.add_argument("--helm", default="helm")
    ap.add_argument("--out", type=Path, default=CHARTS)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / args.name
        prepare(args.source, work, args.version)
        args.out.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [args.helm, "package", str(work), "--destination", str(args.out)], check=True
        )
    print(f"{args.out / f'{args.name}-{args.version}.tgz'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
