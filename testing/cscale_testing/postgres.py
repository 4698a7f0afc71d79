"""One throw-away PostgreSQL for every test that needs a real one (run store, hub database,
fault injection): the local stack's own cluster code on a free port.

:class:`~cscale_extensions.localstack.sites.pgstac_site.PgCluster` already does what a test
cluster needs here: initdb and the server run as the ``postgres`` account when we are root
(initdb refuses root; the suite runs as root for its system accounts), 127.0.0.1 only, a
password, fast shutdown. pytest-postgresql runs ``pg_ctl initdb`` as the calling user, so it
cannot start a cluster in this suite; this class is the one launcher instead of three.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

import psycopg

from cscale_extensions.localstack.sites.pgstac_site import PgCluster, pg_bindir
from cscale_extensions.localstack.supervisor import Supervisor
from cscale_extensions.net import free_port


class Postgres:
    """A PostgreSQL 15 cluster in a temporary directory. :meth:`stop` and :meth:`start` keep
    its data and port, as a database server restarted by its operator would."""

    def __init__(self, prefix: str = "cscale-pg-") -> None:
        pg_bindir()  # a clear error naming the Debian packages when PostgreSQL is missing
        # outside pytest's 0700 tmp: the postgres account must reach its data directory
        self.dir = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.cluster = PgCluster(self.dir, free_port())
        self.supervisor = Supervisor(self.dir / "logs", f"test-pg-{uuid.uuid4().hex[:8]}")
        self.port = self.cluster.port

    @property
    def url(self) -> str:
        """libpq URL of the ``postgres`` database (superuser, password, 127.0.0.1)."""
        return self.cluster.dsn("postgres")

    def database_url(self, name: str, driver: str = "postgresql") -> str:
        """URL of database ``name``; ``driver`` e.g. ``postgresql+psycopg`` for SQLAlchemy."""
        return self.cluster.dsn(name).replace("postgresql://", f"{driver}://", 1)

    def start(self) -> Postgres:
        """Start the server (creating the cluster the first time); return once it accepts."""
        self.supervisor.start(self.cluster.postgres_spec())
        self.cluster.wait_accepting()
        return self

    def stop(self) -> None:
        """Fast shutdown: open connections are cut, the port closes."""
        self.supervisor.stop()

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its URL."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.database_url(name)

    def remove(self) -> None:
        """Stop the server and delete the cluster."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Postgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()
