"""SanteDB fidelity, with SanteDB's side run for real (Mono): every file SanteDB writes loads, SanteDB fires
xcron's calendars when xcron does, and a SanteDB re-save loses nothing of xcron's."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from santedb_side import SanteDb

from xcron.client import (
    CalendarSpec,
    Client,
    CronSpec,
    DayOfWeek,
    IntervalSpec,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
)
from xcron.server.core import model
from xcron.server.core.triggers import fire_times
from xcron.server.stores.xcron_xml import ScheduleDocument, ScheduleEntry, parse_schedule_xml, render_schedule_xml

TICK = "xcron_test_jobs.TickJob, xcron_test_jobs"
BACKUP = "SanteDB.Core.Jobs.BackupJob, SanteDB.Core.Api"


def is_tick(type_name: str) -> bool:
    return type_name.split(",")[0].strip() == "xcron_test_jobs.TickJob"


# What SanteDB's own code paths put in the file: the dCDR's backup job with start left at MinValue,
# SetJobSchedule(job, TimeSpan) (start at its default), MaxValue stops, interval 0 and -60, a stop
# before the start, a calendar entered in the admin UI (a local DateTime), a one-shot, a parameter.
SANTEDB_ITEMS = [
    f"job={BACKUP}|schedule",
    "add=type=interval;start=min;interval=0",
    "add=type=interval;start=local:2026-01-01T00:00:00;stop=local:2025-01-01T00:00:00;interval=-60",
    f"job={TICK}|schedule",
    "add=type=interval;start=min;interval=-60",
    "add=days=Monday,Friday;start=min;stop=max",
    "add=type=interval;start=min;interval=3600",
    "add=days=Sunday;start=local:2026-06-07T23:30:00;stop=max",
    "add=start=local:2026-12-24T02:00:00",
    "param=string:x",
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Pacific/Kiritimati", "Australia/Lord_Howe"]


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize("style", [[], ["--crlf", "--bom"], ["--modern"]], ids=["mono", "windows", "modern"])
def test_every_file_santedb_writes_loads(santedb: SanteDb, tmp_path: Path, zone: str, style: list[str]) -> None:
    data = santedb.write(tmp_path / "xcron.xml", [*style, *SANTEDB_ITEMS], zone=zone)
    doc = parse_schedule_xml(data, source="xcron.xml", default_zone=zone, known=is_tick)
    backup, tick = doc.entries
    assert backup.type_name == BACKUP  # a job xcron does not run: kept, never a reason to refuse
    assert [d.reason.split(":")[0] for d in tick.disabled] == ["interval='-60'"]
    monday_friday, hourly, sunday, once = tick.schedules
    assert monday_friday.spec == model.CalendarSpec(days=frozenset({1, 5}), time_of_day=time(0, 0))
    assert monday_friday.start == datetime.min.replace(tzinfo=UTC)  # MinValue: no lower bound
    assert monday_friday.end is None and sunday.end is None  # MaxValue: no end
    assert hourly.spec == model.IntervalSpec(every=timedelta(hours=1))
    assert sunday.spec == model.CalendarSpec(days=frozenset({7}), time_of_day=time(23, 30))
    local = ZoneInfo(zone)
    # SanteDB never fires on the date written in start: the first Sunday is the next one.
    assert fire_times(sunday, datetime(2026, 6, 1, tzinfo=UTC), 1, default_zone=zone) == [
        datetime(2026, 6, 14, 23, 30, tzinfo=local).astimezone(UTC)
    ]
    assert fire_times(once, datetime(2026, 1, 1, tzinfo=UTC), 2, default_zone=zone) == [
        datetime(2026, 12, 24, 2, 0, tzinfo=local).astimezone(UTC)
    ]
    assert tick.positional_parameters == ("x",)
    # Nothing changed: saving writes SanteDB's bytes back exactly (BOM, declaration, line ends).
    assert render_schedule_xml(doc, default_zone=zone, known=is_tick) == data


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York"])
def test_a_server_starts_on_santedb_files_in_any_zone(
    santedb: SanteDb, server_factory: Any, tmp_path: Path, zone: str
) -> None:
    data = santedb.write(tmp_path / "xcron.xml", ["--crlf", "--bom", *SANTEDB_ITEMS], zone=zone)
    server = server_factory(extra_args=["--time-zone", zone]).start()
    with Client(server.target, timeout=20) as client:
        job = client.get_job("test.tick")
        assert len(job.schedules) == 4
        assert len(job.disabled_schedules) == 1 and "interval='-60'" in job.disabled_schedules[0]
        assert all(s.next_fire_times for s in job.schedules[:3])
    assert (tmp_path / "xcron.xml").read_bytes() == data


def test_santedb_reads_its_entries_unchanged_after_xcron_saves(
    santedb: SanteDb, server_factory: Any, tmp_path: Path
) -> None:
    original = tmp_path / "original.xml"
    santedb.write(original, ["--crlf", "--bom", *SANTEDB_ITEMS], zone="Europe/Paris")
    schedule_file = tmp_path / "xcron.xml"
    schedule_file.write_bytes(original.read_bytes())
    server = server_factory(extra_args=["--time-zone", "Europe/Paris"]).start()
    with Client(server.target, timeout=20) as client:
        client.set_schedule(
            "test.block",
            [Schedule.on_days([DayOfWeek.MONDAY], time(23, 0), time_zone="Europe/Paris"), Schedule.cron("0 3 * * *")],
        )
        client.pause_schedule("test.block")
    before = santedb.dump(original, zone="Europe/Paris")
    after = santedb.dump(schedule_file, zone="Europe/Paris")
    assert after[: len(before)] == before  # SanteDB's own entries, as SanteDB reads them
    block = after[len(before) :]
    assert block[0].startswith("job type=xcron_test_jobs.BlockJob, xcron_test_jobs startType=TimerOnly")
    # SanteDB sees the calendar (at 23:00, as written) and not the cron schedule, which only xcron reads.
    assert len(block) == 2 and "days=Monday" in block[1] and "T23:00:00.0000000/Unspecified" in block[1]


def local_strings(instants: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%dT%H:%M:%S") for t in instants]


def santedb_firings(santedb: SanteDb, path: Path, zone: str, begin: datetime, days: int) -> list[str]:
    """SanteDB's timer, checking every 5 minutes (aligned, so its own hour/minute defect stays out)."""
    checks = [begin + timedelta(minutes=5 * k) for k in range(days * 288)]
    return santedb.applies(path, TICK, local_strings(checks, zone), zone=zone)


