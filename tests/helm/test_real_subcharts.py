"""Render with the REAL z2jh and dask-gateway subcharts: the archives vendored in
helm/cscale-hub/charts/ (helm/subcharts/README.md), or $CSCALE_SUBCHARTS_DIR when it names a
directory holding others (archives or unpacked charts, e.g. the published ones fetched by
`helm dependency build`). Runs everywhere, CI included. Proves that our subchart values pass
those charts' own schemas and templates, that every rendered object with a Kubernetes schema is
valid for 1.31, and the cross-chart wiring (hub mounts/env, gateway env, generated service
tokens). tests/helm/test_vendored_subcharts.py adds lint, every supported Kubernetes version and
Pod Security.
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
if SOURCE is None:
    raise RuntimeError(
        f"the pinned subcharts {sorted(WANTED)} are neither in {CHART / 'charts'} nor in "
        "$CSCALE_SUBCHARTS_DIR (see helm/subcharts/README.md)"
    )


@pytest.fixture(scope="module")
def real_chart(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("real")
    dest = root / "helm" / "cscale-hub"
    shutil.copytree(CHART, dest, symlinks=True, ignore=shutil.ignore_patterns("charts"))
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
    assert "/etc/cscale" in {m["mountPath"] for m in hub["volumeMounts"]}
    assert {"CSCALE_HUB_CONFIG", "CSCALE_OIDC_CLIENT_SECRET"} <= {e["name"] for e in hub["env"]}
    secret = get("Secret", "hub")["data"]
    for name in ("dask-gateway", "eo-mqs", "runs"):
        assert base64.b64decode(secret[f"hub.services.{name}.apiToken"])
    gw = get("Deployment", "api-cscale-dask-gateway")["spec"]["template"]["spec"]["containers"][0]
    assert "CSCALE_SETTINGS_YAML" in {e["name"] for e in gw["env"]}
    assert "configure_from_environment(c)" in (
        get("ConfigMap", "api-cscale-dask-gateway")["data"]["dask_gateway_config.py"]
    )
    get("Service", "traefik-cscale-dask-gateway")
    # user pods' egress rule for traefik selects the real traefik pods
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rule = next(
        e
        for e in values["jupyterhub"]["singleuser"]["networkPolicy"]["egress"]
        if "traefik" in str(e)
    )
    selector = rule["to"][0]["podSelector"]["matchLabels"]
    traefik = get("Deployment", "traefik-cscale-dask-gateway")["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= traefik.items()


def _z2jh_file(name: str) -> str:
    """files/hub/<name> of the real z2jh chart (unpacked dir or .tgz archive)."""
    import tarfile

    unpacked = SOURCE / "jupyterhub" / "files" / "hub" / name
    if unpacked.exists():
        return unpacked.read_text()
    with tarfile.open(SOURCE / "jupyterhub-4.4.0.tgz") as tar:
        return tar.extractfile(f"jupyterhub/files/hub/{name}").read().decode()


def test_z2jh_hub_config_with_ours(run, real_chart, tmp_path, monkeypatch):
    """z2jh 4.4.0's own jupyterhub_config.py + z2jh.py loaded with the rendered hub ConfigMap /
    Secret, which carry our extraConfig snippet: z2jh's configuration, then ours from the
    installed package, merged once. Patched for running outside the hub pod: the mount paths
    (/usr/local/etc/jupyterhub, /etc/cscale) point into a temp dir and the line selecting
    tornado's curl client (pycurl is not installed here) is dropped."""
    from traitlets.config import PyFileConfigLoader

    from cscale_extensions.hub.kubespawner import CScaleKubeSpawner

    out = run(
        "template",
        "cscale",
        str(real_chart),
        "-n",
        "cscale",
        "-f",
        str(CHART / "examples" / "production.yaml"),
    )
    objs = [d for d in yaml.safe_load_all(out) if d]

    def get(kind, name):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    root = tmp_path
    for sub in ("config", "secret"):
        (root / sub).mkdir()
    for key, value in get("ConfigMap", "hub")["data"].items():
        (root / "config" / key).write_text(value)
    secret = {k: base64.b64decode(v).decode() for k, v in get("Secret", "hub")["data"].items()}
    for key, text in secret.items():
        (root / "secret" / key).write_text(text)
    rendered = yaml.safe_load(secret["values.yaml"])["hub"]
    assert "configure_from_environment(c)" in rendered["extraConfig"]["zz-cscale"]
    (root / "settings.yaml").write_text(get("ConfigMap", "cscale-settings")["data"]["config.yaml"])
    (root / "z2jh.py").write_text(
        _z2jh_file("z2jh.py").replace("/usr/local/etc/jupyterhub/", f"{root}/")
    )
    config_py = _z2jh_file("jupyterhub_config.py").replace(
        'AsyncHTTPClient.configure("tornado.curl_httpclient.CurlAsyncHTTPClient")', "pass"
    )
    (root / "jupyterhub_config.py").write_text(config_py)
    for k, v in {
        "HELM_RELEASE_NAME": "cscale",
        "POD_NAMESPACE": "cscale",
        "CONFIGPROXY_AUTH_TOKEN": "x",
        "HUB_SERVICE_HOST": "10.0.0.1",
        "HUB_SERVICE_PORT": "8081",
        "PROXY_API_SERVICE_HOST": "10.0.0.2",
        "PROXY_API_SERVICE_PORT": "8001",
        "PROXY_PUBLIC_SERVICE_HOST": "10.0.0.3",
        "PROXY_PUBLIC_SERVICE_PORT": "80",
        "CSCALE_HUB_CONFIG": str(root / "settings.yaml"),
        "CSCALE_OIDC_CLIENT_SECRET": "s",
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.syspath_prepend(str(root))
    c = PyFileConfigLoader("jupyterhub_config.py", path=str(root)).load_config()
    assert c.JupyterHub.spawner_class is CScaleKubeSpawner
    assert c.JupyterHub.authenticator_class.__name__ == "CScaleAuthenticator"
    # the one merge: z2jh's services as z2jh registered them (culler, then hub.services with
    # the tokens of its Secret), z2jh's roles first (culler, hub.loadRoles), ours after
    assert [s["name"] for s in c.JupyterHub.services] == [
        "jupyterhub-idle-culler", "dask-gateway", "eo-mqs", "runs"
    ]
    for s in c.JupyterHub.services[1:]:
        assert s["api_token"] == secret[f"hub.services.{s['name']}.apiToken"]
    assert [r["name"] for r in c.JupyterHub.load_roles] == [
        "jupyterhub-idle-culler", "runs-service", "user", "server"
    ]
    user = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert "access:services!service=eo-mqs" in user["scopes"]
    assert c.KubeSpawner.extra_labels["hub.jupyter.org/network-access-hub"] == "true"
    assert [getattr(i, "name", None) or i["name"] for i in c.KubeSpawner.init_containers] == [
        "seed-notebooks"
    ]
    assert c.JupyterHub.db_url.startswith("postgresql")


def test_dask_gateway_chart_config_with_ours(run, real_chart, tmp_path, monkeypatch):
    """The real dask-gateway chart's rendered dask_gateway_config.py (ConfigMap api-dask-gateway,
    our extraConfig at its end), loaded as dask-gateway-server loads it, with the environment
    the chart gives the gateway pod: the settings YAML of the rendered cscale-settings."""
    from traitlets.config import PyFileConfigLoader

    from cscale_extensions.gateway.kubernetes import LimitedKubeBackend

    out = run("template", "cscale", str(real_chart), "-n", "cscale",
              "-f", str(CHART / "examples" / "production.yaml"))
    objs = [d for d in yaml.safe_load_all(out) if d]

    def get(kind, name):
        return next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)

    gw = get("Deployment", "api-cscale-dask-gateway")["spec"]["template"]["spec"]["containers"][0]
    ref = next(e for e in gw["env"] if e["name"] == "CSCALE_SETTINGS_YAML")
    assert ref["valueFrom"]["configMapKeyRef"] == {"name": "cscale-settings", "key": "config.yaml"}
    monkeypatch.setenv(
        "CSCALE_SETTINGS_YAML", get("ConfigMap", "cscale-settings")["data"]["config.yaml"]
    )
    monkeypatch.delenv("CSCALE_HUB_CONFIG", raising=False)
    monkeypatch.setenv("HUB_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("HUB_SERVICE_PORT", "8081")
    (tmp_path / "dask_gateway_config.py").write_text(
        get("ConfigMap", "api-cscale-dask-gateway")["data"]["dask_gateway_config.py"]
    )
    c = PyFileConfigLoader("dask_gateway_config.py", path=str(tmp_path)).load_config()
    assert issubclass(c.DaskGateway.backend_class, LimitedKubeBackend)
    assert c.DaskGateway.backend_class.max_clusters_per_user == 2
    assert c.KubeBackend.gateway_instance == "cscale-dask-gateway"  # the chart's own settings kept
    assert c.JupyterHubAuthenticator.jupyterhub_api_url == "http://10.0.0.1:8081/hub/api"
    assert c.KubeClusterConfig.image == "ghcr.io/c-scale/cscale-hub-singleuser:0.1.0"
    assert c.KubeClusterConfig.scheduler_cmd == [
        "dask", "scheduler", "--preload", "cscale_extensions.dashboard_guard.preload"
    ]

