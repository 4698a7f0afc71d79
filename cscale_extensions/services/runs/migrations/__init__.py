"""Alembic environment of the runs database (see :mod:`..migrate`)."""
