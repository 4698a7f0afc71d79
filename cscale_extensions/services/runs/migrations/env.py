"""Alembic's entry point for the runs database: runs the revisions on the connection given by
:func:`cscale_extensions.services.runs.migrate.config` (online only; no alembic.ini)."""

from alembic import context

from cscale_extensions.services.runs.store import meta

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "run the runs migrations through cscale_extensions.services.runs.migrate.upgrade()"
    )
# batch mode: SQLite cannot ALTER most things in place; Alembic copies the table instead
context.configure(connection=connection, target_metadata=meta, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
