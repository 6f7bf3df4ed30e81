"""Alembic revisions of the database schema, shipped inside the package (see digest.migrate)."""
