"""Backs up xcron.xml and the state database into a timestamped folder, keeping the newest N."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from xcron.server.core.jobs import Job, JobCancelled, JobContext, Parameter, ParameterType


class BackupJob(Job):
    id = "xcron.backup"
    type_name = "xcron.server.jobs.BackupJob, xcron-server"
    name = "Back up schedules and state"
    description = (
        "Copies xcron.xml and a consistent snapshot of the state database (SQLite online backup) "
        "into FOLDER/xcron-backup-<UTC time>/, then deletes all but the newest KEEP backups."
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
        try:
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
