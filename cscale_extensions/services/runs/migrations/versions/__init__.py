"""Revisions of the runs database, oldest first (``down_revision`` chains them)."""