DAYS_SETS = {
    "every-day": frozenset(range(1, 8)),
    "today": frozenset({4}),  # created on Thursday 2026-03-26
    "tomorrow": frozenset({5}),
    "yesterday": frozenset({3}),
    "monday-friday": frozenset({1, 5}),
    "once": frozenset(),
}


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "UTC"])
@pytest.mark.parametrize("explicit_zone", [False, True], ids=["server-zone", "schedule-zone"])
def test_santedb_fires_xcron_calendars_when_xcron_does(
    santedb: SanteDb, tmp_path: Path, zone: str, explicit_zone: bool
) -> None:
    """For a SanteDB host in the schedule's zone, over twelve days that cross DST changes (Paris on
    03-29, Lord Howe on 04-05), including the day the schedule is created."""
    local = ZoneInfo(zone)
    path = tmp_path / "xcron.xml"
    days = 12
    for name, days_set in DAYS_SETS.items():
        for created in (time(19, 0), time(23, 30), time(23, 45)):
            start = datetime.combine(datetime(2026, 3, 26).date(), created, tzinfo=local).astimezone(UTC)
            schedule = model.Schedule(
                spec=model.CalendarSpec(days=days_set, time_of_day=time(23, 30)),
                start=start,
                time_zone=zone if explicit_zone else "",
            )
            entry = ScheduleEntry(type_name=TICK, start_type="schedule", schedules=(schedule,))
            default_zone = "UTC" if explicit_zone else zone
            path.write_bytes(render_schedule_xml(ScheduleDocument((entry,)), default_zone=default_zone))
            ours = fire_times(schedule, start - timedelta(microseconds=1), 100, default_zone=default_zone)
            ours = [t for t in ours if t < start + timedelta(days=days)]
            theirs = santedb_firings(santedb, path, zone, start, days)
            assert theirs == local_strings(ours, zone), (name, created)
            assert ours, (name, created)


def test_santedb_resave_loses_nothing_of_xcron(santedb: SanteDb, server_factory: Any, tmp_path: Path) -> None:
    schedule_file = tmp_path / "xcron.xml"
    santedb.write(schedule_file, [f"job={BACKUP}|schedule", "add=type=interval;start=min;interval=86400"])
    server = server_factory().start()
    schedules = [
        Schedule.on_days(
            [DayOfWeek.MONDAY, DayOfWeek.FRIDAY],
            time(23, 0),
            time_zone="Europe/Paris",
            parameters={"label": "paris"},
            misfire_policy=MisfirePolicy.RUN_ALL,
            max_catchup_runs=3,
            overlap_policy=OverlapPolicy.BUFFER_ONE,
        ),
        Schedule.cron("*/15 * * * *", time_zone="America/New_York", parameters={"label": "cron"}),
        Schedule.every(timedelta(minutes=15), misfire_policy=MisfirePolicy.SKIP, parameters={"label": "every"}),
    ]
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", schedules)
        before = client.get_job("test.tick", next_fire_time_count=3)
        client.pause_schedule("test.tick")
        before = client.get_job("test.tick", next_fire_time_count=3)
        # SanteDB, on a New York host, loads the file and saves its list over it while xcron runs.
        santedb.resave(schedule_file, schedule_file, zone="America/New_York")
        assert b"urn:xcron" not in schedule_file.read_bytes()
        client.reload_schedules()
        assert client.get_job("test.tick", next_fire_time_count=3) == before
    server.stop()
    santedb.resave(schedule_file, schedule_file, zone="America/New_York")  # and again at its next start-up
    server.start()
    with Client(server.target, timeout=20) as client:
        after = client.get_job("test.tick", next_fire_time_count=3)
        assert after.schedules_paused
        assert after.schedules == before.schedules
        assert [s.spec for s in after.schedules] == [
            CalendarSpec(days=frozenset({DayOfWeek.MONDAY, DayOfWeek.FRIDAY}), time_of_day=time(23, 0)),
            CronSpec(expression="*/15 * * * *"),
            IntervalSpec(every=timedelta(minutes=15)),
        ]
        # xcron writes its settings back with its next save.
        client.resume_schedule("test.tick")
    assert b'xc:timeZone="Europe/Paris"' in schedule_file.read_bytes()
    assert BACKUP.encode() in schedule_file.read_bytes()


