"""One server per data dir: an exclusive `flock` on `<data dir>/xcron.lock`, held for the process's life.

The lock file holds the owner's pid, so a second server can say who holds the directory. The kernel
drops the lock when the process ends, however it ends (kill -9 included), so a stale lock file never
blocks a restart. Also removes the temp files an interrupted xcron.xml save left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
from pathlib import Path

from xcron.server.stores.xcron_xml import temp_prefix

log = logging.getLogger(__name__)

LOCK_NAME = "xcron.lock"


class DataDirLocked(Exception):
    """Another live process holds the data dir."""

    def __init__(self, data_dir: Path, holder: int | None) -> None:
        who = f"pid {holder}" if holder else "a process whose pid could not be read"
        super().__init__(f"the data dir {data_dir} is in use by another xcron-server ({who})")
        self.holder = holder


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Takes the lock or raises DataDirLocked naming the holder's pid (OSError if the dir is unusable)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise DataDirLocked(self.data_dir, holder) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def remove_stale_temp_files(target: Path) -> list[Path]:
    """Deletes what interrupted atomic saves of `target` left beside it: only names of the writer's own
    temp-file pattern (`.xcron.xml.` and 8 characters for xcron.xml), only regular files. Call it while
    holding the data-dir lock, before anything writes the file."""
    target = Path(os.path.realpath(target))
    folder = target.parent
    # tempfile.NamedTemporaryFile(prefix=...) names: the prefix and 8 of [a-z0-9_]; nothing else matches.
    temp_name = re.compile(re.escape(temp_prefix(target)) + r"[a-z0-9_]{8}")
    removed: list[Path] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        if not temp_name.fullmatch(name):
            continue
        path = folder / name
        try:
            if not path.is_symlink() and path.is_file():
                path.unlink()
                removed.append(path)
        except OSError as exc:
            log.warning("could not remove the stale temp file %s: %s", path, exc)
    for path in removed:
        log.warning("removed %s, left by an interrupted save of the schedule file", path)
    return removed
