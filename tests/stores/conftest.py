from postgres_db import pg_schema

__all__ = ["pg_schema"]
