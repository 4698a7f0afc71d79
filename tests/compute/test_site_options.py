"""Which sites a user is offered, and the refusals' words (the settings model and the gateway's
cluster options; no platform needed). Before compute sites there was no ``site`` option at all:
``new_cluster(site=...)`` failed with "Unknown fields ['site']" for everyone.
"""

from __future__ import annotations

import pytest

from cscale_extensions import compute
from cscale_extensions import config as settings
from cscale_extensions.compute import sitegroups
from cscale_extensions.gateway.sites import cluster_options, served_sites


class User:
    def __init__(self, name: str, groups: list[str]):
        self.name, self.groups = name, groups


def _cfg(**sites) -> dict:
    cfg = settings.load(None, {"compute": {"sites": sites}} if sites else None)
    return cfg


def _options(cfg, user, backend="local"):
    served = served_sites(cfg, backend)
    return cluster_options(cfg["dask_gateway"], cfg, served,
                           site_config=backend != "kubernetes")(user)


def _request(cfg, user, request, backend="local"):
    opts = _options(cfg, user, backend)
    return opts.get_configuration(opts.parse_options(request), user)


def test_default_sites_are_cloud_and_an_embedded_slurm_open_to_every_vo():
    cfg = _cfg()
    every = compute.sites(cfg)
    assert list(every) == ["cloud", "hpc"]
    assert every["cloud"]["kind"] == "local"
    assert every["hpc"]["kind"] == "slurm" and every["hpc"]["slurm"]["embedded"]
    assert compute.sites_for(cfg, ["vo.cscale.eu"]) == ["cloud", "hpc"]


def test_members_get_the_site_option_with_their_sites_only():
    cfg = _cfg(hpc={"vos": ["vo.cscale.eu"]})
    member = User("m", ["vo.cscale.eu"])
    other = User("o", ["vo.elsewhere.example.org"])
    field = {f.field: f for f in _options(cfg, member).fields}["site"]
    assert list(field.options) == ["cloud", "hpc"] and field.default == "cloud"
    field = {f.field: f for f in _options(cfg, other).fields}["site"]
    assert list(field.options) == ["cloud"]
    assert _request(cfg, member, {"site": "hpc"})["site"] == "hpc"
    assert _request(cfg, other, {})["site"] == "cloud"


def test_a_vo_not_allowed_on_a_site_gets_a_clear_error():
    cfg = _cfg(hpc={"vos": ["vo.cscale.eu"]})
    other = User("o", ["vo.elsewhere.example.org"])
    with pytest.raises(ValueError) as err:
        _request(cfg, other, {"site": "hpc"})
    msg = str(err.value)
    assert "'hpc' is open to members of vo.cscale.eu only" in msg
    assert "you are in vo.elsewhere.example.org" in msg and "Sites you may use: cloud" in msg
    with pytest.raises(ValueError, match="There is no compute site 'moon'"):
        _request(cfg, other, {"site": "moon"})


def test_a_site_caps_the_vo_limits_and_says_so():
    cfg = _cfg(hpc={"limits": {"worker_cores": 1, "max_workers": 2}})
    member = User("m", ["vo.cscale.eu"])
    conf = _request(cfg, member, {"site": "hpc"})
    assert conf["cluster_max_workers"] == 2
    assert _request(cfg, member, {"site": "cloud"})["cluster_max_workers"] == 4
    cfg["dask_gateway"]["vo_limits"] = {"vo.cscale.eu": {"worker_cores": 4}}
    with pytest.raises(ValueError, match="worker_cores 2 is more than the 1 allowed to you on "
                                         "the site 'hpc'"):
        _request(cfg, member, {"site": "hpc", "worker_cores": 2})
    assert _request(cfg, member, {"site": "cloud", "worker_cores": 2})["worker_cores"] == 2


def test_kubernetes_gateway_serves_no_slurm_site_and_other_gateways_are_named():
    cfg = _cfg(hpc={"gateway": "https://login.hpc.example.org/dask-gateway"})
    assert list(served_sites(cfg, "kubernetes")) == ["cloud"]
    assert list(served_sites(cfg, "local")) == ["cloud"]
    member = User("m", ["vo.cscale.eu"])
    conf = _request(cfg, member, {}, backend="kubernetes")
    assert "site" not in conf  # KubeClusterConfig has no such trait
    with pytest.raises(ValueError, match="connect to its own gateway, https://login.hpc"):
        _request(cfg, member, {"site": "hpc"})


def test_disabled_site_is_gone_and_describe_hides_the_controller():
    cfg = _cfg(hpc={"enabled": False})
    assert compute.sites_for(cfg, ["vo.cscale.eu"]) == ["cloud"]
    shown = compute.describe(_cfg(), ["vo.cscale.eu"])
    assert [s["name"] for s in shown] == ["cloud", "hpc"] and shown[0]["default"]
    assert "slurm" not in shown[1]


def test_slurm_site_groups_come_from_the_settings_with_names_unique_per_data_dir(tmp_path):
    """The POSIX groups Slurm enforces the sites with (compute.sitegroups): the embedded
    site's (named by the launcher) with the controller to refresh, an external site's named
    one without, none for a site without a group or served by another gateway."""
    names = {sitegroups.default_group(tmp_path / d / "slurm" / "a-rather-long-site-name-x")
             for d in ("one", "two")}
    assert len(names) == 2 and all(len(n) <= 32 and n.startswith("cscale-") for n in names)
    cfg = _cfg(hpc={"vos": ["vo.cscale.eu"], "kind": "slurm",
                    "slurm": {"embedded": True, "group": "cscale-hpc-1", "conf": "/x/slurm.conf",
                              "partition": "hpc"}},
               ext={"kind": "slurm", "slurm": {"group": "hpc-users", "conf": "/etc/slurm.conf"}},
               nogroup={"kind": "slurm"},
               remote={"kind": "slurm", "gateway": "https://login.example.org/",
                       "slurm": {"group": "g"}})
    got = {g.site: g for g in sitegroups.from_settings(cfg)}
    assert set(got) == {"hpc", "ext"}
    assert got["hpc"] == sitegroups.SiteGroup("hpc", "cscale-hpc-1", ("vo.cscale.eu",),
                                              "/x/slurm.conf", "hpc")
    assert got["ext"].conf is None and got["ext"].vos is None  # no scontrol on a foreign cluster
    assert got["hpc"].allows(["vo.cscale.eu", "x"]) and not got["hpc"].allows(["x"])
    assert sitegroups.SiteGroup.from_dict(got["hpc"].to_dict()) == got["hpc"]
