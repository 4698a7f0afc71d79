"""Which hub services and roles the hub configuration registers, for the local stack and for
Kubernetes, from the real settings model into a real traitlets Config (nothing is started).

What must hold: the hub starts exactly the enabled services of a local stack, each marked
with its name (so a restarted hub can find a killed predecessor's services); users and their
servers may reach every enabled platform service and nothing more; the operator's API token
reaches only its own service entry; what an earlier config file (z2jh) registered is kept, in
front of ours, unless we register the same name (``hub.register``, the one merge). The chart's
own run of this configuration, with z2jh's entries, is tests/helm/test_hub_config_in_chart.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from traitlets.config import Config

from cscale_extensions import config
from cscale_extensions.hub import ADMIN_TOKEN_ENV, SERVICE_ENV, configure_services

ADMIN_TOKEN = "operator-token-0123456789"


def registered(overrides: dict[str, Any], c: Config | None = None) -> tuple[dict, dict]:
    """(services by name, roles by name) that configure_services leaves in ``c``."""
    cfg = config.load(None, overrides)
    c = c or Config()
    configure_services(c, cfg)
    services = {s["name"]: s for s in c.JupyterHub.services}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert len(services) == len(c.JupyterHub.services), "a service registered twice"
    assert len(roles) == len(c.JupyterHub.load_roles), "a role registered twice"
    return services, roles


def local(tmp_path, ports: dict[str, int] | None = None, **sections: Any) -> dict[str, Any]:
    """Settings of a local stack whose launcher gave ``ports`` to the platform services."""
    base = {
        "platform": {"deployment": "local", "data_dir": str(tmp_path), "stack_id": None},
        "runtime": {"service_ports": {"eo-mqs": 18001, "runs": 18002} if ports is None else ports},
    }
    return config.deep_merge(base, sections)


def access(role: dict[str, Any]) -> set[str]:
    prefix = "access:services!service="
    return {s[len(prefix) :] for s in role["scopes"] if s.startswith(prefix)}


@pytest.fixture(autouse=True)
def _no_operator_token(monkeypatch):
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)


def test_a_local_stack_starts_every_enabled_service_marked_with_its_name(tmp_path):
    services, roles = registered(local(tmp_path))
    assert set(services) == {"dask-gateway", "idle-culler", "eo-mqs", "runs"}
    for name, svc in services.items():
        assert svc["environment"][SERVICE_ENV] == name
        assert svc["command"], name  # the hub runs it
    assert services["eo-mqs"]["url"] == "http://127.0.0.1:18001"
    assert services["runs"]["url"] == "http://127.0.0.1:18002"
    assert roles["idle-culler"]["services"] == ["idle-culler"]
    assert "delete:servers" in roles["idle-culler"]["scopes"]
    assert roles["runs-service"]["services"] == ["runs"]
    for role in ("user", "server"):
        assert access(roles[role]) == {"dask-gateway", "eo-mqs", "runs"}, role


def test_disabled_services_are_neither_started_nor_reachable(tmp_path):
    cfg = local(
        tmp_path,
        dask_gateway={"enabled": False},
        culler={"enabled": False},
        runs={"enabled": False},
        ports={"eo-mqs": 18001},  # the launcher gives no port to a disabled service
    )
    services, roles = registered(cfg)
    assert set(services) == {"eo-mqs"}
    assert "idle-culler" not in roles and "runs-service" not in roles
    assert access(roles["user"]) == access(roles["server"]) == {"eo-mqs"}


def test_on_kubernetes_the_hub_starts_nothing_and_users_reach_the_enabled_services():
    services, roles = registered(
        {"platform": {"deployment": "kubernetes"}, "runs": {"enabled": False}}
    )
    assert services == {}  # the chart runs them (z2jh registers them with their tokens)
    assert "idle-culler" not in roles
    assert access(roles["user"]) == access(roles["server"]) == {"dask-gateway", "eo-mqs"}


def test_users_and_servers_get_no_admin_scope_and_never_the_auth_state(tmp_path):
    _, roles = registered(local(tmp_path))
    for role in ("user", "server"):
        for scope in roles[role]["scopes"]:
            assert not scope.startswith("admin"), (role, scope)
            assert "auth_state" not in scope, (role, scope)
    # a server's token acts for its own user only
    assert all("!" in s for s in roles["server"]["scopes"]), roles["server"]["scopes"]


def test_the_operator_token_reaches_only_its_own_service_entry(tmp_path, monkeypatch):
    monkeypatch.setenv(ADMIN_TOKEN_ENV, ADMIN_TOKEN)
    monkeypatch.setenv("CSCALE_HUB_CONFIG", str(tmp_path / "config.json"))
    services, roles = registered(local(tmp_path))
    assert services["cscale-admin"]["api_token"] == ADMIN_TOKEN
    assert roles["cscale-admin"]["services"] == ["cscale-admin"]
    for name, svc in services.items():
        if name != "cscale-admin":
            assert ADMIN_TOKEN not in repr(svc), f"the operator's token reaches {name}"
        if "command" in svc:  # every service the hub runs finds the resolved configuration
            assert svc["environment"]["CSCALE_HUB_CONFIG"] == str(tmp_path / "config.json")
    assert ADMIN_TOKEN not in repr(roles)
    # only a local stack has the operator's service (on Kubernetes the chart's Secret does)
    k8s, _ = registered({"platform": {"deployment": "kubernetes"}})
    assert "cscale-admin" not in k8s


def test_what_an_earlier_config_registered_is_kept_unless_we_register_the_name(tmp_path):
    c = Config()
    c.JupyterHub.services = [
        {"name": "theirs", "url": "http://elsewhere", "api_token": "t"},
        {"name": "eo-mqs", "url": "http://stale"},
    ]
    c.JupyterHub.load_roles = [
        {"name": "theirs-role", "scopes": ["list:users"], "services": ["theirs"]},
        {"name": "user", "scopes": ["admin:users"]},
    ]
    services, roles = registered(local(tmp_path), c)
    assert services["theirs"]["url"] == "http://elsewhere"
    assert services["eo-mqs"]["url"] == "http://127.0.0.1:18001"  # ours replaces the stale entry
    assert roles["theirs-role"]["services"] == ["theirs"]
    assert "admin:users" not in roles["user"]["scopes"]  # our user role, not an earlier one
    # configuring twice (a reloaded config file) registers nothing twice
    registered(local(tmp_path), c)


def test_earlier_entries_stay_in_front_and_a_replaced_one_is_logged(tmp_path, caplog):
    """The one merge (hub.register): z2jh's entries keep their order ahead of ours; replacing
    an earlier entry of the same name is said in the log, re-registering our own is not."""
    c = Config()
    c.JupyterHub.services = [{"name": "first", "url": "http://a"}, {"name": "second", "url": "http://b"}]
    c.JupyterHub.load_roles = [
        {"name": "first-role", "scopes": ["list:users"], "services": ["first"]},
        {"name": "server", "scopes": ["admin:servers"]},
    ]
    with caplog.at_level("WARNING", logger="cscale.hub"):
        registered(local(tmp_path), c)
    assert [s["name"] for s in c.JupyterHub.services][:2] == ["first", "second"]
    assert c.JupyterHub.load_roles[0]["name"] == "first-role"
    replaced = [r.getMessage() for r in caplog.records if "replaces" in r.getMessage()]
    assert replaced == ["JupyterHub.load_roles: C-SCALE Hub's entry 'server' replaces an earlier one"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="cscale.hub"):
        registered(local(tmp_path), c)  # a reloaded configuration: ours again, nothing new
    assert not [r for r in caplog.records if "replaces" in r.getMessage()]
