"""The hub on a real PostgreSQL database (`hub.db_url`), its state surviving a restart."""

from __future__ import annotations

import shutil

import psycopg
import pytest
import requests
from cscale_testing import LocalStack
from cscale_testing.postgres import Postgres

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres():
    with Postgres(prefix="cscale-hubdb-") as pg:
        pg.create_database("jupyterhub")
        yield pg


def test_hub_state_lives_in_postgresql_across_restarts(postgres):
    url = postgres.database_url("jupyterhub", "postgresql+psycopg")
    config = {"hub": {"db_url": url}, "federation": {"embedded_sites": False},
              "dask_gateway": {"enabled": False}, "eomqs": {"enabled": False},
              "runs": {"enabled": False}}
    first = LocalStack(config=config).start()
    try:
        token = first.api_token("demo-member")
        assert requests.get(first.url + "hub/api/user", headers={"Authorization": f"token {token}"},
                            timeout=30).status_code == 200
    finally:
        assert first.stop() == []
    with psycopg.connect(postgres.database_url("jupyterhub")) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM users")}
        groups = {r[0] for r in conn.execute("SELECT name FROM groups")}
    assert "demo-member" in names and "vo.cscale.eu" in groups
    # the platform restarted on the same database knows the user and their token
    second = LocalStack(config=config, data_dir=first.data_dir).start()
    try:
        r = requests.get(second.url + "hub/api/user", headers={"Authorization": f"token {token}"},
                         timeout=30)
        assert r.status_code == 200 and r.json()["name"] == "demo-member"
    finally:
        assert second.stop() == []
        shutil.rmtree(first.data_dir, ignore_errors=True)
