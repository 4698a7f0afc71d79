"""Chart metadata: pinned dependencies, an honest Chart.lock, generated files up to date."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
import yaml

from cscale_extensions import config as settings
from tools import chart_schema

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"


def _deps() -> list[dict]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]


def test_dependencies_are_pinned_to_exact_versions():
    deps = {d["name"]: d for d in _deps()}
    assert deps["jupyterhub"]["repository"] == "https://hub.jupyter.org/helm-chart/"
    assert deps["jupyterhub"]["version"].split(".")[0] == "4"
    assert deps["dask-gateway"]["repository"] == "https://helm.dask.org/"
    assert deps["dask-gateway"]["version"] == "2026.3.0"
    for d in deps.values():
        assert all(part.isdigit() for part in d["version"].split(".")), d


def _helm_lock_digest(req: list[dict], lock: list[dict]) -> str:
    """helm's HashReq: sha256 of the JSON of [Chart.yaml deps, locked deps] (Go field order)."""
    order = [
        "name",
        "version",
        "repository",
        "condition",
        "tags",
        "enabled",
        "import-values",
        "alias",
    ]

    def enc(d: dict) -> dict:
        return {k: d.get(k, "") for k in order if k in ("name", "repository") or d.get(k)}

    data = json.dumps([[enc(d) for d in req], [enc(d) for d in lock]], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(data.encode()).hexdigest()


def test_chart_lock_pins_what_chart_yaml_asks_for():
    lock = yaml.safe_load((CHART / "Chart.lock").read_text())
    req = _deps()
    assert [(d["name"], d["version"], d["repository"]) for d in lock["dependencies"]] == [
        (d["name"], d["version"], d["repository"]) for d in req
    ]
    assert lock["digest"] == _helm_lock_digest(req, lock["dependencies"])


def test_helm_dependency_build_accepts_chart_lock_as_in_sync(run, helm_error, tmp_path):
    """helm checks the lock digest before downloading; here the download itself must fail
    (repositories unreachable / not added), not the sync check."""
    chart = tmp_path / "cscale-hub"
    chart.mkdir()
    for name in ("Chart.yaml", "Chart.lock"):
        shutil.copy(CHART / name, chart / name)
    with pytest.raises(helm_error) as err:
        run("dependency", "build", str(chart))
    assert "out of sync" not in err.value.stderr
    assert "repository" in err.value.stderr or "repo" in err.value.stderr
    # and a tampered lock is caught by the same helm check
    text = (chart / "Chart.lock").read_text().replace("version: 4.4.0", "version: 4.3.0")
    (chart / "Chart.lock").write_text(text)
    with pytest.raises(helm_error, match="out of sync"):
        run("dependency", "build", str(chart))


def test_generated_values_schema_and_values_are_current():
    assert chart_schema.main(["--check"]) == 0, "run python -m tools.chart_schema"


def test_values_schema_cscale_part_is_the_settings_schema():
    """One source of truth: every settings section and key appears in the chart's schema."""
    doc = json.loads((CHART / "values.schema.json").read_text())
    cs = doc["properties"]["cscale"]
    full = settings.schema()
    assert set(cs["properties"]) == set(full["properties"])
    for name, section in full["properties"].items():
        assert set(cs["properties"][name].get("properties", {})) == set(
            section.get("properties", {})
        ), name


def test_every_value_of_ours_is_documented():
    doc = json.loads((CHART / "values.schema.json").read_text())

    def described(sub: dict) -> bool:
        if "$ref" in sub:  # draft-07 ignores siblings of $ref: the definition documents it
            sub = doc["definitions"][sub["$ref"].rsplit("/", 1)[1]]
        return bool(sub.get("description"))

    def walk(node: dict, path: str) -> None:
        if "$ref" in node or "allOf" in node:
            return
        for key, sub in node.get("properties", {}).items():
            assert described(sub), f"{path}.{key} has no description"
            walk(sub, f"{path}.{key}")

    walk(doc, "values")
    for name, d in doc["definitions"].items():
        walk(d, f"definitions.{name}")


def test_values_yaml_is_valid_under_its_schema():
    doc = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    jsonschema.Draft7Validator(doc).validate(values)
    for example in (CHART / "examples").glob("*.yaml"):
        merged = settings.deep_merge(values, yaml.safe_load(example.read_text()))
        jsonschema.Draft7Validator(doc).validate(merged)


def test_values_yaml_documents_every_setting_with_its_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["cscale"]
    defaults = settings.defaults()
    for section in chart_schema.LOCAL_ONLY:
        defaults.pop(section)
    assert set(values) == set(defaults)
    assert values["culler"] == defaults["culler"]
    assert values["kubernetes"]["profiles"] == defaults["kubernetes"]["profiles"]


def test_runs_service_role_in_values_is_the_runs_modules_role():
    from cscale_extensions.services.runs import role_spec

    roles = yaml.safe_load((CHART / "values.yaml").read_text())["jupyterhub"]["hub"]["loadRoles"]
    spec = role_spec()
    assert {"name": spec["name"], **roles[spec["name"]]} == spec
