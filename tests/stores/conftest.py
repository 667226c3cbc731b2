from postgres_db import make_pg, pg_schema

__all__ = ["make_pg", "pg_schema"]
