"""The realistic site: stac-fastapi-pgstac over its own PostgreSQL 15 + PostGIS cluster.

The cluster lives in ``<data_dir>/sites/pg`` (socket directory ``<data_dir>/sites/pg-socket``),
listens on 127.0.0.1 only, and requires a password (scram-sha-256) kept in
``<data_dir>/sites/pg-password`` (mode 0600). initdb refuses to run as root, so when we are
root the cluster belongs to, and runs as, the ``postgres`` account.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cscale_extensions.localstack.sites.documents import site_documents
from cscale_extensions.localstack.sites.layout import SiteDef
from cscale_extensions.localstack.supervisor import ProcessSpec
from cscale_extensions.processes import alive

log = logging.getLogger("cscale.sites")

PG_MAJOR = 15
DATABASE = "pgstac"
SUPERUSER = "postgres"
#: unix socket paths are limited to 107 bytes
SOCKET_PATH_MAX = 100


#: typed queryables, so that pgstac sorts and filters these numerically (it compares text otherwise)
QUERYABLES = (
    (
        "eo:cloud_cover",
        {"title": "Cloud cover (%)", "type": "number", "minimum": 0, "maximum": 100},
        "to_float",
    ),
    (
        "gsd",
        {"title": "Ground sample distance (m)", "type": "number", "exclusiveMinimum": 0},
        "to_float",
    ),
    ("platform", {"title": "Platform", "type": "string"}, "to_text"),
)


class SiteSetupError(RuntimeError):
    """A site cannot be set up; the message says what to install or fix."""


def pg_bindir() -> Path:
    """Debian's PostgreSQL 15 server programs, checked together with PostGIS."""
    bindir = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if not (bindir / "postgres").is_file() or not (bindir / "initdb").is_file():
        raise SiteSetupError(
            f"PostgreSQL {PG_MAJOR} is not installed ({bindir}/postgres missing); install the Debian "
            f"packages listed in scripts/apt-packages.txt (apt-get install postgresql "
            f"postgresql-{PG_MAJOR}-postgis-3)"
        )
    if not Path(f"/usr/share/postgresql/{PG_MAJOR}/extension/postgis.control").is_file():
        raise SiteSetupError(
            f"PostGIS for PostgreSQL {PG_MAJOR} is not installed; apt-get install postgresql-{PG_MAJOR}-postgis-3"
        )
    return bindir