def test_a_santedb_edit_wins_and_xcron_says_what_it_could_not_keep(
    santedb: SanteDb, server_factory: Any, tmp_path: Path
) -> None:
    server = server_factory().start()
    with Client(server.target, timeout=20) as client:
        client.set_schedule("test.tick", [Schedule.every(timedelta(minutes=15), time_zone="Europe/Paris")])
        # In SanteDB's admin UI: the job now runs every 30 minutes (SetJobSchedule(job, TimeSpan)).
        santedb.write(server.schedule_file, [f"job={TICK}|schedule", "add=type=interval;start=min;interval=1800"])
        client.reload_schedules()
        (schedule,) = client.get_job("test.tick").schedules
        assert schedule.spec == IntervalSpec(every=timedelta(minutes=30))
        assert schedule.time_zone == ""
        server.wait_for_log(re.escape("was changed outside xcron; SanteDB's edit wins"))


def test_the_santedb_2_1_shape_without_add_type_reads_alike(santedb: SanteDb, tmp_path: Path) -> None:
    """SanteDB 2.1-era files carry no type on <add>: both read a calendar (JobScheduleType's default)."""
    path = tmp_path / "xcron.xml"
    path.write_text(
        '<?xml version="1.0"?>\n<ArrayOfJobItemConfiguration>\n'
        f'  <JobItemConfiguration type="{TICK}">\n'
        '    <schedule xmlns="http://santedb.org/configuration">\n'
        '      <add days="Tuesday" start="2026-03-03T07:45:00" />\n'
        "    </schedule>\n  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n"
    )
    (job, add) = santedb.dump(path)
    assert "startType=Immediate" in job
    assert add.startswith("  add type=Scheduled days=Tuesday start=2026-03-03T07:45:00.0000000/Unspecified")
    (entry,) = parse_schedule_xml(path.read_bytes(), source="xcron.xml", default_zone="UTC", known=is_tick).entries
    assert entry.start_type == "immediate"
    (schedule,) = entry.schedules
    assert schedule.spec == model.CalendarSpec(days=frozenset({2}), time_of_day=time(7, 45))
    theirs = santedb_firings(santedb, path, "UTC", datetime(2026, 3, 1, tzinfo=UTC), 17)
    ours = fire_times(schedule, datetime(2026, 3, 1, tzinfo=UTC), 3, default_zone="UTC")
    assert theirs == local_strings(ours[:2], "UTC") == ["2026-03-10T07:45:00", "2026-03-17T07:45:00"]


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York"])
@pytest.mark.parametrize(
    "start",
    # A local DateTime (the admin UI), an unspecified one, a UTC one (the "Z" SanteDB compares as a local
    # time), and midnight: SanteDB never fires on the date in start, even at midnight.
    [
        "local:2026-03-22T23:30:00",
        "unspecified:2026-03-22T07:15:00",
        "utc:2026-03-22T23:30:00",
        "local:2026-03-22T00:00:00",
    ],
)
def test_xcron_fires_santedb_calendars_when_santedb_does(
    santedb: SanteDb, tmp_path: Path, zone: str, start: str
) -> None:
    path = tmp_path / "xcron.xml"
    data = santedb.write(path, [f"job={TICK}|schedule", f"add=days=Sunday,Wednesday;start={start}"], zone=zone)
    (schedule,) = parse_schedule_xml(data, source="xcron.xml", default_zone=zone, known=is_tick).entries[0].schedules
    begin = datetime(2026, 3, 21, tzinfo=UTC)
    ours = [t for t in fire_times(schedule, begin, 20, default_zone=zone) if t < begin + timedelta(days=14)]
    theirs = santedb_firings(santedb, path, zone, begin, 14)
    assert theirs == local_strings(ours, zone)
    assert theirs[0].startswith("2026-03-25T")  # not on Sunday 03-22, the date in start
