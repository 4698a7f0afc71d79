"""A data dir whose hub database has an older schema (as after a JupyterHub upgrade) starts:
the hub copies the sqlite file aside, migrates it, and the users in it are still there.

The older schema is real: a stack creates its data dir and a user signs in, then JupyterHub's
own Alembic migrations take the database one revision down (``alembic downgrade -1``, what a
data dir of the previous JupyterHub release holds). Before ``JupyterHub.upgrade_db`` the hub
stopped there with ``DatabaseSchemaMismatch`` and the stack did not come up.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cscale_testing import LocalStack
from jupyterhub import orm
from jupyterhub.dbutil import write_alembic_ini
from sqlalchemy import create_engine

pytestmark = pytest.mark.slow

LEAN = {
    "federation": {"embedded_sites": False},
    "eomqs": {"enabled": False},
    "runs": {"enabled": False},
    "dask_gateway": {"enabled": False},
}


def _revision(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def _users(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM users")}


def test_older_schema_is_backed_up_and_upgraded_on_start():
    base = Path(tempfile.mkdtemp(prefix="cscale-dbup-", dir="/tmp"))
    first = LocalStack(config=LEAN, data_dir=base)
    second = None
    try:
        first.start()
        user = first.add_user("up")
        first.login(user)
        assert first.stop() == [], "processes of the first stack survived its stop"
        db = first.state_dir / "hub" / "jupyterhub.sqlite"
        head = _revision(db)

        ini = base / "alembic.ini"
        write_alembic_ini(str(ini), f"sqlite:///{db}")
        alembic = str(Path(sys.executable).with_name("alembic"))
        subprocess.run([alembic, "-c", str(ini), "downgrade", "-1"], check=True,
                       capture_output=True, cwd=base)  # fmt: skip
        old = _revision(db)
        assert old != head
        with pytest.raises(orm.DatabaseSchemaMismatch):  # what stopped the hub before
            orm.check_db_revision(create_engine(f"sqlite:///{db}"))

        second = LocalStack(config=LEAN, data_dir=base).start()
        backups = sorted(db.parent.glob("jupyterhub.sqlite.*"))
        assert len(backups) == 1, f"expected one backup next to {db}: {backups}"
        assert _revision(backups[0]) == old, "the backup is not the database as it was"
        assert _revision(db) == head
        assert user in _users(db) and user in _users(backups[0])
        second.login(user, first.extra_credentials[user])  # the hub serves that user again
    finally:
        for stack in (second, first):
            if stack is not None:
                stack.stop()
        shutil.rmtree(base, ignore_errors=True)
