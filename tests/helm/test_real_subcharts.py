"""Opt-in: render with the REAL z2jh and dask-gateway subcharts.

Runs when the pinned subchart archives are present (after `helm dependency build helm/cscale-hub`
where the chart repositories are reachable), or when $CSCALE_SUBCHARTS_DIR names a directory
holding them (archives or unpacked charts). Skipped otherwise, with the reason. Proves that our
subchart values pass those charts' own schemas and templates, that every rendered object with
a Kubernetes schema is valid for 1.31, and the cross-chart wiring (hub mounts/env, gateway env,
generated service tokens).
"""

from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
WANTED = {"jupyterhub-4.4.0", "dask-gateway-2026.3.0"}


def _source() -> Path | None:
    env = os.environ.get("CSCALE_SUBCHARTS_DIR")
    for d in ([Path(env)] if env else []) + [CHART / "charts"]:
        if d.is_dir():
            names = {p.name.removesuffix(".tgz") for p in d.iterdir() if p.suffix == ".tgz"}
            names |= {
                f"{p.name}-{yaml.safe_load((p / 'Chart.yaml').read_text())['version']}"
                for p in d.iterdir()
                if (p / "Chart.yaml").exists()
            }
            if names >= WANTED:
                return d
    return None


SOURCE = _source()
pytestmark = pytest.mark.skipif(
    SOURCE is None,
    reason="real subcharts absent: run `helm dependency build helm/cscale-hub` where "
    "hub.jupyter.org and helm.dask.org are reachable, or set CSCALE_SUBCHARTS_DIR",
)


@pytest.fixture(scope="module")
def real_chart(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    dest = root / "helm" / "cscale-hub"
    shutil.copytree(CHART, dest, symlinks=True, ignore=shutil.ignore_patterns("charts"))
    (root / "hub_config").symlink_to(REPO / "hub_config", target_is_directory=True)
    shutil.copytree(SOURCE, dest / "charts")
    return dest


@pytest.mark.parametrize("example", [None, "production", "workshop"])
def test_real_subcharts_render_valid_objects(run, real_chart, example):
    args = ["template", "cscale", str(real_chart), "-n", "cscale"]
    if example:
        args += ["-f", str(CHART / "examples" / f"{example}.yaml")]
    objs = [d for d in yaml.safe_load_all(run(*args)) if d]
    checked = 0
    for o in objs:
        try:
            kubernetes_validate.validate(o, "1.31", strict=True)
            checked += 1
        except kubernetes_validate.SchemaNotFoundError:
            assert o["apiVersion"].startswith(("traefik.", "gateway.dask.org")), o["kind"]
    assert checked > 40

    def get(kind, name):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    hub = get("Deployment", "hub")["spec"]["template"]["spec"]["containers"][0]
    assert {"/etc/cscale", "/usr/local/etc/cscale/hub_config"} <= {
        m["mountPath"] for m in hub["volumeMounts"]
    }
    assert {"CSCALE_HUB_CONFIG", "CSCALE_OIDC_CLIENT_SECRET"} <= {e["name"] for e in hub["env"]}
    secret = get("Secret", "hub")["data"]
    for name in ("dask-gateway", "eo-mqs", "runs"):
        assert base64.b64decode(secret[f"hub.services.{name}.apiToken"])
    gw = get("Deployment", "api-dask-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert {"CSCALE_SETTINGS_YAML", "CSCALE_GATEWAY_CONFIG_PY"} <= {e["name"] for e in gw["env"]}
    assert (
        "run_config_from_env(c)"
        in get("ConfigMap", "api-dask-gateway")["data"]["dask_gateway_config.py"]
    )
    get("Service", "traefik-dask-gateway")
    # user pods' egress rule for traefik selects the real traefik pods
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rule = next(
        e
        for e in values["jupyterhub"]["singleuser"]["networkPolicy"]["egress"]
        if "traefik" in str(e)
    )
    selector = rule["to"][0]["podSelector"]["matchLabels"]
    traefik = get("Deployment", "traefik-dask-gateway")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= traefik.items()
