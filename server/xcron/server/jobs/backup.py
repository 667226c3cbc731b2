"""Backs up the schedules and the state into a timestamped folder, keeping the newest N: xcron.xml and
the SQLite database, or, with the PostgreSQL store, the stored schedule document and a `pg_dump` of the
store's schema (every table: jobs, executions, schedules, the document, replicas)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from xcron.server.core.jobs import Job, JobCancelled, JobContext, Parameter, ParameterType
from xcron.server.stores.postgres import PostgresStateStore


class BackupJob(Job):
    id = "xcron.backup"
    type_name = "xcron.server.jobs.BackupJob, xcron-server"
    name = "Back up schedules and state"
    description = (
        "Copies xcron.xml and a consistent snapshot of the state database (SQLite online backup; with the "
        "PostgreSQL store, the stored schedules and a pg_dump of its schema) into "
        "FOLDER/xcron-backup-<UTC time>/, then deletes all but the newest KEEP backups."
    )
    parameters = (
        Parameter("folder", ParameterType.STRING, description="where backups go (default: DATA_DIR/backups)"),
        Parameter("keep", ParameterType.INT, default=10, description="how many backups to keep"),
    )
    can_cancel = True

    def run(self, ctx: JobContext) -> None:
        data_dir = Path(ctx.services["data_dir"])
        schedule_file = Path(ctx.services["schedule_file"])
        folder = Path(ctx.get_str("folder")) if "folder" in ctx.parameters else data_dir / "backups"
        keep = ctx.get_int("keep")
        if keep < 1:
            raise ValueError("keep must be at least 1")
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        target = folder / f"xcron-backup-{stamp}"
        partial = folder / f".partial-{stamp}"
        partial.mkdir(parents=True)
        store = ctx.services.get("store")
        try:
            if isinstance(store, PostgresStateStore):
                self._backup_postgres(ctx, store, partial)
            else:
                if schedule_file.exists():
                    shutil.copy2(schedule_file, partial / "xcron.xml")
                ctx.report_progress(0.1, "copied xcron.xml")
                database = data_dir / "state.sqlite3"
                if database.exists():
                    self._backup_database(ctx, database, partial / "state.sqlite3")
            ctx.raise_if_cancelled()
            partial.rename(target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        old = sorted(p for p in folder.glob("xcron-backup-*") if p.is_dir())[:-keep]
        for path in old:
            shutil.rmtree(path)
        ctx.report_progress(1.0, f"backed up to {target} ({len(old)} old backup(s) removed)")

    @staticmethod
    def _backup_database(ctx: JobContext, source: Path, dest: Path) -> None:
        def progress(status: int, remaining: int, total: int) -> None:
            if ctx.cancel_requested:
                raise JobCancelled("cancelled during database backup")
            done = (total - remaining) / total if total else 1.0
            ctx.report_progress(0.1 + 0.85 * done, f"database: {total - remaining}/{total} pages")

        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=64, progress=progress)
        finally:
            dst.close()
            src.close()

    @staticmethod
    def _backup_postgres(ctx: JobContext, store: PostgresStateStore, dest: Path) -> None:
        """The schedule document as xcron.xml, and `pg_dump --format=custom` of the schema (restore it with
        pg_restore). Refuses, saying why, when pg_dump is not installed: a backup that holds no state must
        not report success."""
        pg_dump = shutil.which("pg_dump")
        if pg_dump is None:
            raise RuntimeError(
                "pg_dump is not installed on this replica: the PostgreSQL store is backed up with pg_dump "
                "(Debian: postgresql-client, the server's major version or newer); nothing was backed up"
            )
        with psycopg.connect(store.dsn, connect_timeout=10) as conn:
            row = conn.execute(
                sql.SQL("SELECT xml FROM {}.schedule_document WHERE id = 1").format(sql.Identifier(store.schema))
            ).fetchone()
        if row is not None:
            (dest / "xcron.xml").write_bytes(bytes(row[0]))
        ctx.report_progress(0.1, "wrote the stored schedules as xcron.xml")
        dump = dest / "state.pgdump"
        command = [pg_dump, "--format=custom", "--no-owner", f"--schema={store.schema}", f"--file={dump}"]
        # The password goes in the environment, never on the command line (where `ps` shows it to anyone).
        params = conninfo_to_dict(store.dsn)
        password = params.pop("password", None)
        env = {**os.environ, **({"PGPASSWORD": str(password)} if password is not None else {})}
        dsn = make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
        # stderr to a file, not a pipe nobody reads while pg_dump runs (a full pipe would stall it).
        with tempfile.TemporaryFile("w+") as stderr:
            process = subprocess.Popen([*command, f"--dbname={dsn}"], stderr=stderr, env=env, text=True)
            try:
                while process.poll() is None:
                    if ctx.wait(0.1):
                        raise JobCancelled("cancelled during pg_dump")
                    ctx.report_progress(0.5, f"pg_dump of schema {store.schema}")
            finally:
                if process.poll() is None:
                    process.terminate()
                    try:
                        process.wait(10)
                    except subprocess.TimeoutExpired:
                        process.kill()
                        process.wait()
            stderr.seek(0)
            errors = stderr.read().strip()
        if process.returncode != 0:
            raise RuntimeError(f"pg_dump failed (exit {process.returncode}): {errors[-500:]}")
        ctx.report_progress(0.95, f"pg_dump of schema {store.schema}: {dump.stat().st_size} bytes")
