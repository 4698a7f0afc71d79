"""The spawn form of compute sites (cscale_extensions.hub.siteform) on a real JupyterHub User.

Real parts: jupyterhub's User and ORM (in-memory sqlite), the local ``SameUserSpawner`` with
the hub's spawner configuration (``configure_spawner``), the settings' ``compute`` section.
The whole path over HTTP (/hub/spawn of a running hub, the server's environment, a cluster
on hpc) is in test_site_form_stack.py. Before, the spawners had no form and no ``site``
option: each of these tests failed (no form, the option ignored).
"""

from __future__ import annotations

import asyncio

import pytest
from cscale_testing import kube_spawner
from tornado import web
from traitlets.config import Config

from cscale_extensions import config as settings
from cscale_extensions.compute import DEFAULT_SITE_ENV
from cscale_extensions.hub import configure_spawner
from cscale_extensions.hub.siteform import GATEWAY_SITE_ENV

HPC_VO = "vo.cscale.eu"
OTHER_VO = "vo.elsewhere.example.org"


def _spawner(groups: list[str], **compute):
    overrides = {"spawner": {"backend": "same-user"}, "platform": {"data_dir": "/nonexistent"},
                 "compute": compute or {"sites": {"hpc": {"vos": [HPC_VO]}}}}
    cfg = settings.load(None, overrides)
    c = Config()
    configure_spawner(c, cfg)
    return kube_spawner(c, "erin", groups)


def _form(spawner) -> str:
    """What JupyterHub's /hub/spawn shows ('' = no form: the server starts at once)."""
    return asyncio.run(spawner.get_options_form())


def test_form_lists_the_sites_of_the_users_vos_with_kind_and_limits():
    html = _form(_spawner([HPC_VO]))
    assert 'value="cloud" checked' in html and 'value="hpc"' in html
    assert "slurm" in html and "jobs of at most 480 min" in html
    # one site: no form, /hub/spawn starts the server at once (as before)
    assert _form(_spawner([OTHER_VO])) == ""


def test_last_choice_is_preselected():
    spawner = _spawner([HPC_VO])
    spawner.user_options = {"site": "hpc"}
    html = _form(spawner)
    assert 'value="hpc" checked' in html and 'value="cloud" checked' not in html


def test_choice_sets_the_servers_environment():
    spawner = _spawner([HPC_VO])
    options = spawner.run_options_from_form({"site": ["hpc"]})
    assert options == {"site": "hpc"}
    asyncio.run(spawner._run_apply_user_options(options))
    assert spawner.site_environment() == {GATEWAY_SITE_ENV: "hpc", DEFAULT_SITE_ENV: "hpc"}
    # a start without options (the REST API with no body) names no site, as before
    asyncio.run(spawner._run_apply_user_options({}))
    assert spawner.site_environment() == {}


@pytest.mark.parametrize(
    ("value", "status", "text"),
    [("nowhere", 400, "There is no compute site 'nowhere'"),
     ("hpc", 403, "open to members of vo.cscale.eu only")],
)
def test_forged_form_value_is_refused_with_the_reason(value, status, text):
    spawner = _spawner([OTHER_VO])
    with pytest.raises(web.HTTPError) as refused:
        spawner.run_options_from_form({"site": [value]})
    assert refused.value.status_code == status
    assert text in refused.value.jupyterhub_message
    assert "Sites you may use: cloud" in refused.value.jupyterhub_message


def test_refused_api_option_is_refused_and_forgotten():
    """user_options of the REST API are checked again; a refused one is not kept for the
    next start (which would be refused in turn: e.g. the runs service's start)."""
    spawner = _spawner([OTHER_VO])
    spawner.orm_spawner.user_options = {"site": "hpc", "other": 1}
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawner._run_apply_user_options({"site": "hpc"}))
    assert refused.value.status_code == 403
    assert spawner.orm_spawner.user_options == {"other": 1}
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(spawner._run_apply_user_options({"site": ["hpc"]}))
    assert refused.value.status_code == 400


def test_form_can_be_turned_off():
    overrides = {"spawner": {"backend": "same-user", "site_form": False},
                 "platform": {"data_dir": "/nonexistent"}}
    cfg = settings.load(None, overrides)
    c = Config()
    configure_spawner(c, cfg)
    spawner = kube_spawner(c, "frank", [HPC_VO])
    assert _form(spawner) == ""


def test_cli_run_without_site_uses_the_servers_choice(tmp_path, monkeypatch):
    """``cscale-hub run`` in a server started with a site sends that site; --site wins."""
    import argparse
    import json

    from cscale_extensions.cli.runs import _request_body

    nb = tmp_path / "n.ipynb"
    nb.write_text(json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    args = argparse.Namespace(notebook=str(nb), parameters=[], in_home=False, site=None)
    monkeypatch.delenv(DEFAULT_SITE_ENV, raising=False)
    assert "site" not in _request_body(args)  # outside such a server: the platform's default
    monkeypatch.setenv(DEFAULT_SITE_ENV, "hpc")
    assert _request_body(args)["site"] == "hpc"
    args.site = "cloud"
    assert _request_body(args)["site"] == "cloud"


def test_username_of_a_system_group_is_refused_before_the_form():
    """As before the form: the 403 naming the reason, not a form that cannot lead anywhere."""
    overrides = {"spawner": {"backend": "system-users"}, "platform": {"data_dir": "/nonexistent"}}
    c = Config()
    configure_spawner(c, settings.load(None, overrides))
    spawner = kube_spawner(c, "disk", [HPC_VO])
    with pytest.raises(web.HTTPError) as refused:
        _form(spawner)
    assert refused.value.status_code == 403 and "system group" in refused.value.jupyterhub_message


def test_no_form_where_nothing_uses_a_site():
    overrides = {"spawner": {"backend": "same-user"}, "platform": {"data_dir": "/nonexistent"},
                 "dask_gateway": {"enabled": False}, "runs": {"enabled": False}}
    c = Config()
    configure_spawner(c, settings.load(None, overrides))
    assert _form(kube_spawner(c, "gina", [HPC_VO])) == ""


def test_workshop_participants_start_without_the_form():
    """A cohort member (a ``workshop-…`` group) goes straight to the lab, although their VO is
    open to two sites; the same VO without the cohort group gets the form."""
    participant = _spawner([HPC_VO, "workshop-eo101"])
    assert _form(participant) == ""
    assert "cscale-site-form" in _form(_spawner([HPC_VO]))


def test_spawner_configured_without_compute_settings_has_no_form():
    """A hub that uses the spawner class without our settings model (bench/workshop_storm.py's
    vanilla hub) starts servers at /hub/spawn as before, instead of a 500 from the form."""
    from cscale_extensions.hub.spawner import SameUserSpawner

    c = Config()
    c.JupyterHub.spawner_class = SameUserSpawner
    assert _form(kube_spawner(c, "gina", [HPC_VO])) == ""
