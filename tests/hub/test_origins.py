"""Which host serves what (cscale_extensions.hub.origins), as pure functions of the settings.

The attack these guard against is in tests/security/test_origins.py (a user's page opened by a
logged-in visitor); here: every user gets a host of their own, the hub's services stay on the
hub's host, dask-gateway (users' dashboards) on a host no username can map to, and an IP
address as public host is refused with a clear message instead of serving users on it.
"""

from __future__ import annotations

import re

import pytest
from jupyterhub.utils import subdomain_hook_idna
from traitlets.config import Config

from cscale_extensions import config as settings
from cscale_extensions.hub.environment import public_url, server_dashboard_address, user_environment
from cscale_extensions.hub.origins import (
    GATEWAY_SERVICE,
    OriginConfigError,
    configure_origins,
    service_url,
    subdomain_hook,
    subdomain_host,
)

USERNAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def _cfg(**platform) -> dict:
    cfg = settings.load(None, {"platform": platform, "hub": {"port": 8000}})
    return cfg


def test_local_hub_is_a_host_name_apart_from_the_identity_provider():
    cfg = _cfg()
    assert cfg["platform"]["user_subdomains"] is True
    assert public_url(cfg) == "http://hub.localhost:8000/"
    assert subdomain_host(cfg, public_url(cfg)) == "http://hub.localhost:8000"
    c = Config()
    configure_origins(c, cfg, public_url(cfg))
    assert c.JupyterHub.subdomain_host == "http://hub.localhost:8000"
    assert c.JupyterHub.subdomain_hook is subdomain_hook
    assert "cookie_host_prefix_enabled" not in c.JupyterHub  # "__Host-" cookies need https


def test_services_stay_on_the_hub_host_except_the_gateway():
    for name in ("eo-mqs", "runs", "idle-culler", "cscale-admin"):
        assert subdomain_hook(name, "hub.localhost", "service") == "hub.localhost"
    gateway = subdomain_hook(GATEWAY_SERVICE, "hub.localhost", "service")
    assert gateway == "dask-gateway--service.hub.localhost"
    assert subdomain_hook("mallory", "hub.localhost", "user") == "mallory.hub.localhost"


@pytest.mark.parametrize("name", [
    "dask-gateway--service", "dask-gateway", "dask-gateway-", "hub", "u-dask-gateway--service",
    "dask_gateway", "a--b", "x" * 32,
])
def test_no_username_takes_the_hub_or_gateway_host(name):
    """A user named after the gateway's label (usernames allow "--") gets a hashed label."""
    assert USERNAME.match(name)
    host = subdomain_hook(name, "hub.localhost", "user")
    assert host == subdomain_hook_idna(name, "hub.localhost", "user")
    assert host not in ("hub.localhost", subdomain_hook(GATEWAY_SERVICE, "hub.localhost", "service"))


def test_user_servers_get_the_gateway_on_its_own_host():
    cfg = _cfg()
    env = user_environment(cfg)
    url = "http://dask-gateway--service.hub.localhost:8000/services/dask-gateway"
    assert env["DASK_GATEWAY__ADDRESS"] == env["DASK_GATEWAY__PUBLIC_ADDRESS"] == url
    assert env["CSCALE_HUB_URL"] == "http://hub.localhost:8000/"
    assert env["CSCALE_STAC_URL"] == "http://hub.localhost:8000/services/eo-mqs/"


def test_each_server_links_dashboards_to_its_own_route():
    """``DASK_GATEWAY__PUBLIC_ADDRESS`` of a local server: its own dask-gateway route (the
    user's origin), a path when JupyterHub knows no public URL."""
    assert server_dashboard_address("http://alice.hub.localhost:8000/user/alice/",
                                     "/user/alice/") == (
        "http://alice.hub.localhost:8000/user/alice/dask-gateway")
    assert server_dashboard_address("", "/user/bob/lab-2/") == "/user/bob/lab-2/dask-gateway"


def test_a_public_url_with_a_base_path_keeps_it():
    cfg = _cfg(public_url="https://eo.example.org/hub-prefix/")
    assert subdomain_host(cfg, public_url(cfg)) == "https://eo.example.org"
    c = Config()
    configure_origins(c, cfg, public_url(cfg))
    assert c.JupyterHub.cookie_host_prefix_enabled is True  # users' hosts cannot toss cookies
    assert service_url(cfg, public_url(cfg), GATEWAY_SERVICE) == (
        "https://dask-gateway--service.eo.example.org/hub-prefix/services/dask-gateway")


@pytest.mark.parametrize("url", ["http://127.0.0.1:8000/", "https://192.0.2.1/", "http://[::1]:8000/"])
def test_an_ip_address_as_public_host_is_refused_clearly(url):
    cfg = _cfg(public_url=url)
    with pytest.raises(OriginConfigError, match="needs a host name.*user_subdomains: false"):
        subdomain_host(cfg, public_url(cfg))
    with pytest.raises(OriginConfigError):
        configure_origins(Config(), cfg, public_url(cfg))


def test_subdomains_off_serves_everything_on_the_hub_host():
    cfg = _cfg(user_subdomains=False)
    assert subdomain_host(cfg, public_url(cfg)) == ""
    c = Config()
    configure_origins(c, cfg, public_url(cfg))
    assert "subdomain_host" not in c.JupyterHub
    assert user_environment(cfg)["DASK_GATEWAY__ADDRESS"] == (
        "http://hub.localhost:8000/services/dask-gateway")
