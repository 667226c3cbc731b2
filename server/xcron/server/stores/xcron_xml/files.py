"""The file itself: loading with a size limit, atomic saves (temp, fsync, rename, fsync the folder)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from xcron.server.core.model import (
    Schedule,
)
from xcron.server.core.ports import (
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
    ScheduleWriteError,
)
from xcron.server.stores.xcron_xml.common import MAX_FILE_BYTES
from xcron.server.stores.xcron_xml.reading import parse_schedule_xml
from xcron.server.stores.xcron_xml.saving import render_checked
from xcron.server.stores.xcron_xml.writing import render_schedule_xml


def read_schedule_bytes(path: Path) -> bytes | None:
    """The file's bytes, or None if there is no file; an oversized file is refused without reading it."""
    try:
        file = path.open("rb")
    except FileNotFoundError:
        return None
    with file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise ScheduleFileError(str(path), None, f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit")
        return file.read(MAX_FILE_BYTES + 1)  # + 1: a file growing meanwhile is still caught by the parser


def load_schedule_file(
    path: Path, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> ScheduleDocument:
    """The document in `path`; a missing file is an empty document (no schedules yet)."""
    data = read_schedule_bytes(path)
    if data is None:
        return ScheduleDocument(())
    return parse_schedule_xml(data, source=str(path), default_zone=default_zone, known=known)


def save_schedule_file(
    path: Path, doc: ScheduleDocument, *, default_zone: str, known: Callable[[str], bool] | None = None
) -> ScheduleDocument:
    """Atomically replaces `path` (temp file, fsync, rename, fsync the folder); returns the document as
    now written (its original bytes are the file's).

    What is written is checked first (render_checked). A crash or a failed write leaves the old file
    intact (SanteDB truncates and rewrites in place). The new file keeps the old one's mode, owner and
    group, so SanteDB's service account can still read it. OSError passes through unchanged so callers
    can report ENOSPC or EACCES.
    """
    written = render_checked(doc, source=str(path), default_zone=default_zone, known=known)
    assert written.original is not None
    write_atomically(path, written.original)
    return written


def temp_prefix(target: Path) -> str:
    """Prefix of the temp files of atomic saves of `target` (start-up removes stale ones: stores.datadir)."""
    return f".{target.name}."


def write_atomically(path: Path, data: bytes) -> None:
    target = Path(os.path.realpath(path))
    try:
        status: os.stat_result | None = target.stat()
    except FileNotFoundError:
        status = None
    temp = tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=temp_prefix(target))  # noqa: SIM115
    try:
        with temp:
            temp.write(data)
            temp.flush()
            if status is not None:
                _keep_owner(temp.fileno(), status, target)
            os.fchmod(temp.fileno(), stat.S_IMODE(status.st_mode) if status is not None else 0o644)
            os.fsync(temp.fileno())
        os.replace(temp.name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp.name)
        raise
    _fsync_directory(target.parent)


def _keep_owner(descriptor: int, status: os.stat_result, target: Path) -> None:
    """Gives the new file the old one's owner and group; without the right to, keeps what it can."""
    if (status.st_uid, status.st_gid) == (os.geteuid(), os.getegid()):
        return
    try:
        os.fchown(descriptor, status.st_uid, status.st_gid)
        return
    except PermissionError:
        pass
    with contextlib.suppress(PermissionError):
        os.fchown(descriptor, -1, status.st_gid)  # a member of the group may still set the group
    logging.getLogger(__name__).warning(
        "%s belonged to uid %d gid %d; this process may not give the new file that owner",
        target,
        status.st_uid,
        status.st_gid,
    )


def _fsync_directory(folder: Path) -> None:
    """Makes the rename durable; filesystems that cannot fsync a directory are tolerated."""
    descriptor = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


def check_writable(schedule: Schedule, *, default_zone: str) -> None:
    """ScheduleWriteError (naming the field) when `schedule` cannot be written to xcron.xml as it is.

    Saves rely on it: they check their output's structure, not that each schedule reads back the same
    (see saving.py), so every schedule put into a document to save passes here first."""
    entry = ScheduleEntry(type_name="Check", start_type="schedule", schedules=(schedule,))
    try:
        data = render_schedule_xml(ScheduleDocument((entry,)), default_zone=default_zone)
        (back,) = parse_schedule_xml(data, source="<check>", default_zone=default_zone).entries
    except ScheduleWriteError:
        raise
    except (ValueError, OverflowError) as exc:
        raise ScheduleWriteError("start_time", f"cannot be written to xcron.xml: {exc}") from None
    if back.schedules != (schedule,):
        raise ScheduleWriteError("start_time", "does not read back from xcron.xml as given (out of range)")
