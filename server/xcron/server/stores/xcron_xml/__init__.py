"""Reads and writes xcron.xml, SanteDB's schedule file, so both tools can share it.

The file keeps SanteDB's layout (see FORMAT.md). What SanteDB cannot express lives in the
`urn:xcron:schedule:v1` namespace, where SanteDB's XmlSerializer ignores it: zones and policies as
`xc:` attributes on `<add>`, named parameters as `<xc:param>` children, cron schedules as
`<xc:cron>` elements inside `<schedule>`, and a job-level `xc:paused`.

Values mean what they mean to SanteDB on a host in the schedule's zone (santedb-api's
JobItemSchedule and ExtensionMethods.AppliesTo): `start`/`stop` with an offset are instants, without
one or with "Z" wall times; MinValue and MaxValue are no bounds; a calendar with days never fires on
the date in its `start`. So xcron writes a calendar's `start` as a wall time at its time of day on
the day before the first firing (the date of the firing for a one-shot), and its exact start as
`xc:start`.

Saving splices: a document read from bytes is written as those bytes with only the changed entries
replaced, so SanteDB's text, declaration, BOM and line ends stay. Entries are written as text; a save
checks its output's structure (saving.py), each schedule having been checked where it entered the
document (check_writable).

Reading is strict where SanteDB is: what its serializer cannot read is a ScheduleFileError naming
the line and the attribute (for entries of jobs this server runs). What it accepts but xcron cannot
run (interval="0", a stop not after the start) is a DisabledSchedule, kept as written.
"""

from __future__ import annotations

from xcron.server.core.ports import (
    NO_END_FLOOR,
    DisabledSchedule,
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
    ScheduleWriteError,
)
from xcron.server.stores.xcron_xml.common import (
    MAX_DEPTH,
    MAX_FILE_BYTES,
    SANTEDB_NS,
    START_TYPES,
    XC_NS,
    santedb_calendar_start,
)
from xcron.server.stores.xcron_xml.files import (
    check_writable,
    load_schedule_file,
    read_schedule_bytes,
    save_schedule_file,
    temp_prefix,
    write_atomically,
)
from xcron.server.stores.xcron_xml.reading import parse_schedule_xml
from xcron.server.stores.xcron_xml.saving import render_checked
from xcron.server.stores.xcron_xml.writing import render_schedule_xml

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "NO_END_FLOOR",
    "SANTEDB_NS",
    "START_TYPES",
    "XC_NS",
    "DisabledSchedule",
    "ScheduleDocument",
    "ScheduleEntry",
    "ScheduleFileError",
    "ScheduleWriteError",
    "check_writable",
    "load_schedule_file",
    "parse_schedule_xml",
    "read_schedule_bytes",
    "render_checked",
    "render_schedule_xml",
    "santedb_calendar_start",
    "save_schedule_file",
    "temp_prefix",
    "write_atomically",
]
