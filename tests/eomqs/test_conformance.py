"""stac-api-validator 0.6.8 (in-process, schemas served from local copies) and schemathesis
against a standalone EO-MQS over real rustac sites."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from sitekit import eomqs_server

SCHEMAS = Path(__import__("pystac").__file__).parent / "validation" / "jsonschemas"


def local_schema(url: str) -> dict | None:
    """The local copy of a schema URL the validator asks for (STAC 1.1.0, GeoJSON, draft-07)."""
    import jsonschema_specifications

    name = url.rstrip("#").rsplit("/", 1)[-1]
    if url.startswith("https://schemas.stacspec.org/v1.1.0/"):
        path = SCHEMAS / "stac-spec" / "v1.1.0" / name
    elif url.startswith("https://geojson.org/schema/"):
        path = SCHEMAS / "geojson" / name
    elif "json-schema.org/draft-07/schema" in url:
        return dict(
            jsonschema_specifications.REGISTRY["http://json-schema.org/draft-07/schema#"].contents
        )
    else:
        return None
    return json.loads(path.read_text()) if path.is_file() else None


def test_stac_api_validator(rustac_federation, monkeypatch):
    from stac_api_validator import validations
    from stac_validator import utilities

    asked_elsewhere: list[str] = []
    original = utilities.fetch_and_parse_file

    def fetch(input_path: str, headers=None):
        if input_path.startswith("http") and "127.0.0.1" not in input_path:
            doc = local_schema(input_path)
            if doc is None:
                asked_elsewhere.append(input_path)
                raise ValueError(f"no local copy of {input_path}")
            return doc
        return original(input_path, headers)

    monkeypatch.setattr(utilities, "fetch_and_parse_file", fetch)
    utilities._fetch_and_parse_schema_cache_clear()
    entries, _ = rustac_federation
    with eomqs_server(entries) as srv:
        warnings, errors = validations.validate_api(
            root_url=srv.url,
            ccs_to_validate=[
                *("core", "features", "item-search", "collections"),
                *("item-search#sort", "item-search#filter", "filter"),
            ],
            collection="sentinel-2",
            geometry=json.dumps(
                {
                    "type": "Polygon",
                    "coordinates": [[[-10, 40], [10, 40], [10, 50], [-10, 50], [-10, 40]]],
                }
            ),
            auth_bearer_token=None,
            auth_query_parameter=None,
            fields_nested_property=None,
            validate_pagination=True,
            query_config=validations.QueryConfig(*([None] * 13)),
            transaction_collection=None,
            headers=None,
            open_assets_urls=False,
        )
    assert not asked_elsewhere, f"schemas without a local copy: {asked_elsewhere}"
    assert not list(errors), "\n".join(str(e) for e in errors)
    print("validator warnings:", list(warnings))


@pytest.mark.slow
def test_schemathesis_finds_no_server_errors(rustac_federation, tmp_path):
    entries, _ = rustac_federation
    with eomqs_server(entries) as srv:
        cmd = [
            str(Path(sys.executable).parent / "st"),
            "run",
            srv.url + "api",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "--no-color",
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-6000:]
    print(log[-3000:])
    import re

    m = re.search(r"(\d+) generated, (\d+) passed", log)
    assert m and m.group(1) == m.group(2) and int(m.group(1)) > 50, log[-6000:]
