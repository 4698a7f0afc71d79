"""The chart's per-user hosts (``cscale.platform.user_subdomains``, on by default): z2jh's proxy
routes by host exactly when the hub names host routes, and users need a host name."""

from __future__ import annotations

from pathlib import Path

import pytest

CHART = Path(__file__).resolve().parents[2] / "helm" / "cscale-hub"
PRODUCTION = CHART / "examples" / "production.yaml"


def test_the_proxy_routes_by_host_by_default():
    import yaml

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["cscale"]["platform"]["user_subdomains"] is True
    assert "--host-routing" in values["jupyterhub"]["proxy"]["chp"]["extraCommandLineFlags"]


def test_user_subdomains_without_host_routing_is_refused(render, helm_error):
    with pytest.raises(helm_error, match="lacks \"--host-routing\""):
        render(PRODUCTION, set=["jupyterhub.proxy.chp.extraCommandLineFlags=null"])


def test_host_routing_without_user_subdomains_is_refused(render, helm_error):
    with pytest.raises(helm_error, match="user_subdomains is false: remove the flag"):
        render(PRODUCTION, set=["cscale.platform.user_subdomains=false"])


def test_subdomains_off_renders_without_the_flag(render):
    render(PRODUCTION, set=["cscale.platform.user_subdomains=false",
                            "jupyterhub.proxy.chp.extraCommandLineFlags=null"])


@pytest.mark.parametrize("url", ["https://192.0.2.10/", "http://[2001:db8::1]:8443/"])
def test_an_ip_public_url_with_user_subdomains_is_refused(render, helm_error, url):
    with pytest.raises(helm_error, match="needs a host name"):
        render(PRODUCTION, set=[f"cscale.platform.public_url={url}"])
