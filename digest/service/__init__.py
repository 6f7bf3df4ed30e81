"""The service: the daily cycle (pipeline, with its run context, picking and parallel
planning, and the run report), its schedule and `digest serve`, the link web app, and what the
operator's commands are built on (checks, roster, demo, workspace).

May import every stage below it (store, ingest, rank, mail); the CLI imports it, never the
reverse.
"""
