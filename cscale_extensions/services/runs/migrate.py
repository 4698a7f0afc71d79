"""Schema migrations of the runs database (Alembic), applied at every start of the service.

Why: the tables used to be made by ``create_all``, which creates missing tables but never
changes an existing one, so a new column (e.g. the compute site of a run) meant a database
that the new code could not use, or hand-made SQL. Now the schema is a chain of Alembic
revisions in :mod:`.migrations` (``versions/``): ``0001`` is the schema as ``create_all``
made it, each later revision one change. :func:`upgrade` brings a database to the newest
revision; a database made before migrations existed (tables, no ``alembic_version``) is first
marked as ``0001`` (its schema is exactly that) and then upgraded, keeping every row.

Writing a revision: copy the latest file in ``migrations/versions/``, set ``revision`` and
``down_revision``, write ``upgrade()`` with ``alembic.op``, and change the tables in
:mod:`.store` the same way (``tests/runs/test_migrations.py`` checks that the two agree).
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).with_name("migrations")
#: the schema made by ``create_all`` before migrations existed
BASELINE = "0001"


def config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for the runs migrations (no alembic.ini needed)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision."""
    return ScriptDirectory.from_config(config()).get_current_head()


def current(engine: sa.Engine) -> str | None:
    """The revision the database is at (None: no migrations applied)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> None:
    """Bring the database to the newest revision (one transaction where the database has
    transactional DDL, as PostgreSQL has)."""
    with engine.begin() as conn:
        tables = set(sa.inspect(conn).get_table_names())
        cfg = config(conn)
        if "alembic_version" not in tables and "runs" in tables:
            command.stamp(cfg, BASELINE)  # made by create_all: exactly the baseline
        command.upgrade(cfg, "head")