def _run_as() -> tuple[list[str], int | None, int | None]:
    """(argv prefix, uid, gid): as ``postgres`` when we are root, else as ourselves."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise SiteSetupError(
            "running as root, but there is no `postgres` account to run PostgreSQL as "
            "(initdb refuses root); install the Debian package `postgresql`, which creates it"
        ) from None
    prefix = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "--"]
    return prefix, pw.pw_uid, pw.pw_gid


class PgCluster:
    """Paths, port and password of the site's cluster."""

    def __init__(self, sites_dir: Path, port: int):
        self.root = sites_dir
        self.pgdata = sites_dir / "pg"
        self.socket_dir = sites_dir / "pg-socket"
        self.password_file = sites_dir / "pg-password"
        self.port = port
        self.prefix, self.uid, self.gid = _run_as()

    @property
    def password(self) -> str:
        if not self.password_file.exists():
            fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24))
        return self.password_file.read_text().strip()

    def env(self) -> dict[str, str]:
        """PG* variables for clients (stac-fastapi-pgstac, pypgstac)."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": SUPERUSER,
            "PGPASSWORD": self.password,
            "PGDATABASE": DATABASE,
        }

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.uid is not None and path.stat().st_uid != self.uid:
            # e.g. a cluster made by an earlier non-root run: hand all of it to postgres
            for dirpath, _dirs, names in os.walk(path):
                os.chown(dirpath, self.uid, self.gid)
                for name in names:
                    os.chown(Path(dirpath) / name, self.uid, self.gid, follow_symlinks=False)
        os.chmod(path, mode)

    def _check_reachable(self) -> None:
        if not self.prefix:
            return
        probe = subprocess.run([*self.prefix, "test", "-w", str(self.pgdata)], capture_output=True)
        if probe.returncode != 0:
            raise SiteSetupError(
                f"the postgres account cannot reach {self.pgdata}: every parent folder of the data "
                f"directory must be searchable by other accounts (chmod o+x; not under /root)"
            )

    def initdb(self) -> None:
        """Create the cluster if it does not exist yet (prestart of the postgres process)."""
        bindir = pg_bindir()
        self._own(self.pgdata, 0o700)
        self._own(self.socket_dir, 0o700)
        self._check_reachable()
        self.stop_leftover()
        if (self.pgdata / "PG_VERSION").exists():
            return
        pwfile = self.pgdata.parent / f".pg-initpw-{os.getpid()}"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")
        if self.uid is not None:
            os.chown(pwfile, self.uid, self.gid)
        try:
            started = time.monotonic()
            proc = subprocess.run(
                [
                    *self.prefix, str(bindir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER,
                    f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=peer",
                    "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync",
                ],
                capture_output=True, text=True, cwd="/",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise SiteSetupError(f"initdb of {self.pgdata} failed:\n{proc.stdout}{proc.stderr}")
        log.info(
            "created PostgreSQL cluster in %s (%.1fs)", self.pgdata, time.monotonic() - started
        )

    def stop_leftover(self, timeout: float = 30) -> None:
        """Stop a postmaster of this cluster left running by an earlier run that died."""
        try:
            pid = int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
            cmdline = psutil.Process(pid).cmdline()
        except (OSError, ValueError, psutil.Error):
            return
        if not cmdline or not cmdline[0].endswith("postgres") or str(self.pgdata) not in cmdline:
            return
        log.warning(
            "stopping PostgreSQL (pid %s) left running on %s by an earlier run", pid, self.pgdata
        )
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid):
            raise SiteSetupError(
                f"PostgreSQL (pid {pid}) of an earlier run on {self.pgdata} does not stop"
            )

    def postgres_spec(self) -> ProcessSpec:
        sock = str(self.socket_dir) if len(str(self.socket_dir)) < SOCKET_PATH_MAX else ""
        argv = [
            *self.prefix, str(pg_bindir() / "postgres"), "-D", str(self.pgdata), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sock}",
            "-c", "synchronous_commit=off", "-c", "shared_buffers=32MB", "-c", "max_connections=40",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        return ProcessSpec(
            name="site-pg",
            argv=argv,
            cwd="/",
            ready_port=self.port,
            ready_timeout=60,
            prestart=self.initdb,
            stop_signal=signal.SIGINT,  # fast shutdown
            stop_timeout=20,
        )

    def wait_accepting(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=3):
                    return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise SiteSetupError(
                        f"PostgreSQL on port {self.port} does not accept connections: {exc}"
                    ) from None
                time.sleep(0.2)


def load_site(cluster: PgCluster, site: SiteDef, eodata: Path, asset_base: str) -> None:
    """Migrate pgstac and upsert the site's collections and items; drop what it no longer holds."""
    import psycopg
    from psycopg.types.json import Jsonb
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods
    from pypgstac.migrate import Migrate

    cluster.wait_accepting()
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    started = time.monotonic()
    collections, items = site_documents(site, eodata, asset_base)
    with PgstacDB(dsn=cluster.dsn()) as db:
        version = Migrate(db).run_migration()
        loader = Loader(db=db)
        loader.load_collections(iter(collections), insert_mode=Methods.upsert)
        loader.load_items(iter(items), insert_mode=Methods.upsert)
    with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SET search_path TO pgstac, public")
        for name, definition, wrapper in QUERYABLES:
            conn.execute(
                "INSERT INTO queryables (name, definition, property_wrapper, property_index_type) "
                "SELECT %s, %s, %s, 'BTREE' WHERE NOT EXISTS (SELECT 1 FROM queryables WHERE name = %s)",
                (name, Jsonb(definition), wrapper, name),
            )
        keep = [c["id"] for c in collections]
        for cid in keep:
            ids = [i["id"] for i in items if i["collection"] == cid]
            conn.execute(
                "DELETE FROM items WHERE collection = %s AND NOT (id = ANY(%s))", (cid, ids)
            )
        for (cid,) in conn.execute(
            "SELECT id FROM collections WHERE NOT (id = ANY(%s))", (keep,)
        ).fetchall():
            conn.execute("DELETE FROM items WHERE collection = %s", (cid,))
            conn.execute("SELECT delete_collection(%s)", (cid,))
    log.info(
        "site %s: pgstac %s, %d collections / %d items loaded (%.1fs)",
        site.name, version, len(collections), len(items), time.monotonic() - started,
    )  # fmt: skip


def api_spec(
    cluster: PgCluster, site: SiteDef, port: int, site_dir: Path, eodata: Path, asset_base: str
) -> ProcessSpec:
    """stac-fastapi-pgstac on 127.0.0.1:``port``; its prestart migrates and loads the data."""
    site_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(site_dir, 0o755)
    env = {
        **cluster.env(),
        "STAC_FASTAPI_TITLE": site.title,
        "STAC_FASTAPI_DESCRIPTION": f"Sample STAC site `{site.name}` of the C-SCALE Hub local stack",
        "STAC_FASTAPI_LANDING_ID": site.name,
        "DB_MIN_CONN_SIZE": "1",
        "DB_MAX_CONN_SIZE": "4",
    }
    argv = [
        sys.executable, "-m", "uvicorn", "--factory", "stac_fastapi.pgstac.app:create_app",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    return ProcessSpec(
        name=f"site-{site.name}",
        argv=argv,
        env=env,
        cwd=str(site_dir),  # stac-fastapi reads a `.env` in its working directory: keep it ours
        ready_url=f"http://127.0.0.1:{port}/_mgmt/ping",
        ready_timeout=90,
        prestart=lambda: load_site(cluster, site, eodata, asset_base),
    )
