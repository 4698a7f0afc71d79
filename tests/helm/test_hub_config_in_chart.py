"""The hub configuration as the chart runs it: z2jh's hub.extraConfig snippet from values.yaml
executes the repository's hub_config/jupyterhub_config.py (taken from the rendered ConfigMap)
with the settings from the rendered cscale-settings ConfigMap.

What is real: our snippet, the lead's ``cscale_extensions.hub.configure`` and our
``configure_kubespawner``, traitlets. What stands in for z2jh: its config namespace (``c``
already holding what z2jh's jupyterhub_config.py sets, and z2jh's own ``get_config(key)``
helper, which shadows traitlets' — the reason the snippet exists). The only path changed is
the mount point of the file (a temp dir instead of /usr/local/etc/cscale/hub_config).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from cscale_extensions.hub.kubespawner import CScaleKubeSpawner

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
MOUNTED = "/usr/local/etc/cscale/hub_config/jupyterhub_config.py"
Z2JH_SERVICES = [
    {"name": "jupyterhub-idle-culler", "command": ["python3", "-m", "jupyterhub_idle_culler"]},
    {"name": "dask-gateway", "url": "http://traefik-dask-gateway", "api_token": "from-secret-hub"},
    {"name": "eo-mqs", "url": "http://cscale-eo-mqs:8080", "api_token": "from-secret-hub"},
    {"name": "runs", "url": "http://cscale-runs:8080", "api_token": "from-secret-hub"},
]


def z2jh_get_config(key, default=None):
    """Stand-in for z2jh's helper of the same name (takes a dotted key; traitlets' takes none)."""
    return default


@pytest.fixture
def hub_config(render, obj, tmp_path, monkeypatch):
    """Run the chart's hub.extraConfig snippet as z2jh would; return the resulting config."""
    objs = render(CHART / "examples" / "production.yaml")
    settings_yaml = obj(objs, "ConfigMap", "cscale-settings")["data"]["config.yaml"]
    hub_py = obj(objs, "ConfigMap", "cscale-hub-config")["data"]["jupyterhub_config.py"]
    (tmp_path / "config.yaml").write_text(settings_yaml)
    (tmp_path / "jupyterhub_config.py").write_text(hub_py)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    hub = values["jupyterhub"]["hub"]
    env = hub["extraEnv"]
    assert env["CSCALE_HUB_CONFIG"] == "/etc/cscale/config.yaml"
    mount = next(m for m in hub["extraVolumeMounts"] if m["name"] == "cscale-settings")
    assert mount["mountPath"] == "/etc/cscale"
    monkeypatch.setenv("CSCALE_HUB_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.setenv("CSCALE_OIDC_CLIENT_SECRET", "secret-from-k8s-secret")
    snippet = hub["extraConfig"]["zz-cscale"]
    assert MOUNTED in snippet
    c = Config()
    c.JupyterHub.services = [dict(s) for s in Z2JH_SERVICES]
    c.JupyterHub.load_roles = [
        {
            "name": "jupyterhub-idle-culler",
            "services": ["jupyterhub-idle-culler"],
            "scopes": ["list:users"],
        }
    ]
    exec(
        snippet.replace(MOUNTED, str(tmp_path / "jupyterhub_config.py")),
        {"c": c, "get_config": z2jh_get_config},
    )
    return c


def test_chart_hub_config_selects_kubespawner_with_vo_profiles(hub_config):
    c = hub_config
    assert c.JupyterHub.spawner_class is CScaleKubeSpawner
    assert callable(c.KubeSpawner.profile_list)
    assert c.KubeSpawner.image == "ghcr.io/c-scale/cscale-hub-singleuser:0.1.0"
    assert c.KubeSpawner.storage_capacity == "20Gi"


def test_chart_hub_config_authenticates_with_egi_checkin(hub_config):
    c = hub_config
    auth = c.JupyterHub.authenticator_class
    assert auth.__name__ == "CScaleAuthenticator"
    section = c[auth.__name__]
    assert section.oidc_issuer == "https://aai.egi.eu/auth/realms/egi"
    assert section.client_secret == "secret-from-k8s-secret"
    assert section.vos == ["vo.cscale.eu", "vo.eodc.eu"]
    assert section.admin_roles == ["admin", "manager"]




def test_chart_hub_config_keeps_the_services_z2jh_registered(hub_config):
    """z2jh registers the culler and our services (with api tokens from its Secret) before
    our file runs; the hub configuration must add to them, not replace them."""
    names = [s["name"] for s in hub_config.JupyterHub.services]
    for service in Z2JH_SERVICES:
        assert service["name"] in names
    roles = [r["name"] for r in hub_config.JupyterHub.load_roles]
    assert "jupyterhub-idle-culler" in roles
    tokens = {s["name"]: s.get("api_token") for s in hub_config.JupyterHub.services}
    assert tokens["eo-mqs"] == "from-secret-hub", "z2jh's entry (with its token) wins"
    assert len(tokens) == len(hub_config.JupyterHub.services), "no service registered twice"


def test_chart_hub_config_lets_users_and_servers_reach_the_services(hub_config):
    roles = {r["name"]: r for r in hub_config.JupyterHub.load_roles}
    for role in ("user", "server"):
        for name in ("eo-mqs", "runs", "dask-gateway"):
            assert f"access:services!service={name}" in roles[role]["scopes"], (role, name)


def test_chart_hub_config_serves_each_user_on_a_host_of_their_own(hub_config):
    """Per-user origins in the chart: users at <user>.<hub host>, the hub's services on the
    hub's host, dask-gateway (users' dashboards) on a host no username maps to."""
    c = hub_config
    assert c.JupyterHub.subdomain_host == "https://hub.c-scale.eu"
    assert c.JupyterHub.cookie_host_prefix_enabled is True  # no cookie tossing from users' hosts
    hook = c.JupyterHub.subdomain_hook
    assert hook("alice", "hub.c-scale.eu", "user") == "alice.hub.c-scale.eu"
    for name in ("eo-mqs", "runs", "jupyterhub-idle-culler"):
        assert hook(name, "hub.c-scale.eu", "service") == "hub.c-scale.eu"
    assert hook("dask-gateway", "hub.c-scale.eu", "service") == "dask-gateway--service.hub.c-scale.eu"
    env = c.KubeSpawner.environment
    assert env["DASK_GATEWAY__PUBLIC_ADDRESS"] == (
        "https://dask-gateway--service.hub.c-scale.eu/services/dask-gateway")
    # inside the cluster straight to the gateway's traefik: z2jh's proxy routes by host
    assert env["DASK_GATEWAY__ADDRESS"] == "http://traefik-dask-gateway/services/dask-gateway"


def test_chart_hub_config_serves_the_branded_pages(hub_config):
    """The chart's hub renders our templates (from the installed package) before JupyterHub's,
    with the branding settings: the production hub is not JupyterHub's bare sign-in button."""
    from cscale_extensions.hub.pages import TEMPLATES

    c = hub_config
    assert c.JupyterHub.template_paths[0] == str(TEMPLATES)
    assert {"page.html", "login.html", "error.html"} <= {p.name for p in TEMPLATES.iterdir()}
    branding = c.JupyterHub.template_vars["branding"]
    assert branding["service_name"] and "Dask" in branding["description"]
    assert branding["identity_provider"] == c.CScaleAuthenticator.login_service == "EGI Check-in"
