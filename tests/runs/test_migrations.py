"""Alembic migrations of the runs database (services/runs/migrate.py, migrations/).

A database made by the runs service before migrations existed (``create_all``, no
``alembic_version``) is upgraded at start without losing a row; a fresh one gets the newest
schema; and the migrations agree exactly with the tables of services/runs/store.py.

On the code before this change the old database kept its old tables (``create_all`` changes
no existing table), so ``site``/``site_job`` were missing and the first write of a run with a
site failed; ``migrate`` did not exist at all.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cscale_extensions.services.runs import migrate
from cscale_extensions.services.runs.store import Store, engine_for, meta

#: the schema as the runs service's ``create_all`` made it in sqlite before migrations
#: (copied from such a database's sqlite_master)
OLD_SCHEMA = """
CREATE TABLE runs (
    id VARCHAR(32) NOT NULL, owner VARCHAR(255) NOT NULL, state VARCHAR(16) NOT NULL,
    name VARCHAR(255) NOT NULL, created FLOAT NOT NULL, dispatched FLOAT, started FLOAT,
    finished FLOAT, notebook TEXT, path VARCHAR(1024), parameters TEXT NOT NULL,
    timeout FLOAT NOT NULL, kernel_name VARCHAR(255), cwd VARCHAR(1024),
    sweep_id VARCHAR(32), schedule_id VARCHAR(32), rerun_of VARCHAR(32),
    cell INTEGER NOT NULL, cells INTEGER NOT NULL, error TEXT, message TEXT NOT NULL,
    cancel_requested BOOLEAN NOT NULL, cancel_sent BOOLEAN NOT NULL, attempts INTEGER NOT NULL,
    pid INTEGER, PRIMARY KEY (id)
);
CREATE INDEX ix_runs_owner ON runs (owner);
CREATE INDEX ix_runs_schedule_id ON runs (schedule_id);
CREATE INDEX ix_runs_state ON runs (state);
CREATE INDEX ix_runs_sweep_id ON runs (sweep_id);
CREATE TABLE schedules (
    id VARCHAR(32) NOT NULL, owner VARCHAR(255) NOT NULL, name VARCHAR(255) NOT NULL,
    cron VARCHAR(255) NOT NULL, created FLOAT NOT NULL, next_fire FLOAT NOT NULL,
    last_fire FLOAT, last_run VARCHAR(32), notebook TEXT, path VARCHAR(1024),
    parameters TEXT NOT NULL, timeout FLOAT NOT NULL, kernel_name VARCHAR(255),
    cwd VARCHAR(1024), PRIMARY KEY (id)
);
CREATE INDEX ix_schedules_owner ON schedules (owner);
"""

NOTEBOOK = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": []}


def _old_database(state_dir: Path, runs: int = 120) -> list[tuple]:
    """A database of the old schema with ``runs`` runs of every state and two schedules."""
    state_dir.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(state_dir / "runs.sqlite")
    con.executescript(OLD_SCHEMA)
    states = ("queued", "running", "succeeded", "failed", "cancelled", "timeout", "lost")
    rows = []
    for i in range(runs):
        rows.append(
            (
                f"run{i:04d}",
                f"user{i % 7}",
                states[i % len(states)],
                f"run number {i}",
                1_700_000_000.0 + i,
                None if i % 3 else 1_700_000_001.0 + i,
                None,
                None,
                json.dumps(NOTEBOOK) if i % 2 else None,
                None if i % 2 else f"work/nb{i}.ipynb",
                json.dumps({"i": i, "name": "ü" * (i % 4)}),
                3600.0,
                "python3",
                None,
                f"sweep{i // 10}" if i % 4 == 0 else None,
                None,
                None,
                i % 5,
                5,
                json.dumps({"cell": 3, "ename": "ValueError", "evalue": "x"})
                if i % 7 == 3
                else None,
                "",
                bool(i % 11 == 0),
                False,
                1,
                4000 + i,
            )
        )
    con.executemany(f"INSERT INTO runs VALUES ({','.join('?' * 25)})", rows)
    con.executemany(
        f"INSERT INTO schedules VALUES ({','.join('?' * 14)})",
        [
            (
                f"sch{i}",
                "user1",
                "",
                "0 6 * * *",
                1.0,
                2.0,
                None,
                None,
                None,
                "a.ipynb",
                "{}",
                0.0,
                None,
                None,
            )
            for i in range(2)
        ],
    )
    con.commit()
    con.close()
    return rows


def _diff(engine: sa.Engine) -> list:
    with engine.connect() as conn:
        return compare_metadata(MigrationContext.configure(conn), meta)


def test_old_database_is_upgraded_without_losing_rows(tmp_path):
    rows = _old_database(tmp_path)
    engine = engine_for(None, tmp_path)
    assert migrate.current(engine) is None
    store = Store(engine)
    store.ensure_schema()  # what the service does at start
    assert migrate.current(engine) == migrate.head()
    columns = {c["name"] for c in sa.inspect(engine).get_columns("runs")}
    assert {"site", "site_job"} <= columns
    assert "site" in {c["name"] for c in sa.inspect(engine).get_columns("schedules")}
    with engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT * FROM runs ORDER BY id")).all()
    assert len(kept) == len(rows)
    for old, new in zip(rows, kept, strict=True):
        assert tuple(new._mapping[k] for k in list(new._mapping)[:25]) == old
        assert new._mapping["site"] is None and new._mapping["site_job"] is None
    assert len(store.list_schedules()) == 2
    # the store works on it as on a new one: old runs read back, new runs carry their site
    assert store.get_run("run0001")["parameters"] == {"i": 1, "name": "ü"}
    new = store.add_runs([{"owner": "user1", "site": "hpc", "path": "a.ipynb"}])[0]
    assert new["site"] == "hpc"
    store.update_run(new["id"], state="running", site_job="42_3")
    assert store.get_run(new["id"])["site_job"] == "42_3"
    outside_hpc = store.count_active(except_sites=("hpc",))
    assert store.count_active()["user1"] == outside_hpc.get("user1", 0) + 1
    assert _diff(engine) == []


def test_fresh_database_has_the_tables_of_the_store(tmp_path):
    engine = engine_for(None, tmp_path)
    Store(engine).ensure_schema()
    assert migrate.current(engine) == migrate.head()
    assert _diff(engine) == []  # the migrations make exactly the tables of store.py


def test_upgrade_again_changes_nothing(tmp_path):
    _old_database(tmp_path, runs=5)
    engine = engine_for(None, tmp_path)
    Store(engine).ensure_schema()
    migrate.upgrade(engine)  # a second start
    Store(engine_for(None, tmp_path)).ensure_schema()
    assert migrate.current(engine) == migrate.head()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == 5
        versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    assert [v[0] for v in versions] == [migrate.head()]
