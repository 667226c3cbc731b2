"""xcron.xml with a real server process: SanteDB's own file, bad files, hand edits and reloads."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from xcron.client import (
    CalendarSpec,
    Client,
    DayOfWeek,
    FailedPreconditionError,
    IntervalSpec,
    InvalidArgumentError,
    Schedule,
)

DATA = Path(__file__).resolve().parent.parent / "data"


def entries_by_type(xml: bytes) -> dict[str, bytes]:
    root = etree.fromstring(xml)
    # Exclusive C14N: the element as written, without the namespace declarations it inherits.
    return {str(e.get("type")): etree.tostring(e, method="c14n", exclusive=True) for e in root}


def test_santedb_file_is_read_and_its_entries_survive_a_save(server_factory: Any, tmp_path: Path) -> None:
    schedule_file = tmp_path / "xcron.xml"
    shutil.copy(DATA / "santedb.sample.xml", schedule_file)
    original = entries_by_type(schedule_file.read_bytes())
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        assert client.reload_schedules().unknown_entry_count == 3
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
    saved = entries_by_type(schedule_file.read_bytes())
    for type_name, element in original.items():
        assert saved[type_name] == element  # SanteDB's entries, unchanged
    assert "xcron_test_jobs.TickJob, xcron_test_jobs" in saved


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"<ArrayOfJobItemConfiguration><JobItemConfiguration", "not well-formed"),
        (
            b'<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY x "y">]>\n<ArrayOfJobItemConfiguration/>',
            "DTD",
        ),
        (  # what SanteDB's serializer cannot read either, in an entry of a job this server runs
            b"<ArrayOfJobItemConfiguration>\n"
            b'  <JobItemConfiguration type="xcron.server.jobs.BackupJob, xcron-server" startType="schedule">\n'
            b'    <schedule xmlns="http://santedb.org/configuration">\n'
            b'      <add type="interval" start="2026-01-01T00:00:00Z" interval="PT1H" />\n'
            b"    </schedule>\n  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n",
            "interval",
        ),
    ],
)
def test_a_bad_file_stops_the_server_and_is_left_untouched(tmp_path: Path, content: bytes, reason: str) -> None:
    schedule_file = tmp_path / "xcron.xml"
    schedule_file.write_bytes(content)
    result = subprocess.run(
        [sys.executable, "-m", "xcron.server", "--listen", "127.0.0.1:0", "--schedule-file", str(schedule_file),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and str(schedule_file) in result.stderr
    assert reason.lower() in result.stderr.lower()
    assert schedule_file.read_bytes() == content


def test_interval_error_names_the_line(tmp_path: Path) -> None:
    schedule_file = tmp_path / "xcron.xml"
    schedule_file.write_text(
        "<ArrayOfJobItemConfiguration>\n"
        '  <JobItemConfiguration type="xcron.server.jobs.BackupJob, xcron-server" startType="schedule">\n'
        '    <schedule xmlns="http://santedb.org/configuration">\n'
        '      <add type="interval" start="2026-01-01T00:00:00Z" interval="often" />\n'
        "    </schedule>\n  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "xcron.server", "--listen", "127.0.0.1:0", "--schedule-file", str(schedule_file),
         "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert re.search(rf"{re.escape(str(schedule_file))}:4: .*interval", result.stderr)


def test_hand_edit_is_picked_up_on_sighup_and_a_bad_edit_is_rejected(server: Any) -> None:
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
        text = server.schedule_file.read_text()
        assert 'interval="3600"' in text
        server.schedule_file.write_text(text.replace('interval="3600"', 'interval="120"'))
        mark = len(server.output)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("xcron.xml reloaded", after=mark)
        assert client.get_job("test.tick").schedules[0].spec == IntervalSpec(every=timedelta(seconds=120))

        broken = text.replace('interval="3600"', 'interval="soon"')
        server.schedule_file.write_text(broken)
        mark = len(server.output)
        server.process.send_signal(signal.SIGHUP)
        server.wait_for_log("reload rejected, running schedules kept", after=mark)
        assert client.get_job("test.tick").schedules[0].spec == IntervalSpec(every=timedelta(seconds=120))
        with pytest.raises(InvalidArgumentError, match=r"xcron\.xml was not reloaded"):
            client.reload_schedules()
        assert server.schedule_file.read_text() == broken  # never overwritten


# -- SanteDB fidelity (issue 11) ------------------------------------------------------------------------

TICK = "xcron_test_jobs.TickJob, xcron_test_jobs"
SANTEDB_VALUES = (
    '<?xml version="1.0"?>\r\n'
    '<ArrayOfJobItemConfiguration xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\r\n'
    '  <JobItemConfiguration type="SanteDB.Core.Jobs.BackupJob, SanteDB.Core.Api" startType="schedule">\r\n'
    '    <schedule xmlns="http://santedb.org/configuration">\r\n'
    '      <add type="interval" start="0001-01-01T00:00:00" interval="0" />\r\n'
    '      <add type="interval" start="2026-01-01T00:00:00" stop="2025-01-01T00:00:00" interval="-60" />\r\n'
    "    </schedule>\r\n  </JobItemConfiguration>\r\n"
    f'  <JobItemConfiguration type="{TICK}" startType="schedule">\r\n'
    '    <schedule xmlns="http://santedb.org/configuration">\r\n'
    '      <add type="interval" start="0001-01-01T00:00:00" interval="-60" />\r\n'
    '      <add type="scheduled" days="Monday Friday" start="0001-01-01T23:30:00" '
    'stop="9999-12-31T23:59:59.9999999" />\r\n'
    '      <add type="interval" start="0001-01-01T00:00:00" stop="9999-12-31T23:59:59.9999999" interval="3600" />\r\n'
    "    </schedule>\r\n  </JobItemConfiguration>\r\n"
    "</ArrayOfJobItemConfiguration>"
)


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Pacific/Kiritimati", "UTC"])
def test_values_santedb_writes_never_stop_start_up(server_factory: Any, tmp_path: Path, zone: str) -> None:
    schedule_file = tmp_path / "xcron.xml"
    schedule_file.write_bytes(b"\xef\xbb\xbf" + SANTEDB_VALUES.encode())
    server = server_factory(extra_args=["--time-zone", zone]).start()
    with Client(server.target, timeout=20) as client:
        job = client.get_job("test.tick")
        # The schedule xcron cannot honour is disabled, named by line; the others run.
        assert len(job.disabled_schedules) == 1
        assert job.disabled_schedules[0].startswith("xcron.xml:11: interval='-60'")
        assert str(tmp_path) not in job.disabled_schedules[0]
        calendar, interval = job.schedules
        assert calendar.spec == CalendarSpec(
            days=frozenset({DayOfWeek.MONDAY, DayOfWeek.FRIDAY}), time_of_day=time(23, 30)
        )
        assert calendar.end_time is None and interval.end_time is None  # MaxValue: no end
        assert calendar.next_fire_times and interval.next_fire_times
        local = calendar.next_fire_times[0].astimezone(ZoneInfo(zone))
        assert (local.isoweekday(), local.time()) in {(1, time(23, 30)), (5, time(23, 30))}
        assert re.search(r"xcron\.xml:11: job test\.tick: interval='-60'", server.log())
    assert schedule_file.read_bytes() == b"\xef\xbb\xbf" + SANTEDB_VALUES.encode()  # nothing written


def test_a_save_keeps_santedb_text_and_removes_cleared_entries(server_factory: Any, tmp_path: Path) -> None:
    schedule_file = tmp_path / "xcron.xml"
    original = b"\xef\xbb\xbf" + SANTEDB_VALUES.encode()
    schedule_file.write_bytes(original)
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.block", [Schedule.every(timedelta(hours=1))])
        written = schedule_file.read_bytes()
        # SanteDB's bytes stay (BOM, declaration, CRLF, " />"); the new entry is added in the same style.
        head = original[: original.index(b"</ArrayOfJobItemConfiguration>")]
        assert written.startswith(head.rstrip(b"\r\n"))
        assert b"\n" not in written.replace(b"\r\n", b"")
        assert b'interval="3600" />' in written and b"xcron_test_jobs.BlockJob" in written
        client.clear_schedule("test.block")
        assert schedule_file.read_bytes() == original  # the cleared job's entry is gone, as in SanteDB
        job = client.clear_schedule("test.tick")
        assert job.disabled_schedules == ()
        assert TICK.encode() not in schedule_file.read_bytes()


def test_an_edit_on_disk_is_reloaded_before_a_save(server: Any) -> None:
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
        text = server.schedule_file.read_text()
        edited = text.replace('interval="3600"', 'interval="120"')
        server.schedule_file.write_text(edited)  # not reloaded
        client.set_schedule("test.block", [Schedule.every(timedelta(minutes=5))])
        saved = server.schedule_file.read_text()
        assert 'interval="120"' in saved and 'interval="300"' in saved  # the edit survived
        assert client.get_job("test.tick").schedules[0].spec == IntervalSpec(every=timedelta(seconds=120))
        server.wait_for_log("changed on disk since it was last read")

        broken = saved.replace('interval="120"', 'interval="soon"')
        server.schedule_file.write_text(broken)
        with pytest.raises(FailedPreconditionError, match=r"xcron\.xml was changed on disk and is not valid"):
            client.set_schedule("test.block", [Schedule.every(timedelta(minutes=10))])
        assert server.schedule_file.read_text() == broken  # never overwritten
        with pytest.raises(InvalidArgumentError):
            client.reload_schedules()
        with pytest.raises(FailedPreconditionError):  # still refused after a rejected reload
            client.pause_schedule("test.tick")
        assert server.schedule_file.read_text() == broken


def test_a_hand_edit_that_removes_xcron_settings_wins(server: Any) -> None:
    """Only a SanteDB re-save (no trace of xcron's namespace left) gets xcron's settings restored: a hand
    edit that unpauses a job by deleting xc:paused, its entry's only xcron setting, stays unpaused."""
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
        client.pause_schedule("test.tick")
        text = server.schedule_file.read_text()
        assert text.count('xc:paused="true"') == 1
        server.schedule_file.write_text(text.replace(' xc:paused="true"', ""))
        client.reload_schedules()
        assert not client.get_job("test.tick").schedules_paused
        client.set_schedule("test.block", [Schedule.every(timedelta(minutes=5))])  # a save keeps the edit
        assert not client.get_job("test.tick").schedules_paused
    assert "xc:paused" not in server.schedule_file.read_text()


def test_a_save_keeps_owner_group_and_mode(server: Any) -> None:
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
        if os.geteuid() != 0:
            pytest.skip("needs root to give the file to another user")
        os.chown(server.schedule_file, 4321, 8765)
        server.schedule_file.chmod(0o640)
        client.set_schedule("test.tick", [Schedule.every(timedelta(hours=2))])
        status = server.schedule_file.stat()
        assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (4321, 8765, 0o640)
        assert 'interval="7200"' in server.schedule_file.read_text()


@pytest.mark.parametrize("zone", ["America/New_York", "Europe/Paris", "Pacific/Kiritimati"])
def test_every_representable_start_and_end_gives_a_schedule_or_invalid_argument(server_factory: Any, zone: str) -> None:
    first = datetime(1, 1, 1, tzinfo=UTC)
    last = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    server = server_factory(extra_args=["--time-zone", zone]).start()
    with Client(server.target, timeout=20) as client:
        schedules = [
            Schedule.on_days([DayOfWeek.MONDAY], time(23, 30), start_time=first),
            Schedule.every(timedelta(hours=1), start_time=first, end_time=last),
            Schedule.cron("0 3 * * *", start_time=first),
        ]
        job = client.set_schedule("test.tick", schedules)
        assert all(s.next_fire_times for s in job.schedules)
        assert job.schedules[1].end_time is None  # the last representable instant: no end
        with pytest.raises(InvalidArgumentError) as caught:
            client.set_schedule("test.block", [Schedule.on_days([DayOfWeek.MONDAY], time(23, 30), start_time=last)])
        assert caught.value.field_violations[0].field == "schedules[0].start_time"
        assert client.get_job("test.block").schedules == ()
    server.stop()
    server.start()  # the file it wrote loads again in this zone
    with Client(server.target, timeout=20) as client:
        again = client.get_job("test.tick").schedules
        assert [s.spec for s in again] == [s.spec for s in job.schedules]
        assert all(s.next_fire_times for s in again)
