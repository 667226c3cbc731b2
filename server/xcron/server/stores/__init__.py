"""Persistence: implementations of core's ports (core/ports.py): the SanteDB-compatible schedule file and
xcron's own state (SQLite, PostgreSQL). Blocking I/O runs off the event loop (threads, or psycopg's async API)."""
