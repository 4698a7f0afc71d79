"""The hub configuration as the chart runs it: z2jh's hub.extraConfig snippet from values.yaml
calls the installed package (``cscale_extensions.hub.configure_from_environment``, the same
entry point as the local stack's hub_config/jupyterhub_config.py) with the settings from the
rendered cscale-settings ConfigMap.

What is real: our snippet, ``cscale_extensions.hub.configure`` and its one merge of services
and roles (``register``), our ``configure_kubespawner``, traitlets. What stands in for z2jh:
its config namespace (``c`` already holding the services and roles z2jh's jupyterhub_config.py
registers before extraConfig runs, and z2jh's own ``get_config(key)`` helper). The run of z2jh's
real jupyterhub_config.py with the rendered snippet is tests/helm/test_real_subcharts.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from traitlets.config import Config, PyFileConfigLoader

from cscale_extensions.hub.kubespawner import CScaleKubeSpawner

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "cscale-hub"
#: what z2jh 4.4's jupyterhub_config.py registers from our values: the culler (cull.enabled),
#: then hub.services with the api tokens it generates into its Secret `hub`
Z2JH_SERVICES = [
    {"name": "jupyterhub-idle-culler", "command": ["python3", "-m", "jupyterhub_idle_culler"]},
    {"name": "dask-gateway", "url": "http://cscale-dask-gateway", "api_token": "from-secret-hub"},
    {"name": "eo-mqs", "url": "http://cscale-eo-mqs:8080", "api_token": "from-secret-hub"},
    {"name": "runs", "url": "http://cscale-runs:8080", "api_token": "from-secret-hub"},
]
#: ... and the culler's role, then hub.loadRoles
Z2JH_ROLES = [
    {"name": "jupyterhub-idle-culler", "services": ["jupyterhub-idle-culler"], "scopes": ["list:users"]},
    {"name": "runs-service", "services": ["runs"], "scopes": ["start:servers"]},
]


def z2jh_get_config(key, default=None):
    """Stand-in for z2jh's helper of the same name (takes a dotted key; traitlets' takes none)."""
    return default


@pytest.fixture
def chart_env(render, obj, tmp_path, monkeypatch):
    """The hub container's environment as the chart sets it, the settings file in a temp dir."""
    objs = render(CHART / "examples" / "production.yaml")
    settings_yaml = obj(objs, "ConfigMap", "cscale-settings")["data"]["config.yaml"]
    (tmp_path / "config.yaml").write_text(settings_yaml)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    hub = values["jupyterhub"]["hub"]
    assert hub["extraEnv"]["CSCALE_HUB_CONFIG"] == "/etc/cscale/config.yaml"
    mount = next(m for m in hub["extraVolumeMounts"] if m["name"] == "cscale-settings")
    assert mount["mountPath"] == "/etc/cscale"
    monkeypatch.setenv("CSCALE_HUB_CONFIG", str(tmp_path / "config.yaml"))
    monkeypatch.setenv("CSCALE_OIDC_CLIENT_SECRET", "secret-from-k8s-secret")
    return hub


@pytest.fixture
def hub_config(chart_env):
    """Run the chart's hub.extraConfig snippet as z2jh would; return the resulting config."""
    snippet = chart_env["extraConfig"]["zz-cscale"]
    c = Config()
    c.JupyterHub.services = [dict(s) for s in Z2JH_SERVICES]
    c.JupyterHub.load_roles = [dict(r) for r in Z2JH_ROLES]
    exec(snippet, {"c": c, "get_config": z2jh_get_config})
    return c


def test_the_chart_snippet_calls_the_installed_package(chart_env):
    """No mounted copy of the configuration, no runpy, no exec of text from elsewhere."""
    snippet = chart_env["extraConfig"]["zz-cscale"]
    assert snippet.split() == [
        "from", "cscale_extensions.hub", "import", "configure_from_environment",
        "configure_from_environment(c)",
    ]
    assert {v["name"] for v in chart_env["extraVolumes"]} == {"cscale-settings"}


def _comparable(value):
    """A config value compared by what it is (functions and classes by their qualified name)."""
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', value)}"
    if isinstance(value, dict):
        return {k: _comparable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_comparable(v) for v in value]
    return value


def test_the_chart_and_the_local_stack_run_the_same_configuration_code(chart_env, tmp_path):
    """hub_config/jupyterhub_config.py (what the local stack's hub loads) and the chart's
    snippet, on the same settings, configure the very same traits to the same values; the
    chart's result has z2jh's services and roles in front, nothing else differs."""
    snippet = chart_env["extraConfig"]["zz-cscale"]
    chart = Config()
    exec(snippet, {"c": chart, "get_config": z2jh_get_config})
    local = PyFileConfigLoader("jupyterhub_config.py", path=str(REPO / "hub_config")).load_config()
    assert sorted(chart) == sorted(local)
    for section in chart:
        assert sorted(chart[section]) == sorted(local[section]), section
        for trait in chart[section]:
            assert _comparable(chart[section][trait]) == _comparable(local[section][trait]), (
                f"{section}.{trait}"
            )


def test_one_append_only_merge_keeps_z2jhs_entries_in_front(hub_config):
    """z2jh's services (with their tokens) and roles stay as z2jh registered them, in its
    order; ours (on Kubernetes: no services, the `user` and `server` roles) follow."""
    assert hub_config.JupyterHub.services == Z2JH_SERVICES
    roles = hub_config.JupyterHub.load_roles
    assert roles[: len(Z2JH_ROLES)] == Z2JH_ROLES
    assert [r["name"] for r in roles[len(Z2JH_ROLES) :]] == ["user", "server"]


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
    assert env["DASK_GATEWAY__ADDRESS"] == "http://cscale-dask-gateway/services/dask-gateway"


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
