"""Persistent state of the runs service: runs and schedules (SQLAlchemy core).

sqlite in the service's state directory by default; PostgreSQL when a URL is configured
(``postgresql://…`` uses the installed psycopg 3 driver). Every change is committed at once,
so a restart of the service loses nothing it has acknowledged. The schema is brought up to
date by the Alembic migrations of :mod:`.migrate` at the first use that reaches the database
(the service tries at start), so the service can start while its database is down (its
requests answer 503 until it is back); the tables below must match the newest migration.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cscale_extensions.services.runs import migrate

ACTIVE = ("dispatching", "running")
TERMINAL = ("succeeded", "failed", "cancelled", "timeout", "lost")
STATES = ("queued", *ACTIVE, *TERMINAL)

meta = sa.MetaData()
runs = sa.Table(
    "runs",
    meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("dispatched", sa.Float),
    sa.Column("started", sa.Float),
    sa.Column("finished", sa.Float),
    sa.Column("notebook", sa.Text),  # JSON of the submitted notebook, or NULL when `path` is used
    sa.Column("path", sa.String(1024)),  # notebook path in the user's home
    sa.Column("parameters", sa.Text, nullable=False, default="{}"),
    sa.Column("timeout", sa.Float, nullable=False, default=0),
    sa.Column("kernel_name", sa.String(255)),
    sa.Column("cwd", sa.String(1024)),
    sa.Column("sweep_id", sa.String(32), index=True),
    sa.Column("schedule_id", sa.String(32), index=True),
    sa.Column("rerun_of", sa.String(32)),
    sa.Column("cell", sa.Integer, nullable=False, default=0),
    sa.Column("cells", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("message", sa.Text, nullable=False, default=""),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("cancel_sent", sa.Boolean, nullable=False, default=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("pid", sa.Integer),
    sa.Column("site", sa.String(64)),  # compute site (compute.sites); NULL: the local site
    sa.Column("site_job", sa.String(64)),  # the Slurm job: 1234, or 1234_7 (array task)
)
schedules = sa.Table(
    "schedules",
    meta,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False, index=True),
    sa.Column("name", sa.String(255), nullable=False, default=""),
    sa.Column("cron", sa.String(255), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("next_fire", sa.Float, nullable=False),
    sa.Column("last_fire", sa.Float),
    sa.Column("last_run", sa.String(32)),
    sa.Column("notebook", sa.Text),
    sa.Column("path", sa.String(1024)),
    sa.Column("parameters", sa.Text, nullable=False, default="{}"),
    sa.Column("timeout", sa.Float, nullable=False, default=0),
    sa.Column("kernel_name", sa.String(255)),
    sa.Column("cwd", sa.String(1024)),
    sa.Column("site", sa.String(64)),
)

_JSON = ("notebook", "parameters", "error")


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def db_error_line(exc: BaseException) -> str:
    """The first line of a database error (the driver's message), for logs."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def engine_for(db_url: str | None, state_dir: Path) -> sa.Engine:
    """An engine for ``db_url`` (None: sqlite file in ``state_dir``); connects lazily."""
    if not db_url:
        state_dir.mkdir(parents=True, exist_ok=True)
        db_url = f"sqlite:///{state_dir / 'runs.sqlite'}"
    if db_url.startswith(("postgresql://", "postgres://")):
        db_url = "postgresql+psycopg://" + db_url.split("://", 1)[1]
    kwargs: dict[str, Any] = {"future": True}
    if db_url.startswith("sqlite"):
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    return sa.create_engine(db_url, **kwargs)


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    out = dict(values)
    for key in _JSON:
        if key in out and out[key] is not None and not isinstance(out[key], str):
            out[key] = json.dumps(out[key])
    return out


def _decode(row: sa.Row | None, *, with_notebook: bool = False) -> dict[str, Any] | None:
    if row is None:
        return None
    out = dict(row._mapping)
    for key in _JSON:
        if key in out and out[key] is not None:
            if key == "notebook" and not with_notebook:
                out[key] = None
                continue
            out[key] = json.loads(out[key])
    return out


class Store:
    """Small repository of runs and schedules."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    def ensure_schema(self) -> None:
        """Migrate the database to the newest schema (once); raises SQLAlchemy's
        OperationalError while the database cannot be reached, and is tried again by the
        next use."""
        if self._schema_ready:
            return
        with self._schema_lock:
            if not self._schema_ready:
                migrate.upgrade(self.engine)
                self._schema_ready = True

    def _begin(self):
        self.ensure_schema()
        return self.engine.begin()

    def _connect(self):
        self.ensure_schema()
        return self.engine.connect()

    # runs
    def add_runs(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        now = time.time()
        full = []
        for i, row in enumerate(rows):  # microsecond steps keep submission order in listings
            full.append(
                {
                    **dict.fromkeys(runs.c.keys()),
                    "id": new_id(),
                    "state": "queued",
                    "created": now + i * 1e-6,
                    "name": "",
                    "parameters": {},
                    "timeout": 0,
                    "cell": 0,
                    "cells": 0,
                    "message": "",
                    "cancel_requested": False,
                    "cancel_sent": False,
                    "attempts": 0,
                    **row,
                }
            )
        with self._begin() as conn:
            conn.execute(runs.insert(), [_encode(r) for r in full])
        return [self.get_run(r["id"]) for r in full]

    def get_run(self, run_id: str, *, with_notebook: bool = False) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(runs.select().where(runs.c.id == run_id)).first()
        return _decode(row, with_notebook=with_notebook)

    def list_runs(
        self,
        owner: str | None = None,
        states: tuple[str, ...] | None = None,
        sweep_id: str | None = None,
        schedule_id: str | None = None,
        limit: int | None = None,
        oldest_first: bool = False,
    ) -> list[dict[str, Any]]:
        q = runs.select()
        if owner is not None:
            q = q.where(runs.c.owner == owner)
        if states:
            q = q.where(runs.c.state.in_(states))
        if sweep_id:
            q = q.where(runs.c.sweep_id == sweep_id)
        if schedule_id:
            q = q.where(runs.c.schedule_id == schedule_id)
        order = runs.c.created.asc() if oldest_first else runs.c.created.desc()
        q = q.order_by(order, runs.c.id)
        if limit:
            q = q.limit(limit)
        with self._connect() as conn:
            return [_decode(r) for r in conn.execute(q)]

    def update_run(self, run_id: str, expect: tuple[str, ...] | None = None, **values: Any) -> bool:
        """Change a run; with ``expect``, only while its state is one of those (returns success)."""
        q = runs.update().where(runs.c.id == run_id)
        if expect:
            q = q.where(runs.c.state.in_(expect))
        with self._begin() as conn:
            return conn.execute(q.values(**_encode(values))).rowcount == 1

    def delete_run(self, run_id: str, expect: tuple[str, ...] | None = None) -> bool:
        """Remove a run's record; with ``expect``, only while its state is one of those."""
        q = runs.delete().where(runs.c.id == run_id)
        if expect:
            q = q.where(runs.c.state.in_(expect))
        with self._begin() as conn:
            return conn.execute(q).rowcount == 1

    def delete_ended_before(self, before: float, batch: int = 500) -> list[str]:
        """Remove up to ``batch`` runs that ended before ``before``; returns their ids."""
        q = (
            sa.select(runs.c.id)
            .where(runs.c.state.in_(TERMINAL), runs.c.finished < before)
            .limit(batch)
        )
        with self._begin() as conn:
            ids = [row[0] for row in conn.execute(q)]
            if ids:
                conn.execute(runs.delete().where(runs.c.id.in_(ids), runs.c.state.in_(TERMINAL)))
        return ids

    def count_unfinished(self, owner: str) -> int:
        """Runs of ``owner`` queued or executing."""
        q = (
            sa.select(sa.func.count())
            .select_from(runs)
            .where(runs.c.owner == owner, runs.c.state.in_(("queued", *ACTIVE)))
        )
        with self._connect() as conn:
            return int(conn.execute(q).scalar_one())

    def count_schedules(self, owner: str) -> int:
        q = sa.select(sa.func.count()).select_from(schedules).where(schedules.c.owner == owner)
        with self._connect() as conn:
            return int(conn.execute(q).scalar_one())

    def count_active(self, except_sites: tuple[str, ...] = ()) -> dict[str, int]:
        """Runs dispatching or running per owner, leaving out those on ``except_sites``."""
        q = sa.select(runs.c.owner, sa.func.count()).where(runs.c.state.in_(ACTIVE))
        if except_sites:
            q = q.where(sa.or_(runs.c.site.is_(None), runs.c.site.not_in(except_sites)))
        q = q.group_by(runs.c.owner)
        with self._connect() as conn:
            return {owner: n for owner, n in conn.execute(q)}

    # schedules
    def add_schedule(self, row: dict[str, Any]) -> dict[str, Any]:
        full = {
            **dict.fromkeys(schedules.c.keys()),
            "id": new_id(),
            "created": time.time(),
            "name": "",
            "parameters": {},
            "timeout": 0,
            **row,
        }
        with self._begin() as conn:
            conn.execute(schedules.insert(), [_encode(full)])
        return self.get_schedule(full["id"])

    def get_schedule(self, sid: str, *, with_notebook: bool = False) -> dict[str, Any] | None:
        with self._connect() as conn:
            row = conn.execute(schedules.select().where(schedules.c.id == sid)).first()
        return _decode(row, with_notebook=with_notebook)

    def list_schedules(
        self, owner: str | None = None, due_before: float | None = None, with_notebook: bool = False
    ) -> list[dict[str, Any]]:
        q = schedules.select().order_by(schedules.c.created)
        if owner is not None:
            q = q.where(schedules.c.owner == owner)
        if due_before is not None:
            q = q.where(schedules.c.next_fire <= due_before)
        with self._connect() as conn:
            return [_decode(r, with_notebook=with_notebook) for r in conn.execute(q)]

    def update_schedule(self, sid: str, **values: Any) -> None:
        with self._begin() as conn:
            conn.execute(schedules.update().where(schedules.c.id == sid).values(**_encode(values)))

    def delete_schedule(self, sid: str) -> bool:
        with self._begin() as conn:
            return conn.execute(schedules.delete().where(schedules.c.id == sid)).rowcount == 1
