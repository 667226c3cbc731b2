"""Built-in maintenance jobs, registered through the `xcron.jobs` entry point `builtin`."""

from xcron.server.jobs.backup import BackupJob
from xcron.server.jobs.purge import PurgeHistoryJob

__all__ = ["BackupJob", "PurgeHistoryJob"]
