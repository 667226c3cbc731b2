"""xcron.xml: SanteDB's files read exactly, xcron's extensions round-trip, hostile files refused."""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from xml_oracle import old_render_schedule_xml

from xcron.server.core.model import (
    CalendarSpec,
    CronSpec,
    IntervalSpec,
    MisfirePolicy,
    OverlapPolicy,
    ParameterValue,
    Schedule,
)
from xcron.server.core.triggers import next_fire_time
from xcron.server.stores import _xml_values as values
from xcron.server.stores.xcron_xml import (
    MAX_FILE_BYTES,
    ScheduleDocument,
    ScheduleEntry,
    ScheduleFileError,
    check_writable,
    common,
    load_schedule_file,
    parse_schedule_xml,
    render_schedule_xml,
    save_schedule_file,
    saving,
    writing,
)
from xcron.server.stores.xcron_xml.common import _BLANK, _checked_cron, _find, _plainly_valid_cron
from xcron.server.stores.xcron_xml.layout import _has_xcron_parts, _scan_layout, _walk_layout, entry_lines
from xcron.server.stores.xcron_xml.reading import _Reader, _schedule

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLE = DATA / "santedb.sample.xml"
EXTENDED = DATA / "xml" / "xcron.extended.xml"
HEAD = (
    '<?xml version="1.0" encoding="utf-8"?>\n<ArrayOfJobItemConfiguration '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    'xmlns:xc="urn:xcron:schedule:v1">\n'
)
SCHEDULE_NS = 'xmlns="http://santedb.org/configuration"'


def parse(text: str | bytes, default_zone: str = "UTC") -> ScheduleDocument:
    data = text.encode() if isinstance(text, str) else text
    return parse_schedule_xml(data, source="xcron.xml", default_zone=default_zone)


def one_job(adds: str, job_attributes: str = "") -> str:
    """A document with one job whose <schedule> holds `adds`."""
    return (
        f'{HEAD}  <JobItemConfiguration type="A.Job, A" startType="schedule"{job_attributes}>\n'
        f"    <schedule {SCHEDULE_NS}>\n      {adds}\n    </schedule>\n"
        "  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n"
    )


def only_schedule(text: str, default_zone: str = "UTC") -> Schedule:
    (entry,) = parse(text, default_zone).entries
    (schedule,) = entry.schedules
    return schedule


def round_trip(doc: ScheduleDocument, default_zone: str = "UTC") -> ScheduleDocument:
    return parse(render_schedule_xml(doc, default_zone=default_zone), default_zone)


def fresh(doc: ScheduleDocument) -> ScheduleDocument:
    """The same entries as if built by the service (no original element to fall back on)."""
    return ScheduleDocument(tuple(dataclasses.replace(e, element=None) for e in doc.entries))


# -- SanteDB's own file ---------------------------------------------------------------------------


def test_sample_parses_field_by_field() -> None:
    doc = load_schedule_file(SAMPLE, default_zone="UTC")
    retention, trim, matcher = doc.entries

    assert retention.type_name == "SanteDB.Core.Jobs.DataRetentionJob, SanteDB.Core.Api"
    assert retention.start_type == "immediate"
    assert not retention.paused
    assert retention.positional_parameters == ()
    assert retention.schedules == (
        Schedule(
            spec=IntervalSpec(every=timedelta(seconds=86400)),
            start=datetime(2024, 6, 14, 14, 15, 30, 123456, tzinfo=UTC),
        ),
    )

    assert trim.type_name == "SanteDB.Persistence.Data.Jobs.TrimDatabaseJob, SanteDB.Persistence.Data"
    assert trim.start_type == "immediate"
    (calendar,) = trim.schedules
    assert calendar.spec == CalendarSpec(days=frozenset({1, 3, 5}), time_of_day=time(23, 0))
    # SanteDB never fires a calendar with days on the date written in start (refDate.Date > StartTime).
    assert calendar.start == datetime(2022, 1, 27, 0, 0, tzinfo=UTC)
    assert calendar.end == datetime(2030, 1, 1, tzinfo=UTC)
    assert calendar.time_zone == ""

    assert matcher.start_type == "schedule"
    (one_shot,) = matcher.schedules
    assert one_shot.spec == CalendarSpec(days=frozenset(), time_of_day=time(2, 0))
    assert one_shot.start == datetime(2026, 12, 24, 2, 0, tzinfo=UTC)
    assert one_shot.end is None
    assert matcher.positional_parameters == ("Patient", True)
    for entry in doc.entries:
        for schedule in entry.schedules:
            assert schedule.start.utcoffset() == timedelta(0)
            assert schedule.misfire_policy is MisfirePolicy.RUN_ONCE
            assert schedule.overlap_policy is OverlapPolicy.SKIP
            assert schedule.parameters == {}


def test_missing_file_is_an_empty_document(tmp_path: Path) -> None:
    assert load_schedule_file(tmp_path / "xcron.xml", default_zone="UTC") == ScheduleDocument(())


def test_wall_times_without_offset_use_the_default_zone() -> None:
    doc = load_schedule_file(SAMPLE, default_zone="America/New_York")
    trim, matcher = doc.entries[1:]
    # SanteDB compares a "Z" value's digits with local times: on a New York host 23:00Z means 23:00 there.
    assert trim.schedules[0].start == datetime(2022, 1, 27, 5, 0, tzinfo=UTC)
    assert trim.schedules[0].spec == CalendarSpec(days=frozenset({1, 3, 5}), time_of_day=time(23, 0))
    assert trim.schedules[0].end == datetime(2030, 1, 1, 5, 0, tzinfo=UTC)
    assert matcher.schedules[0].start == datetime(2026, 12, 24, 7, 0, tzinfo=UTC)
    assert matcher.schedules[0].spec == CalendarSpec(days=frozenset(), time_of_day=time(2, 0))


@pytest.mark.parametrize(
    "transform",
    [
        pytest.param(lambda b: b"\xef\xbb\xbf" + b, id="bom"),
        pytest.param(lambda b: b.split(b"\n", 1)[1], id="no-declaration"),
        pytest.param(lambda b: b.replace(b"utf-8", b"UTF-8"), id="declaration-case"),
        pytest.param(lambda b: b.replace(b"\n", b"\r\n"), id="crlf"),
        pytest.param(
            lambda b: b.replace(
                b'type="interval" start="2024-06-14T10:15:30.1234567-04:00" interval="86400"',
                b'interval=" 86400 "  start="2024-06-14T10:15:30.1234567-04:00"\n type="interval"',
            ),
            id="attributes-shuffled",
        ),
        pytest.param(
            lambda b: b.replace(
                b"<ArrayOfJobItemConfiguration ",
                b'<ArrayOfJobItemConfiguration xmlns:foo="urn:foo" xmlns:c="http://santedb.org/configuration" ',
            ),
            id="extra-xmlns",
        ),
        pytest.param(
            lambda b: (
                b.replace(b'<schedule xmlns="http://santedb.org/configuration">', b"<c:schedule>")
                .replace(b"</schedule>", b"</c:schedule>")
                .replace(b"<add ", b"<c:add ")
                .replace(
                    b"<ArrayOfJobItemConfiguration ",
                    b'<ArrayOfJobItemConfiguration xmlns:c="http://santedb.org/configuration" ',
                )
            ),
            id="prefixed-santedb-namespace",
        ),
        pytest.param(lambda b: b.replace(b"<JobItem", b"<!-- note -->\n  <JobItem"), id="comments"),
    ],
)
def test_tolerated_variants_read_the_same(transform: object) -> None:
    assert callable(transform)
    expected = load_schedule_file(SAMPLE, default_zone="UTC")
    assert parse(transform(SAMPLE.read_bytes())) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # SanteDB compares a UTC DateTime's digits with local times: "Z" is a wall time, as without offset.
        ("2026-03-01T09:00:00.1234567Z", datetime(2026, 3, 1, 14, 0, 0, 123456, tzinfo=UTC)),
        ("2026-03-01T09:00:00.9999999+01:00", datetime(2026, 3, 1, 8, 0, 0, 999999, tzinfo=UTC)),
        ("2026-03-01T09:00:00.5", datetime(2026, 3, 1, 14, 0, 0, 500000, tzinfo=UTC)),
        ("2026-07-01T09:00:00", datetime(2026, 7, 1, 13, 0, tzinfo=UTC)),  # EDT
        ("2026-03-08T02:30:00", datetime(2026, 3, 8, 7, 30, tzinfo=UTC)),  # gap: fold=0, EST offset
        ("2026-11-01T01:30:00", datetime(2026, 11, 1, 5, 30, tzinfo=UTC)),  # fold: first (EDT)
        ("  2026-03-01T09:00:00-05:00 ", datetime(2026, 3, 1, 14, 0, tzinfo=UTC)),
    ],
)
def test_start_formats(text: str, expected: datetime) -> None:
    schedule = only_schedule(one_job(f'<add type="interval" start="{text}" interval="60"/>'), "America/New_York")
    assert schedule.start == expected
    assert schedule.start.tzinfo is UTC


def test_cron_aliases_are_accepted_as_written() -> None:
    schedule = only_schedule(one_job('<xc:cron expression=" @Daily " start="2026-03-01T00:00:00Z"/>'))
    assert schedule.spec == CronSpec(expression="@Daily")


def test_add_without_type_is_a_calendar_schedule() -> None:
    schedule = only_schedule(one_job('<add days="sunday SATURDAY" start="2026-03-01T07:45:00"/>'))
    assert schedule.spec == CalendarSpec(days=frozenset({6, 7}), time_of_day=time(7, 45))


def test_schedule_in_no_namespace_is_ignored_but_kept() -> None:
    text = (
        f'{HEAD}  <JobItemConfiguration type="A.Job, A" startType="schedule">\n'
        '    <schedule><add type="interval" start="2026-01-01T00:00:00Z" interval="60"/></schedule>\n'
        f"    <schedule {SCHEDULE_NS}>\n"
        '      <add type="interval" start="2026-01-01T00:00:00Z" interval="3600"/>\n'
        "    </schedule>\n  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n"
    )
    doc = parse(text)
    (entry,) = doc.entries
    assert [s.spec for s in entry.schedules] == [IntervalSpec(every=timedelta(hours=1))]
    # Unchanged, the entry goes back as it was, foreign <schedule> included.
    assert b"<schedule><add" in render_schedule_xml(doc, default_zone="UTC", known=lambda _: True)
    # Changed, it is rebuilt from its fields.
    changed = doc.replace(dataclasses.replace(entry, paused=True))
    assert b"<schedule><add" not in render_schedule_xml(changed, default_zone="UTC")


# -- xcron's extensions -----------------------------------------------------------------------------


def test_extended_fixture_reads_every_extension() -> None:
    (entry,) = load_schedule_file(EXTENDED, default_zone="UTC").entries
    assert entry.paused
    assert entry.positional_parameters == ("pdf", 2)
    calendar, interval, cron = entry.schedules
    assert calendar == Schedule(
        spec=CalendarSpec(days=frozenset({1, 5}), time_of_day=time(9, 30)),
        start=datetime(2026, 3, 2, 8, 30, tzinfo=UTC),
        end=datetime(2026, 12, 31, 23, 0, tzinfo=UTC),
        time_zone="Europe/Paris",
        parameters={
            "format": "pdf",
            "copies": 2,
            "draft": False,
            "ratio": 0.75,
            "since": datetime(2026, 1, 1, tzinfo=UTC),
            "timeout": timedelta(seconds=90, microseconds=500000),
        },
        misfire_policy=MisfirePolicy.RUN_ALL,
        misfire_grace=timedelta(minutes=10),
        max_catchup_runs=3,
        overlap_policy=OverlapPolicy.BUFFER_ONE,
    )
    assert interval.spec == IntervalSpec(every=timedelta(minutes=15))
    assert (interval.misfire_policy, interval.overlap_policy) == (
        MisfirePolicy.SKIP,
        OverlapPolicy.CANCEL_OTHER,
    )
    assert cron == Schedule(
        spec=CronSpec(expression="0 3 * * 1-5"),
        start=datetime(2026, 3, 1, 5, 0, tzinfo=UTC),
        time_zone="America/New_York",
        parameters={"format": "csv"},
    )


def test_every_extension_round_trips() -> None:
    doc = fresh(load_schedule_file(EXTENDED, default_zone="UTC"))
    rendered = render_schedule_xml(doc, default_zone="UTC")
    assert parse(rendered) == doc
    text = rendered.decode()
    assert 'xc:paused="true"' in text
    assert (
        '<add type="scheduled" days="Monday Friday" start="2026-03-01T09:30:00" '
        'stop="2027-01-01T00:00:00+01:00" xc:start="2026-03-02T09:30:00+01:00" xc:timeZone="Europe/Paris" '
        'xc:misfire="run_all" '
        'xc:misfireGrace="600" xc:maxCatchup="3" xc:overlap="buffer_one">'
    ) in text
    assert '<xc:param name="timeout" type="duration">90.5</xc:param>' in text
    assert '<xc:param name="since" type="timestamp">2026-01-01T00:00:00Z</xc:param>' in text
    assert '<add type="interval" start="2026-03-01T00:00:00Z" interval="900" xc:misfire="skip"' in text
    assert '<xc:cron expression="0 3 * * 1-5" start="2026-03-01T00:00:00-05:00" xc:timeZone="America/New_York">' in text
    assert "<int>2</int>" in text


def test_render_matches_santedb_layout() -> None:
    doc = ScheduleDocument(
        (
            ScheduleEntry(
                type_name="A.Job, A",
                start_type="schedule",
                schedules=(
                    Schedule(spec=IntervalSpec(every=timedelta(hours=1)), start=datetime(2026, 3, 1, 8, tzinfo=UTC)),
                ),
                positional_parameters=("x", 3, True, 1.5),
            ),
        )
    )
    assert render_schedule_xml(doc, default_zone="Europe/Paris").decode() == (
        HEAD + '  <JobItemConfiguration type="A.Job, A" startType="schedule">\n'
        f"    <schedule {SCHEDULE_NS}>\n"
        '      <add type="interval" start="2026-03-01T09:00:00+01:00" interval="3600"/>\n'
        "    </schedule>\n"
        f"    <parameters {SCHEDULE_NS}>\n"
        "      <string>x</string>\n      <int>3</int>\n      <bool>true</bool>\n      <string>1.5</string>\n"
        "    </parameters>\n  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n"
    )


def test_empty_document_renders_and_reads_back() -> None:
    assert round_trip(ScheduleDocument(())) == ScheduleDocument(())


def calendar_entry(
    start: datetime, time_of_day: time, zone: str, end: datetime | None = None, days: frozenset[int] = frozenset({2})
) -> ScheduleDocument:
    schedule = Schedule(spec=CalendarSpec(days=days, time_of_day=time_of_day), start=start, end=end, time_zone=zone)
    return ScheduleDocument((ScheduleEntry(type_name="A", start_type="schedule", schedules=(schedule,)),))


SUNDAY = frozenset({7})


@pytest.mark.parametrize(
    ("start", "time_of_day", "zone", "days", "written"),
    [
        # 2026-03-01 is a Sunday; the first Tuesday 09:00 is 03-03, so SanteDB's start is the day before.
        (datetime(2026, 3, 1, 8, tzinfo=UTC), time(9, 0), "Europe/Paris", frozenset({2}), "2026-03-02T09:00:00"),
        # The first firing is the start itself: SanteDB must fire it too, so start is on the day before.
        (datetime(2026, 3, 1, 8, tzinfo=UTC), time(9, 0), "Europe/Paris", SUNDAY, "2026-02-28T09:00:00"),
        (datetime(2026, 3, 1, 9, tzinfo=UTC), time(9, 0), "Europe/Paris", SUNDAY, "2026-03-07T09:00:00"),
        # 02:30 does not exist on Sunday 2026-03-29 in Paris: xcron fires at 03:00 that day.
        (datetime(2026, 3, 28, 23, tzinfo=UTC), time(2, 30), "Europe/Paris", SUNDAY, "2026-03-28T02:30:00"),
        # 02:30 comes twice on 2026-10-25: a fixed time runs on the first pass only, already past here.
        (datetime(2026, 10, 25, 0, 45, tzinfo=UTC), time(2, 30), "Europe/Paris", SUNDAY, "2026-10-31T02:30:00"),
        # Without days, one firing: SanteDB fires on the date written in start.
        (datetime(2026, 3, 1, 8, tzinfo=UTC), time(9, 0, 0, 250), "", frozenset(), "2026-03-01T09:00:00.000250"),
        # No lower bound (.NET's MinValue): SanteDB fires from the very first day.
        (datetime.min.replace(tzinfo=UTC), time(9, 0), "America/New_York", SUNDAY, "0001-01-01T09:00:00"),
    ],
)
def test_calendar_start_is_the_wall_time_santedb_needs(
    start: datetime, time_of_day: time, zone: str, days: frozenset[int], written: str
) -> None:
    doc = calendar_entry(start, time_of_day, zone, days=days)
    rendered = render_schedule_xml(doc, default_zone="Europe/Paris").decode()
    # No offset: SanteDB takes the digits as written on any host, where "Z" and offsets would move them.
    assert f'start="{written}"' in rendered
    assert 'xc:start="' in rendered  # xcron's own start, exact
    assert parse(rendered, "Europe/Paris") == doc
    (schedule,) = doc.entries[0].schedules
    if start.year == 1:
        return
    first = next_fire_time(schedule, start - timedelta(microseconds=1), default_zone="Europe/Paris")
    if first is not None:
        wall = datetime.fromisoformat(written)
        local = first.astimezone(ZoneInfo(zone or "Europe/Paris"))
        assert local.date() == wall.date() + (timedelta(days=1) if days else timedelta())


def test_stale_xc_start_yields_to_a_hand_edited_start() -> None:
    zone = 'xc:timeZone="Europe/Paris"'
    consistent = one_job(f'<add start="2026-03-01T09:00:00" xc:start="2026-03-01T08:00:00" {zone}/>')
    assert only_schedule(consistent).start == datetime(2026, 3, 1, 7, 0, tzinfo=UTC)
    edited = one_job(f'<add start="2026-03-10T09:00:00" xc:start="2026-03-01T08:00:00" {zone}/>')
    assert only_schedule(edited).start == datetime(2026, 3, 10, 8, 0, tzinfo=UTC)


def test_render_refuses_what_would_not_read_back() -> None:
    ends_first = calendar_entry(
        datetime(2026, 3, 1, 10, tzinfo=UTC), time(9, 0), "UTC", datetime(2026, 3, 1, 11, tzinfo=UTC)
    )
    with pytest.raises(ValueError, match="before it first fires"):
        render_schedule_xml(ends_first, default_zone="UTC")
    fractional = ScheduleDocument(
        (
            ScheduleEntry(
                type_name="A",
                start_type="schedule",
                schedules=(
                    Schedule(
                        spec=IntervalSpec(every=timedelta(seconds=1.5)),
                        start=datetime(2026, 1, 1, tzinfo=UTC),
                    ),
                ),
            ),
        )
    )
    with pytest.raises(ValueError, match="whole number of seconds"):
        render_schedule_xml(fractional, default_zone="UTC")
    with pytest.raises(ValueError, match="startType"):
        render_schedule_xml(
            ScheduleDocument((ScheduleEntry(type_name="A", start_type="soon", schedules=()),)),
            default_zone="UTC",
        )
    too_big = ScheduleEntry(type_name="A", start_type="never", schedules=(), positional_parameters=(2**31,))
    with pytest.raises(ValueError, match="32-bit"):
        render_schedule_xml(ScheduleDocument((too_big,)), default_zone="UTC")


# -- unknown entries and round trips ------------------------------------------------------------------


def test_sample_round_trip_keeps_unknown_entries_byte_for_byte(tmp_path: Path) -> None:
    original = load_schedule_file(SAMPLE, default_zone="UTC")
    target = tmp_path / "xcron.xml"
    save_schedule_file(target, original, default_zone="UTC", known=lambda _: False)
    written = target.read_bytes()
    reread = load_schedule_file(target, default_zone="UTC")
    assert reread == original
    assert written == SAMPLE.read_bytes()  # byte for byte: SanteDB's " />", declaration, everything
    # Saving again changes nothing.
    save_schedule_file(target, reread, default_zone="UTC", known=lambda _: False)
    assert target.read_bytes() == written


def test_sample_rebuilt_from_fields_reads_back_equal() -> None:
    original = load_schedule_file(SAMPLE, default_zone="UTC")
    rebuilt = render_schedule_xml(fresh(original), default_zone="UTC", known=lambda _: True)
    assert b"1234567" not in rebuilt  # really rebuilt, not copied
    assert parse(rebuilt) == original


def test_unknown_entry_with_other_prefix_is_kept() -> None:
    text = (
        '<ArrayOfJobItemConfiguration xmlns:x="urn:xcron:schedule:v1" xmlns:o="urn:other">'
        '<JobItemConfiguration type="Other.Job" startType="never" x:paused="1" o:note="kept">'
        f'<schedule {SCHEDULE_NS}><add type="interval" start="2026-01-01T00:00:00" interval="60"/></schedule>'
        "</JobItemConfiguration></ArrayOfJobItemConfiguration>"
    )
    doc = parse(text)
    assert doc.entries[0].paused
    rendered = render_schedule_xml(doc, default_zone="UTC", known=lambda _: False)
    assert rendered == text.encode()
    assert b'o:note="kept"' in rendered
    assert parse(rendered) == doc
    assert parse(rendered).entries[0].element == doc.entries[0].element


_JOB_TAG = "JobItemConfiguration"


@pytest.mark.parametrize(
    "body",
    [
        f'<{_JOB_TAG} type="A"/>\n  <{_JOB_TAG} type="B" startType="never" />',
        f'<{_JOB_TAG} type="A" note="&gt; /&gt;" other=\'"\'></{_JOB_TAG} >\r\n\t<{_JOB_TAG}\n type="B"></{_JOB_TAG}>',
        f'<{_JOB_TAG} type="A"><x:{_JOB_TAG} xmlns:x="urn:other"/><p>{_JOB_TAG}</p></{_JOB_TAG}>',
        f'<{_JOB_TAG} type="A"><s xmlns="urn:other"><{_JOB_TAG}/></s></{_JOB_TAG}>',  # nested: expat decides
        f'<!-- <{_JOB_TAG}> --><{_JOB_TAG} type="A"/>',  # a comment: expat decides
        f'<?pi <{_JOB_TAG}/>?><{_JOB_TAG} type="A"/>',
        "",
    ],
)
def test_entry_offsets_found_in_the_text_match_expat(body: str) -> None:
    """The reader finds entries by searching the bytes when that is unambiguous; expat walks the rest."""
    for declaration in ("", '\ufeff<?xml version="1.0" encoding="utf-8"?>\r\n'):
        data = f"{declaration}<ArrayOfJobItemConfiguration>\n  {body}\n</ArrayOfJobItemConfiguration>\n".encode()
        entries = len(etree.fromstring(data.removeprefix(b"\xef\xbb\xbf")).findall(_JOB_TAG))
        searched = _scan_layout(data, entries)
        walked = _scan_layout(data)
        assert searched == walked
        assert (list(walked.spans), walked.close_at, walked.self_closing) == _walk_layout(data)
        assert [data[a:b].split(b'type="')[1][:1] for a, b in searched.spans] == [b"A", b"B"][:entries]


_ADD = '<add type="interval" interval="60" start="2026-01-05T03:00:00Z"'


@pytest.mark.parametrize(
    ("job_attributes", "schedule", "expected"),
    [
        pytest.param("", f"{_ADD}/>", False, id="none"),
        pytest.param(' xc:paused="true"', f"{_ADD}/>", True, id="entry-attribute"),
        pytest.param("", f'{_ADD} xc:misfire="skip"/>', True, id="schedule-attribute"),
        pytest.param("", '<xc:cron expression="0 3 * * *" start="2026-01-05T03:00:00Z"/>', True, id="cron"),
        pytest.param("", f'{_ADD}><xc:param name="a">1</xc:param></add>', True, id="param"),
        pytest.param("", f'{_ADD}><xc:param name="a" xc:note="x">1</xc:param></add>', True, id="param-attribute"),
        pytest.param("", f"{_ADD}/></schedule><schedule {SCHEDULE_NS} xc:note='x'>", True, id="on-schedule"),
        pytest.param(
            "",
            f"{_ADD}/></schedule><parameters {SCHEDULE_NS}><xc:extra/><int>1</int></parameters><schedule>",
            True,
            id="skipped-element",
        ),
        pytest.param(
            "",
            f"{_ADD}/></schedule><parameters {SCHEDULE_NS}><int xc:note='x'>1</int></parameters><schedule>",
            True,
            id="on-parameter",
        ),
        pytest.param(
            "",
            f"{_ADD}/></schedule><parameters {SCHEDULE_NS}>"
            '<other xmlns="urn:xcron:schedule:v1"/></parameters><schedule>',
            True,
            id="default-namespace",
        ),
    ],
)
def test_the_reader_finds_xcron_parts_wherever_they_are(job_attributes: str, schedule: str, expected: bool) -> None:
    """What a SanteDB re-save drops: the reader notes the parts it reads and looks through the rest."""
    data = one_job(schedule, job_attributes)
    (entry,) = parse(data).entries
    (element,) = etree.fromstring(data.encode()).findall("JobItemConfiguration")
    assert entry.xcron_parts is expected
    assert _has_xcron_parts(element) is expected  # the reference: every node of the element


def test_xcron_parts_seen_in_one_entry_are_not_carried_to_the_next() -> None:
    plain = f'<JobItemConfiguration type="B.Job, B"><schedule {SCHEDULE_NS}>{_ADD}/></schedule></JobItemConfiguration>'
    data = one_job(f'{_ADD} xc:misfire="skip"/>', ' xc:paused="true"').replace(
        "</ArrayOfJobItemConfiguration>", f"{plain}\n</ArrayOfJobItemConfiguration>"
    )
    assert [entry.xcron_parts for entry in parse(data).entries] == [True, False]


@pytest.mark.parametrize(("needle", "rare"), [(b"<!", b"!"), (b"<?", b"?"), (b"\r\n", b"\r"), (b"<!DOCTYPE", b"!")])
@pytest.mark.parametrize(
    "hay", [b"", b"<", b"!", b"!<", b"a<!b<?c\r\nd />", b"?\n\r> /<", b"<<!!??\r\r\n\n", b"<!x<!DOCTYPE a>"]
)
def test_the_layout_search_finds_what_bytes_find_finds(needle: bytes, rare: bytes, hay: bytes) -> None:
    for start in range(len(hay) + 1):
        assert _find(hay, needle, rare, start) == hay.find(needle, start)


def _everything(doc: ScheduleDocument) -> list[tuple[object, ...]]:
    """What a reader puts in each entry, equality or not."""
    return [
        (e, e.element, e.span, e.line, e.santedb_view, e.xcron_parts, e.unreadable, e.element_trusted, e.element_zone)
        for e in doc.entries
    ]


@pytest.mark.parametrize("save_zone", ["UTC", "Europe/Paris"])
@pytest.mark.parametrize("source", [SAMPLE, EXTENDED])
def test_a_save_reads_back_what_a_fresh_read_of_the_file_gives(tmp_path: Path, source: Path, save_zone: str) -> None:
    """A save takes the entries it kept unchanged as read before (in the zone they were read with):
    the document it returns is exactly what reading the saved file gives."""
    doc = load_schedule_file(source, default_zone="UTC")
    first = doc.entries[0]
    changed = doc.replace(dataclasses.replace(first, paused=not first.paused))  # the first entry, longer or shorter
    target = tmp_path / "xcron.xml"
    for document in (doc, changed, changed.remove(first.type_name), fresh(doc)):
        written = save_schedule_file(target, document, default_zone=save_zone, known=lambda _: True)
        reread = load_schedule_file(target, default_zone=save_zone, known=lambda _: True)
        assert _everything(written) == _everything(reread)
        assert written.original == target.read_bytes()
        assert written.layout == reread.layout


def test_a_save_reads_again_only_what_it_cannot_know(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not the entries it rewrote (the writer knows what they hold; check_writable vouched for their
    schedules), nor those kept as read: only entries with disabled schedules, and text read in another zone."""
    doc = load_schedule_file(SAMPLE, default_zone="UTC")
    assert len(doc.entries) > 2
    first = doc.entries[0]
    read: list[str] = []
    original_entry = _Reader.entry

    def counting(self: _Reader, element: etree._Element) -> ScheduleEntry:
        read.append(str(element.get("type")))
        return original_entry(self, element)

    monkeypatch.setattr(_Reader, "entry", counting)
    target = tmp_path / "xcron.xml"
    save_schedule_file(target, doc.replace(dataclasses.replace(first, paused=not first.paused)), default_zone="UTC")
    with_disabled = [e.type_name for e in doc.entries if e.disabled]  # their lines are their own: read again
    assert sorted(read) == sorted(with_disabled)
    read.clear()
    save_schedule_file(target, doc, default_zone="Europe/Paris")  # read in another zone: all read again
    assert len(read) == len(doc.entries)


def test_known_changed_entry_is_rebuilt_and_others_stay_in_place() -> None:
    doc = load_schedule_file(SAMPLE, default_zone="UTC")
    new = ScheduleEntry(
        type_name="SanteDB.Persistence.Data.Jobs.TrimDatabaseJob",
        start_type="schedule",
        schedules=(Schedule(spec=CronSpec(expression="0 3 * * *"), start=datetime(2026, 1, 1, tzinfo=UTC)),),
    )
    assert doc.find(" SanteDB.Persistence.Data.Jobs.TrimDatabaseJob , Other") is doc.entries[1]
    assert doc.find("SanteDB.Persistence.Data.Jobs") is None
    updated = doc.replace(new)
    assert [e.type_name for e in updated.entries] == [
        doc.entries[0].type_name,
        new.type_name,
        doc.entries[2].type_name,
    ]
    assert doc.replace(dataclasses.replace(new, type_name="Brand.New")).entries[-1].type_name == "Brand.New"
    reread = round_trip(updated)
    assert reread == updated
    assert reread.entries[0].element == doc.entries[0].element


# -- hostile and invalid files ------------------------------------------------------------------------

BILLION_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<ArrayOfJobItemConfiguration><JobItemConfiguration type="&lol9;"/></ArrayOfJobItemConfiguration>
"""


@pytest.mark.parametrize(
    ("data", "line", "reason"),
    [
        pytest.param(
            '<?xml version="1.0"?>\n<!DOCTYPE a [<!ENTITY e "x">]>\n<ArrayOfJobItemConfiguration>&e;'
            "</ArrayOfJobItemConfiguration>",
            2,
            "DOCTYPE",
            id="entity",
        ),
        pytest.param(BILLION_LAUGHS, 2, "DOCTYPE", id="billion-laughs"),
        pytest.param(
            '<?xml version="1.0"?>\n\n<!DOCTYPE ArrayOfJobItemConfiguration SYSTEM "file:///etc/passwd">\n'
            "<ArrayOfJobItemConfiguration/>",
            3,
            "DOCTYPE",
            id="external-dtd",
        ),
        pytest.param(
            b"<ArrayOfJobItemConfiguration>\n<!-- \xff -->\n</ArrayOfJobItemConfiguration>",
            2,
            "UTF-8",
            id="utf8",
        ),
        pytest.param(
            "<ArrayOfJobItemConfiguration>\n<JobItemConfiguration type='A'>"
            + "<x>" * 40
            + "</x>" * 40
            + "</JobItemConfiguration></ArrayOfJobItemConfiguration>",
            2,
            "nested deeper than 32",
            id="deep-nesting",
        ),
        pytest.param("<a>" * 300 + "</a>" * 300, 1, "not well-formed XML", id="very-deep-nesting"),
        pytest.param("<ArrayOfJobItemConfiguration>\n<JobItemConfiguration>", 2, "not well-formed", id="truncated"),
        pytest.param("\n<jobs/>", 2, "root element must be <ArrayOfJobItemConfiguration>", id="wrong-root"),
        pytest.param(
            '<ArrayOfJobItemConfiguration xmlns="http://santedb.org/configuration"/>',
            1,
            "root element must be",
            id="namespaced-root",
        ),
        pytest.param(
            one_job('<add days="Mon" start="2026-01-01T00:00:00"/>'),
            5,
            "days='Mon': unknown day 'Mon'",
            id="day",
        ),
        pytest.param(
            one_job('<add type="interval" start="2026-01-01T00:00:00" interval="2147483648"/>'),
            5,
            "interval='2147483648': must be between",
            id="interval-beyond-int32",
        ),
        pytest.param(
            one_job('<add type="interval" start="2026-01-01T00:00:00" interval="PT1H"/>'),
            5,
            "interval='PT1H': expected a whole number",
            id="interval-text",
        ),
        pytest.param(
            one_job('<add type="interval" start="2026-01-01T00:00:00"/>'),
            5,
            "needs an interval attribute",
            id="no-interval",
        ),
        pytest.param(
            one_job('<add start="2026-01-02T00:00:00Z" stop="tomorrow"/>'),
            5,
            "stop='tomorrow': expected an xs:dateTime",
            id="stop-text",
        ),
        pytest.param(
            one_job('<add start="2026-02-30T00:00:00"/>'),
            5,
            "start='2026-02-30T00:00:00': not a valid date",
            id="date",
        ),
        pytest.param(
            one_job('<add start="yesterday"/>'),
            5,
            "start='yesterday': expected an xs:dateTime",
            id="datetime",
        ),
        pytest.param(one_job('<add days="Monday"/>'), 5, "needs a start attribute", id="no-start"),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:timeZone="Mars/Olympus"/>'),
            5,
            "xc:timeZone='Mars/Olympus': unknown IANA time zone",
            id="zone",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:timeZone="../../etc/passwd"/>'),
            5,
            "unknown IANA",
            id="zone-path",
        ),
        pytest.param(
            one_job('<xc:cron expression="0 25 * * *" start="2026-01-01T00:00:00"/>'),
            5,
            "expression='0 25 * * *': not a valid cron expression",
            id="cron",
        ),
        pytest.param(
            one_job('<xc:cron expression="0 3 * *" start="2026-01-01T00:00:00"/>'),
            5,
            "5 fields",
            id="cron-fields",
        ),
        pytest.param(
            one_job('<xc:cron expression="H 3 * * *" start="2026-01-01T00:00:00"/>'),
            5,
            "hashed (H) cron values are not supported",
            id="cron-hashed",
        ),
        pytest.param(
            one_job('<add type="interval" start="2026-01-01T00:00:00" interval="60" xc:start="2026-01-01T00:00:00"/>'),
            5,
            "xc:start is only used on calendar schedules",
            id="xc-start-on-interval",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:start="soon"/>'), 5, "xc:start='soon'", id="xc-start"
        ),
        pytest.param(
            one_job('<add type="weekly" start="2026-01-01T00:00:00"/>'), 5, "unknown schedule type", id="type"
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:misfire="later"/>'),
            5,
            "xc:misfire='later': expected one of run_once, skip, run_all",
            id="misfire",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:overlap="queue"/>'),
            5,
            "skip, buffer_one, cancel_other",
            id="overlap",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:misfireGrace="-1"/>'),
            5,
            "xc:misfireGrace='-1'",
            id="grace",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00" xc:timezone="UTC"/>'),
            5,
            "unknown attribute xc:timezone",
            id="typo",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00">\n<xc:param name="n" type="int">1.5</xc:param></add>'),
            6,
            "<xc:param name='n' type='int'>: expected a whole number",
            id="param-int",
        ),
        pytest.param(
            one_job('<add start="2026-01-01T00:00:00"><xc:param name="n" type="blob">1</xc:param></add>'),
            5,
            "unknown parameter type 'blob'",
            id="param-type",
        ),
        pytest.param(
            one_job(
                '<add start="2026-01-01T00:00:00">'
                '<xc:param name="t" type="timestamp">2026-01-01T00:00:00</xc:param></add>'
            ),
            5,
            "needs an offset",
            id="param-naive-timestamp",
        ),
        pytest.param(one_job("", ' xc:paused="maybe"'), 3, "xc:paused='maybe': expected true or false", id="paused"),
        pytest.param(
            f'{HEAD}<JobItemConfiguration startType="never"/></ArrayOfJobItemConfiguration>',
            3,
            "needs a type",
            id="no-type",
        ),
        pytest.param(
            f'{HEAD}<JobItemConfiguration type="A" startType="later"/></ArrayOfJobItemConfiguration>',
            3,
            "startType='later'",
            id="start-type",
        ),
        pytest.param(
            f"{HEAD}<JobItemConfiguration type='A'><parameters {SCHEDULE_NS}>\n<bool>yes</bool>"
            "</parameters></JobItemConfiguration></ArrayOfJobItemConfiguration>",
            4,
            "<bool>yes</bool>: expected true or false",
            id="positional-bool",
        ),
        pytest.param(
            f"{HEAD}<JobItemConfiguration type='A'><parameters {SCHEDULE_NS}><int>3000000000</int>"
            "</parameters></JobItemConfiguration></ArrayOfJobItemConfiguration>",
            3,
            "must be between -2147483648 and 2147483647",
            id="positional-int32",
        ),
        pytest.param(f"{HEAD}<Job/></ArrayOfJobItemConfiguration>", 3, "unexpected element 'Job'", id="stray-element"),
        pytest.param("  \n", None, "file is empty", id="empty"),
        # Blank as str.strip() sees it: Unicode's white space (the check reads the bytes).
        pytest.param("\ufeff\u3000\u00a0\x1c\r\n\u2029", None, "file is empty", id="empty-unicode-space"),
        pytest.param("\u3000<ArrayOfJobItemConfiguration/>", 1, "not well-formed", id="unicode-space-then-xml"),
        pytest.param(b"\xe2\x80<ArrayOfJobItemConfiguration/>", 1, "not valid UTF-8 (byte 0)", id="utf8-cut-space"),
    ],
)
def test_invalid_files_are_refused_with_line_and_reason(data: str | bytes, line: int | None, reason: str) -> None:
    with pytest.raises(ScheduleFileError) as caught:
        parse(data)
    error = caught.value
    assert error.line == line
    assert error.path == "xcron.xml"
    assert reason in error.reason
    assert str(error) == (f"xcron.xml:{line}: {error.reason}" if line is not None else f"xcron.xml: {error.reason}")


def test_a_file_is_blank_exactly_when_its_text_strips_to_nothing() -> None:
    """The check reads the bytes; it must agree with str.strip() on every white-space code point and
    its neighbours, alone, repeated, mixed with others, and next to something that is not blank."""
    spaces = [chr(c) for c in range(0x110000) if not 0xD800 <= c < 0xE000 and not chr(c).strip()]
    assert len(spaces) >= 29
    near = {chr(o + d) for o in map(ord, spaces) for d in (-1, 1) if not 0xD800 <= o + d < 0xE000}
    for char in sorted(set(spaces) | near | {"a", "\ufeff", "\u200b", "\u3001"}):
        for text in (char, char * 3, f" {char}\t", "".join(spaces) + char):
            assert (_BLANK.fullmatch(text.encode()) is not None) is (not text.strip()), repr(text)


def test_a_large_blank_file_is_refused_without_a_large_memory_cost() -> None:
    """A blank file as large as may be read costs about its own size to check (a regex that kept a
    backtracking point per byte took ~120 bytes of memory for each)."""
    import tracemalloc

    data = b" \t\r\n" * ((MAX_FILE_BYTES - 1024) // 4)  # ASCII: no decoded copy is made to check it
    tracemalloc.start()
    try:
        with pytest.raises(ScheduleFileError, match="file is empty"):
            parse(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < len(data) // 4


def test_oversized_files_are_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "xcron.xml"
    with big.open("wb") as file:
        file.truncate(MAX_FILE_BYTES + 1)  # sparse: no 16 MiB written
    with pytest.raises(ScheduleFileError, match=r"xcron.xml: file is 16777217 bytes, over the 16777216 byte limit"):
        load_schedule_file(big, default_zone="UTC")
    with pytest.raises(ScheduleFileError, match="byte limit"):
        parse(b" " * (MAX_FILE_BYTES + 1))


def test_an_error_anywhere_refuses_the_whole_file() -> None:
    text = SAMPLE.read_text().replace("<bool>true</bool>", "<bool>si</bool>")
    with pytest.raises(ScheduleFileError, match=r"^xcron.xml:19: <parameters> item <bool>si</bool>"):
        parse(text)


# -- atomic save --------------------------------------------------------------------------------------


def sample_doc() -> ScheduleDocument:
    return fresh(load_schedule_file(SAMPLE, default_zone="UTC"))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".xcron.xml."))


@pytest.mark.parametrize("failing", ["replace", "fsync", "write"])
def test_failed_save_leaves_the_original_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())
    error = OSError(errno.ENOSPC, "No space left on device")

    def boom(*args: object, **kwargs: object) -> None:
        raise error

    if failing == "write":
        monkeypatch.setattr(tempfile, "NamedTemporaryFile", _failing_temp_file(boom))
    else:
        monkeypatch.setattr(os, failing, boom)
    with pytest.raises(OSError) as caught:
        save_schedule_file(target, ScheduleDocument(()), default_zone="UTC")
    assert caught.value is error
    monkeypatch.undo()
    assert target.read_bytes() == SAMPLE.read_bytes()
    assert leftovers(tmp_path) == []


def _failing_temp_file(boom: object) -> object:
    """A NamedTemporaryFile whose write fails, as on a full disk."""
    real = tempfile.NamedTemporaryFile

    def factory(**kwargs: object) -> object:
        temp = real(**kwargs)  # type: ignore[call-overload]
        temp.write = boom
        return temp

    return factory


def test_read_only_folder_raises_permission_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests run as root, where chmod does not stop writes: fake the EACCES instead.
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())

    def denied(**kwargs: object) -> object:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path))

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", denied)
    with pytest.raises(PermissionError):
        save_schedule_file(target, sample_doc(), default_zone="UTC")
    assert target.read_bytes() == SAMPLE.read_bytes()


def test_save_replaces_keeps_mode_and_leaves_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())
    target.chmod(0o640)
    doc = sample_doc().replace(ScheduleEntry(type_name="New.Job", start_type="schedule", schedules=(), paused=True))
    save_schedule_file(target, doc, default_zone="UTC")
    assert load_schedule_file(target, default_zone="UTC") == doc
    assert target.stat().st_mode & 0o777 == 0o640
    assert leftovers(tmp_path) == []


def test_save_creates_a_new_file_and_follows_symlinks(tmp_path: Path) -> None:
    real = tmp_path / "data" / "xcron.xml"
    real.parent.mkdir()
    link = tmp_path / "xcron.xml"
    link.symlink_to(real)
    save_schedule_file(link, sample_doc(), default_zone="UTC")
    assert link.is_symlink()
    assert real.stat().st_mode & 0o777 == 0o644
    assert load_schedule_file(link, default_zone="UTC") == sample_doc()


def test_save_refuses_unwritable_values_before_touching_the_file(tmp_path: Path) -> None:
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())
    bad = ScheduleDocument(
        (ScheduleEntry(type_name="A", start_type="schedule", schedules=(), positional_parameters=("\x00",)),)
    )
    with pytest.raises(ValueError):
        save_schedule_file(target, bad, default_zone="UTC")
    assert target.read_bytes() == SAMPLE.read_bytes()
    assert leftovers(tmp_path) == []


# -- property: random valid documents round-trip -------------------------------------------------------

ZONES = ["", "UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
DEFAULT_ZONE = "America/Sao_Paulo"
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cn")) | st.sampled_from("\t\n\r <&>\"'"), max_size=12)
INSTANTS = st.datetimes(min_value=datetime(1975, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
PARAMETER_VALUES: st.SearchStrategy[ParameterValue] = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    TEXT,
    st.booleans(),
    st.floats(allow_nan=False),
    INSTANTS,
    st.timedeltas(min_value=timedelta(days=-9999), max_value=timedelta(days=9999)),
)


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    kind = draw(st.sampled_from(["interval", "calendar", "cron"]))
    start = draw(INSTANTS)
    end: datetime | None = None
    if kind == "interval":
        spec: IntervalSpec | CalendarSpec | CronSpec = IntervalSpec(
            every=timedelta(seconds=draw(st.integers(1, 2**31 - 1)))
        )
        if draw(st.booleans()):
            # end_time must be after start_time (validate_schedule); an equal end is INVALID_ARGUMENT
            end = start + draw(st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=9999)))
    elif kind == "calendar":
        spec = CalendarSpec(days=draw(st.frozensets(st.integers(1, 7))), time_of_day=draw(st.times()).replace(fold=0))
        if draw(st.booleans()):  # past the first firing, which may be up to eight days later (one weekday, DST)
            end = start + draw(st.timedeltas(min_value=timedelta(days=9), max_value=timedelta(days=9999)))
    else:
        spec = CronSpec(
            expression=draw(
                st.sampled_from(
                    ["0 3 * * *", "*/5 * * * *", "0 0 1 1 * 30", "15 10 * * 1-5", "@daily", "0 0 * * mon,thu"]
                )
            )
        )
    return Schedule(
        spec=spec,
        start=start,
        end=end,
        time_zone=draw(st.sampled_from(ZONES)),
        parameters=draw(st.dictionaries(st.text("abcxyz_", min_size=1, max_size=5), PARAMETER_VALUES, max_size=3)),
        misfire_policy=draw(st.sampled_from(MisfirePolicy)),
        misfire_grace=draw(st.none() | st.integers(0, 10**6).map(lambda s: timedelta(seconds=s))),
        max_catchup_runs=draw(st.integers(0, 1000)),
        overlap_policy=draw(st.sampled_from(OverlapPolicy)),
    )


@st.composite
def documents(draw: st.DrawFn) -> ScheduleDocument:
    count = draw(st.integers(0, 3))
    return ScheduleDocument(
        tuple(
            ScheduleEntry(
                type_name=f"Jobs.Job{index}" + draw(st.sampled_from(["", ", Jobs", ", Jobs, Version=1.0"])),
                start_type=draw(st.sampled_from(["immediate", "delay", "schedule", "never"])),
                schedules=tuple(draw(st.lists(schedules(), max_size=3))),
                paused=draw(st.booleans()),
                positional_parameters=tuple(
                    draw(st.lists(st.integers(-(2**31), 2**31 - 1) | TEXT | st.booleans(), max_size=3))
                ),
            )
            for index in range(count)
        )
    )


def zone_of(schedule: Schedule) -> ZoneInfo:
    return ZoneInfo(schedule.time_zone or DEFAULT_ZONE)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_random_documents_round_trip(doc: ScheduleDocument) -> None:
    rendered = render_schedule_xml(doc, default_zone=DEFAULT_ZONE)
    reread = parse(rendered, DEFAULT_ZONE)
    assert reread == doc
    # What SanteDB reads: a calendar <add>'s start is a wall time at the time of day, on the date of the
    # first firing (without days) or the day before (with days: SanteDB fires only on later dates).
    adds = etree.fromstring(rendered).iter("{http://santedb.org/configuration}add")
    plain = [s for entry in doc.entries for s in entry.schedules if not isinstance(s.spec, CronSpec)]
    for add, schedule in zip(adds, plain, strict=True):
        if isinstance(schedule.spec, CalendarSpec):
            wall = datetime.fromisoformat(add.get("start", ""))
            assert wall.tzinfo is None
            assert wall.time() == schedule.spec.time_of_day
            first = next_fire_time(schedule, schedule.start - timedelta(microseconds=1), default_zone=DEFAULT_ZONE)
            if first is not None:
                shift = timedelta(days=1) if schedule.spec.days else timedelta()
                assert first.astimezone(zone_of(schedule)).date() == wall.date() + shift
    # Rebuilt from the fields or kept as read, the bytes are the same.
    assert render_schedule_xml(fresh(reread), default_zone=DEFAULT_ZONE) == rendered
    assert render_schedule_xml(reread, default_zone=DEFAULT_ZONE, known=lambda _: False) == rendered


def test_rendered_output_is_indented_like_santedb() -> None:
    rendered = render_schedule_xml(sample_doc(), default_zone="UTC").decode()
    indents = {len(m.group(1)) for m in re.finditer(r"\n( *)<", rendered)}
    assert indents == {0, 2, 4, 6}


# -- SanteDB fidelity (issue 11) ------------------------------------------------------------------------


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York", "Pacific/Kiritimati"])
def test_santedb_min_and_max_values_mean_no_bounds(zone: str) -> None:
    text = one_job(
        '<add type="interval" start="0001-01-01T00:00:00" stop="9999-12-31T23:59:59.9999999" interval="60" />\n'
        '<add days="Monday" start="0001-01-01T00:00:00" stop="9999-12-31T23:59:59.9999999" />\n'
        '<add type="interval" start="0001-01-01T00:00:00Z" interval="60" />'
    )
    interval, calendar, utc_min = parse(text, zone).entries[0].schedules
    assert interval.start == calendar.start == utc_min.start == datetime.min.replace(tzinfo=UTC)
    assert interval.end is None and calendar.end is None
    assert calendar.spec == CalendarSpec(days=frozenset({1}), time_of_day=time(0, 0))


@pytest.mark.parametrize(
    ("add", "reason"),
    [
        ('<add type="interval" start="2026-01-01T00:00:00" interval="0" />', "interval='0': SanteDB accepts it"),
        ('<add type="interval" start="0001-01-01T00:00:00" interval="-60" />', "interval='-60'"),
        ('<add start="2026-01-02T00:00:00Z" stop="2026-01-01T00:00:00Z" />', "is not after start"),
        ('<add type="interval" start="2026-01-02T00:00:00" stop="2026-01-02T00:00:00" interval="5" />', "not after"),
    ],
)
def test_what_santedb_accepts_but_xcron_cannot_run_is_disabled_not_refused(add: str, reason: str) -> None:
    text = one_job(f'{add}\n      <add type="interval" start="2026-01-01T00:00:00Z" interval="60" />')
    (entry,) = parse(text).entries
    (disabled,) = entry.disabled
    assert disabled.line == 5 and reason in disabled.reason and "disabled" in disabled.reason
    assert [s.spec for s in entry.schedules] == [IntervalSpec(every=timedelta(minutes=1))]  # the rest loads
    # Rebuilt (e.g. paused), the disabled schedule is kept as written.
    rebuilt = render_schedule_xml(fresh(parse(text)), default_zone="UTC")
    assert parse(rebuilt).entries[0].disabled == entry.disabled


def test_an_entry_of_an_unknown_job_is_never_a_reason_to_refuse() -> None:
    text = (
        f'{HEAD}  <JobItemConfiguration type="Other.Job, Other" startType="later">\n'
        f'    <schedule {SCHEDULE_NS}><add type="weekly" start="yesterday" interval="often" /></schedule>\n'
        "  </JobItemConfiguration>\n</ArrayOfJobItemConfiguration>\n"
    )
    with pytest.raises(ScheduleFileError):
        parse(text)  # without knowing which jobs run, everything is checked
    doc = parse_schedule_xml(text.encode(), source="xcron.xml", default_zone="UTC", known=lambda _: False)
    (entry,) = doc.entries
    assert entry.unreadable is not None and "startType" in entry.unreadable
    assert render_schedule_xml(doc, default_zone="UTC", known=lambda _: False) == text.encode()


SANTEDB_WINDOWS = (
    b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8"?>\r\n'
    b'<ArrayOfJobItemConfiguration xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
    b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">\r\n'
    b"    <!-- kept -->\r\n"
    b'    <JobItemConfiguration startType="immediate" type="Kept.Job, Kept">\r\n'
    b'        <schedule xmlns="http://santedb.org/configuration">\r\n'
    b'            <add type="interval" start="2024-06-14T10:15:30.1234567-04:00" interval="86400" />\r\n'
    b"        </schedule>\r\n"
    b"    </JobItemConfiguration>\r\n"
    b'    <JobItemConfiguration type="Mine.Job, Mine" startType="schedule">\r\n'
    b'        <schedule xmlns="http://santedb.org/configuration">\r\n'
    b'            <add type="interval" start="2026-01-01T00:00:00Z" interval="60" />\r\n'
    b"        </schedule>\r\n"
    b"    </JobItemConfiguration>\r\n"
    b"</ArrayOfJobItemConfiguration>"
)


def test_a_change_rewrites_only_its_entry_in_the_files_own_style() -> None:
    doc = parse(SANTEDB_WINDOWS)
    mine = doc.entries[1]
    hourly = (Schedule(spec=IntervalSpec(every=timedelta(hours=1)), start=datetime(2026, 1, 1, tzinfo=UTC)),)
    changed = doc.replace(dataclasses.replace(mine, schedules=hourly, paused=True))
    written = render_schedule_xml(changed, default_zone="UTC")
    before, _ = SANTEDB_WINDOWS.split(b'    <JobItemConfiguration type="Mine.Job')
    assert written.startswith(before)  # BOM, declaration, declarations' order, comment, the other entry
    assert written.endswith(b"\r\n</ArrayOfJobItemConfiguration>")  # no line end added at the end
    assert b"\n" not in written.replace(b"\r\n", b"")  # CRLF throughout
    assert (
        b'    <JobItemConfiguration xmlns:xc="urn:xcron:schedule:v1" type="Mine.Job, Mine" startType="schedule" '
        b'xc:paused="true">\r\n        <schedule xmlns="http://santedb.org/configuration">\r\n'
        b'            <add type="interval" start="2026-01-01T00:00:00Z" interval="3600" />\r\n'
    ) in written
    assert parse(written) == changed
    # Added entries go before the end tag, removed ones leave no trace.
    added = changed.replace(ScheduleEntry(type_name="New.Job", start_type="never", schedules=()))
    assert render_schedule_xml(added.remove("Mine.Job"), default_zone="UTC") == (
        before + b'    <JobItemConfiguration xmlns:xc="urn:xcron:schedule:v1" type="New.Job" startType="never">\r\n'
        b'        <schedule xmlns="http://santedb.org/configuration" />\r\n'
        b"    </JobItemConfiguration>\r\n</ArrayOfJobItemConfiguration>"
    )
    assert render_schedule_xml(doc.remove("Mine.Job").remove("Kept.Job"), default_zone="UTC").endswith(
        b'"http://www.w3.org/2001/XMLSchema-instance">\r\n    <!-- kept -->\r\n</ArrayOfJobItemConfiguration>'
    )


def test_an_empty_santedb_root_gets_entries() -> None:
    data = b'<?xml version="1.0"?>\n<ArrayOfJobItemConfiguration xmlns:xsd="x" xmlns:xsi="y" />'
    doc = parse(data).replace(ScheduleEntry(type_name="New.Job", start_type="never", schedules=()))
    written = render_schedule_xml(doc, default_zone="UTC")
    assert written.startswith(b'<?xml version="1.0"?>\n<ArrayOfJobItemConfiguration xmlns:xsd="x" xmlns:xsi="y">\n')
    assert parse(written) == doc


def test_save_keeps_owner_and_group(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to give the file to another user")
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())
    os.chown(target, 4321, 8765)
    target.chmod(0o600)
    save_schedule_file(target, sample_doc(), default_zone="UTC")
    status = target.stat()
    assert (status.st_uid, status.st_gid, status.st_mode & 0o777) == (4321, 8765, 0o600)
    assert target.read_bytes() != SAMPLE.read_bytes()  # really rewritten (rebuilt from fields)


# -- issue 16: the text renderer, saves without a full re-read, the quick cron check --------------------

# Disabled schedules, kept as written wherever an entry moves: prefixes, comments, escapes, another namespace.
DISABLED = (
    parse(
        one_job(
            '<add type="interval" start="2026-01-01T00:00:00Z" interval="0" xsi:type="x" />\n'
            '      <add days="Monday" start="2026-03-01T09:00:00" stop="2026-01-01T00:00:00" '
            'xc:timeZone="Europe/Paris">'
            '<xc:param name="a">x &amp; y&#13;</xc:param><!-- kept --></add>\n'
            '      <xc:cron expression="0 3 * * *" start="2026-03-01T00:00:00Z" stop="2026-01-01T00:00:00Z" '
            'o:note="&lt;&quot;" xmlns:o="urn:other">\n        <xc:param name="b" type="int">1</xc:param>\n'
            "      </xc:cron>"
        )
    )
    .entries[0]
    .disabled
)
SPLICE_BASES = [
    SAMPLE.read_bytes(),
    EXTENDED.read_bytes(),
    SANTEDB_WINDOWS,
    b'<ArrayOfJobItemConfiguration xmlns:xc="urn:xcron:schedule:v1" xmlns:o="urn:other"/>',
    b'<?xml version="1.0"?>\n<ArrayOfJobItemConfiguration>\n\t<JobItemConfiguration type="Jobs.Job0" />\n'
    b"</ArrayOfJobItemConfiguration>\n",
]


@st.composite
def varied_documents(draw: st.DrawFn) -> ScheduleDocument:
    """documents(), some entries also holding disabled schedules (kept as read)."""
    doc = draw(documents())
    return ScheduleDocument(
        tuple(
            dataclasses.replace(entry, disabled=draw(st.sampled_from([(), DISABLED[:1], DISABLED])))
            for entry in doc.entries
        )
    )


def spliced(base: bytes, doc: ScheduleDocument) -> ScheduleDocument:
    """`doc`'s entries put into the document read from `base`: replacing an entry there, or added."""
    spliced = parse(base)
    for entry in doc.entries:
        spliced = spliced.replace(entry)
    return spliced


DAILY = CronSpec(expression="@daily")
NEW_YEAR = datetime(2026, 1, 1, tzinfo=UTC)


def outcome(render: Callable[..., bytes], doc: ScheduleDocument, **options: Any) -> bytes | tuple[type, str]:
    """The bytes, or the error (type and message) rendering gives."""
    try:
        return render(doc, **options)
    except ValueError as error:
        return type(error), str(error)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(varied_documents(), st.sampled_from(SPLICE_BASES))
def test_the_text_renderer_writes_what_lxml_elements_gave(doc: ScheduleDocument, base: bytes) -> None:
    """The bytes of every save stay what the element-based renderer (tests/support/xml_oracle.py) wrote:
    whole files, and entries spliced into files of other layouts (indent, CRLF, " />", no xc declaration)."""
    assert len(DISABLED) == 3
    for document in (doc, spliced(base, doc)):
        for known in (None, lambda _: False):
            new = outcome(render_schedule_xml, document, default_zone=DEFAULT_ZONE, known=known)
            old = outcome(old_render_schedule_xml, document, default_zone=DEFAULT_ZONE, known=known)
            assert new == old


@pytest.mark.parametrize(
    "bad",
    [
        {"type_name": "A\x01"},
        {"positional_parameters": ("\x00",)},
        {"positional_parameters": ("\ufffe",)},
        {"positional_parameters": ("a\ud800",)},
        {"schedules": (Schedule(spec=DAILY, start=NEW_YEAR, parameters={"a": "\x0b"}),)},
        {"schedules": (Schedule(spec=DAILY, start=NEW_YEAR, parameters={"\x1f": "a"}),)},
    ],
)
def test_the_text_renderer_refuses_what_lxml_refused(bad: dict[str, Any]) -> None:
    entry = dataclasses.replace(ScheduleEntry(type_name="A", start_type="never", schedules=()), **bad)
    document = ScheduleDocument((entry,))
    new = outcome(render_schedule_xml, document, default_zone="UTC")
    assert isinstance(new, tuple)
    assert new == outcome(old_render_schedule_xml, document, default_zone="UTC")


def test_escapes_are_lxmls() -> None:
    text = "a&b<c>d\"e'f\tg\nh\ri é ]]> \x7f \x85 \u2028 \U0001f600 /> {"
    schedule = Schedule(spec=DAILY, start=NEW_YEAR, parameters={text: text})
    entry = ScheduleEntry(type_name=text, start_type="never", schedules=(schedule,), positional_parameters=(text,))
    document = ScheduleDocument((entry,))
    rendered = render_schedule_xml(document, default_zone="UTC")
    assert rendered == old_render_schedule_xml(document, default_zone="UTC")
    assert parse(rendered) == document


DST_EDGES = [
    # (zone, a time of day in its spring gap or autumn repeat, the local date of that transition)
    ("Europe/Paris", time(2, 30), datetime(2026, 3, 29)),
    ("Europe/Paris", time(2, 30), datetime(2026, 10, 25)),
    ("America/New_York", time(2, 0), datetime(2026, 3, 8)),
    ("America/New_York", time(1, 30), datetime(2026, 11, 1)),
    ("Australia/Lord_Howe", time(2, 15), datetime(2026, 10, 4)),  # half-hour DST
    ("Australia/Lord_Howe", time(1, 45), datetime(2026, 4, 5)),
    ("America/Sao_Paulo", time(0, 0), datetime(2018, 11, 4)),  # midnight skipped
]


def edge_documents() -> list[ScheduleDocument]:
    """Calendars at the gap and the repeat of DST changes, starting just before, at and after them; cron
    and interval schedules starting there; every parameter type; paused, positional, disabled."""
    entries = []
    for index, (zone, wall, day) in enumerate(DST_EDGES):
        local = datetime.combine(day.date(), wall, tzinfo=ZoneInfo(zone))
        schedules = []
        for shift in (timedelta(hours=-2), timedelta(), timedelta(minutes=30), timedelta(days=1)):
            start = (local + shift).astimezone(UTC)
            days = frozenset({local.isoweekday()}) if shift else frozenset()
            schedules += [
                Schedule(spec=CalendarSpec(days=days, time_of_day=wall), start=start, time_zone=zone),
                Schedule(
                    spec=CronSpec(expression=f"{wall.minute} {wall.hour} * * *"),
                    start=start,
                    end=start + timedelta(days=3),
                    time_zone=zone if shift else "",
                    misfire_policy=MisfirePolicy.SKIP,
                    misfire_grace=timedelta(seconds=90),
                    max_catchup_runs=0,
                    overlap_policy=OverlapPolicy.CANCEL_OTHER,
                ),
                Schedule(
                    spec=IntervalSpec(every=timedelta(minutes=45)),
                    start=start,
                    time_zone=zone,
                    parameters={
                        "s": "x & <y>",
                        "i": -(2**63),
                        "b": False,
                        "d": 0.1,
                        "t": start,
                        "u": timedelta(seconds=-1.5),
                        "e": "",
                    },
                ),
            ]
        entries.append(
            ScheduleEntry(
                type_name=f"Edge.Job{index}, Edge",
                start_type="schedule",
                schedules=tuple(schedules),
                paused=index % 2 == 0,
                positional_parameters=(1, "two", True, "") if index % 3 else (),
                disabled=DISABLED if index % 2 else (),
            )
        )
    return [ScheduleDocument(tuple(entries)), ScheduleDocument(())]


@pytest.mark.parametrize("default_zone", ["UTC", "Europe/Paris", DEFAULT_ZONE])
def test_dst_edges_and_every_kind_round_trip_through_render_and_save(tmp_path: Path, default_zone: str) -> None:
    """The round trip a save now relies on (check_writable vouches for each schedule) holds at DST edges,
    and what a save returns is what a fresh read of the file gives, metadata and all."""
    target = tmp_path / "xcron.xml"
    for doc in edge_documents():
        for schedule in (s for e in doc.entries for s in e.schedules):
            check_writable(schedule, default_zone=default_zone)
        rendered = render_schedule_xml(doc, default_zone=default_zone)
        assert rendered == old_render_schedule_xml(doc, default_zone=default_zone)
        assert parse(rendered, default_zone) == doc
        written = save_schedule_file(target, doc, default_zone=default_zone)
        assert _everything(written) == _everything(load_schedule_file(target, default_zone=default_zone))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(varied_documents(), st.sampled_from(SPLICE_BASES))
def test_a_save_returns_what_a_fresh_read_gives_without_reading_it(doc: ScheduleDocument, base: bytes) -> None:
    """Entries written from their fields are not read back: the writer says what a reader would find
    (element, line, span, SanteDB's view, xcron parts), for whole files and spliced ones."""
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "xcron.xml"
        for document in (doc, spliced(base, doc)):
            written = save_schedule_file(target, document, default_zone=DEFAULT_ZONE, known=lambda _: True)
            reread = load_schedule_file(target, default_zone=DEFAULT_ZONE, known=lambda _: True)
            assert written.original == target.read_bytes()
            assert _everything(written) == _everything(reread)
            assert written.layout == reread.layout


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(varied_documents(), st.sampled_from(SPLICE_BASES))
def test_the_writer_says_where_each_entry_lies(doc: ScheduleDocument, base: bytes) -> None:
    """A save takes the entries' spans from the writer instead of searching the output: they are the ones
    the search finds, in whole files and in spliced ones (entries kept, rewritten and added)."""
    for document in (doc, spliced(base, doc)):
        for known in (None, lambda _: True):
            spans: list[tuple[int, int]] = []
            data, _ = writing._render(document, DEFAULT_ZONE, known, spans)
            assert spans == list(_scan_layout(data).spans)


def test_a_save_searches_for_entries_the_writer_misplaced() -> None:
    """Spans that do not fit the bytes (an entry's start and end tags, in order, one per entry) are not used."""
    data = render_schedule_xml(edge_documents()[0], default_zone="UTC")
    found = _scan_layout(data)
    right = list(found.spans)
    assert saving._layout(data, right, len(right)) == found
    first, second = right[0], right[1]
    for wrong in (
        [(first[0] + 1, first[1]), *right[1:]],  # not at a start tag
        [(first[0], first[1] - 1), *right[1:]],  # not at an end tag
        [(first[0], data.index(b"/>", first[0]) + 2), *right[1:]],  # at an empty element's end, inside the entry
        [second, first, *right[2:]],  # out of order
        right[:-1],  # one missing
    ):
        assert saving._layout(data, wrong, len(right)) == found


def test_a_save_whose_output_does_not_match_the_document_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The structural check before the rename: lxml parses the output, and it holds every entry with
    every schedule (here the writer is made to lose one, or to write what is not XML)."""
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())
    doc = fresh(load_schedule_file(EXTENDED, default_zone="UTC"))
    real = writing._render

    def losing(*args: Any) -> tuple[bytes, list[Any]]:
        data, rendered = real(*args)
        return data.replace(b'<add type="interval"', b'<o:add xmlns:o="urn:other" type="interval"', 1), rendered

    monkeypatch.setattr(saving, "_render", losing)
    with pytest.raises(ScheduleFileError, match=r"holds 2 schedules for 3\); nothing written"):
        save_schedule_file(target, doc, default_zone="UTC")
    monkeypatch.setattr(saving, "_render", lambda *args: (real(*args)[0].replace(b"</schedule>", b"", 1), []))
    with pytest.raises(ScheduleFileError, match="not well-formed"):
        save_schedule_file(target, doc, default_zone="UTC")
    monkeypatch.setattr(saving, "_render", lambda *args: (real(*args)[0].replace(b"xc:paused", b"yc:paused"), []))
    with pytest.raises(ScheduleFileError, match="prefix yc for paused"):
        save_schedule_file(target, doc, default_zone="UTC")
    assert target.read_bytes() == SAMPLE.read_bytes()
    assert leftovers(tmp_path) == []


def written_from_fields() -> ScheduleDocument:
    """SanteDB's and xcron's sample entries, as the service builds them (none with a disabled schedule)."""
    read = (load_schedule_file(source, default_zone="UTC") for source in (SAMPLE, EXTENDED))
    entries = (e for doc in read for e in fresh(doc).entries)
    return ScheduleDocument(tuple(e for e in entries if not e.disabled))


def test_a_new_file_written_from_fields_is_checked_without_a_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file the writer wrote whole from the document's fields is parsed by libxml2 without building a
    tree; what the save returns is still exactly what a fresh read of the file gives."""
    doc = written_from_fields()
    assert len(doc.entries) > 1
    built: list[bytes] = []
    real = common._parse_root

    def spying(data: bytes, source: str) -> etree._Element:
        built.append(data)
        return real(data, source)

    monkeypatch.setattr(saving, "_parse_root", spying)
    target = tmp_path / "xcron.xml"
    written = save_schedule_file(target, doc, default_zone="UTC")
    assert built == []
    reread = load_schedule_file(target, default_zone="UTC")
    assert _everything(written) == _everything(reread)
    assert written.layout == reread.layout
    # A file with text kept as read takes the tree's way (the kept entries' schedules are counted there).
    save_schedule_file(target, reread, default_zone="UTC")
    assert len(built) == 1


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        # The same length, so the entries stay where the writer says and the tree-free check is the one that runs.
        (b'<add type="interval"', b'<adx type="interval"', r"holds \d+ schedules for \d+\); nothing written"),
        (b"xc:paused", b"yc:paused", "prefix yc for paused"),
        (
            b'<schedule xmlns="http://santedb.org/configuration">',
            b'<schedule xmlns="http://santedb.org/configuratioX">',
            r"schedules lie outside its <schedule>\); nothing written",
        ),
        (b"</schedule>", b"</schedulx>", "not well-formed"),
        (b' start="', b" start='", "not well-formed"),
    ],
)
def test_a_new_file_that_does_not_match_the_document_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, old: bytes, new: bytes, message: str
) -> None:
    target = tmp_path / "xcron.xml"
    target.write_bytes(SAMPLE.read_bytes())
    doc = written_from_fields()
    real = writing._render

    def broken(*args: Any) -> tuple[bytes, list[Any]]:
        data, rendered = real(*args)
        assert old in data and len(old) == len(new)
        return data.replace(old, new, 1), rendered

    monkeypatch.setattr(saving, "_render", broken)
    monkeypatch.setattr(saving, "_parse_root", lambda *_: pytest.fail("the tree-free check was not the one used"))
    with pytest.raises(ScheduleFileError, match=message):
        save_schedule_file(target, doc, default_zone="UTC")
    assert target.read_bytes() == SAMPLE.read_bytes()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(("newline", "lines"), [("\n", [3, 3, 8]), ("\r\n", [3, 3, 8]), ("\r", [1, 1, 1])])
def test_entry_lines_count_as_libxml2_does(newline: str, lines: list[int]) -> None:
    body = newline.join(
        [
            '<?xml version="1.0"?>',
            "<ArrayOfJobItemConfiguration>",
            f'  <{_JOB_TAG} type="A"/><{_JOB_TAG} type="B">',
            "  </JobItemConfiguration>",
            "  <!-- a comment",
            f'  across lines -->{newline}{newline}  <{_JOB_TAG} type="C"/>',
            "</ArrayOfJobItemConfiguration>",
        ]
    )
    data = body.encode()
    layout = _scan_layout(data)
    expected = [common._line(child.sourceline) for child in etree.fromstring(data).iterchildren(_JOB_TAG)]
    assert entry_lines(data, layout.spans) == expected == lines


def test_lines_stay_exact_past_line_65535(tmp_path: Path) -> None:
    """libxml2 keeps an element's line in 16 bits (lxml then reports the line after a new entry's start
    tag): a save and a read give every entry the line its start tag is on, in files of any length."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    doc = ScheduleDocument(
        tuple(
            ScheduleEntry(
                type_name=f"Acme.Job{i}",
                start_type="schedule",
                schedules=(Schedule(spec=IntervalSpec(every=timedelta(minutes=1)), start=start),),
            )
            for i in range(14_000)  # 5 lines each: 70,000 lines
        )
    )
    target = tmp_path / "xcron.xml"
    written = save_schedule_file(target, doc, default_zone="UTC")
    data = target.read_bytes()
    assert data.count(b"\n") > 65_535
    exact = [data.count(b"\n", 0, entry.span[0]) + 1 for entry in written.entries]  # type: ignore[index]
    assert [entry.line for entry in written.entries] == exact
    reread = load_schedule_file(target, default_zone="UTC")
    assert [entry.line for entry in reread.entries] == exact
    again = save_schedule_file(
        target, reread.replace(dataclasses.replace(reread.entries[-1], paused=True)), default_zone="UTC"
    )
    assert [entry.line for entry in again.entries] == exact  # the tree's way: kept text and one rewritten entry


def test_the_reader_builds_schedules_as_their_constructor_does() -> None:
    """The reader makes Schedules without the dataclass's __init__ (a file holds thousands): each one is
    what Schedule() makes of the same fields, every field set, and Schedule()'s own checks accept it."""
    doc = parse(render_schedule_xml(edge_documents()[0], default_zone="UTC"), "UTC")
    read = [
        s
        for source in (SAMPLE, EXTENDED)
        for e in load_schedule_file(source, default_zone="UTC").entries
        for s in e.schedules
    ]
    read += [s for e in doc.entries for s in e.schedules]
    assert len(read) > 5
    for schedule in read:
        made = Schedule(**{field.name: getattr(schedule, field.name) for field in dataclasses.fields(Schedule)})
        assert vars(schedule) == vars(made)
        assert type(schedule) is Schedule and schedule == made


# Every item form the quick check accepts, field by field (the others "*"); hypothesis mixes them.
CRON_BOUNDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 6), (0, 59)]


def cron_items(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high)
    step = st.integers(1, high).map(lambda s: f"/{s}")
    ranged = st.tuples(number, number).map(lambda ab: f"{min(ab)}-{max(ab)}")
    item = st.one_of(
        st.just("*"),
        number.map(str),
        number.map(lambda n: f"{n:02d}"),
        ranged,
        st.tuples(ranged | st.just("*"), step).map("".join),
    )
    return st.lists(item, min_size=1, max_size=3).map(",".join)


@st.composite
def plain_crons(draw: st.DrawFn) -> str:
    fields = draw(st.sampled_from([5, 6]))
    return " ".join(draw(cron_items(low, high)) for low, high in CRON_BOUNDS[:fields])


@settings(max_examples=300, deadline=None)
@given(
    plain_crons() | st.lists(st.text("0123456789*/-,", min_size=1, max_size=5), min_size=4, max_size=7).map(" ".join)
)
def test_the_quick_cron_check_accepts_only_what_croniter_accepts(expression: str) -> None:
    if _plainly_valid_cron(expression):
        assert croniter.is_valid(expression)
        assert _checked_cron.__wrapped__(expression) == expression


def test_the_quick_cron_check_covers_every_single_value_and_step() -> None:
    for index, (low, high) in enumerate(CRON_BOUNDS):
        for item in ["*", *(str(n) for n in range(low, high + 1)), *(f"*/{s}" for s in range(1, high + 1))]:
            fields = ["*"] * (6 if index == 5 else 5)
            fields[index] = item
            expression = " ".join(fields)
            assert _plainly_valid_cron(expression) and croniter.is_valid(expression), expression
    for refused in [
        "5/15 * * * *",
        "5-1 * * * *",
        "0 0 * * 7",
        "0 0 * * mon",
        "60 * * * *",
        "*/0 * * * *",
        "0 0 L * *",
    ]:
        assert not _plainly_valid_cron(refused)  # croniter decides these, as before


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 0 0 * *", "not a valid cron expression"),
        ("*/0 * * * *", "not a valid cron expression"),
        ("0 0 * * * 60", "not a valid cron expression"),
        ("0 0 * *", "a cron expression has 5 fields"),
        ("H 0 * * *", "random (R) and hashed (H)"),
    ],
)
def test_invalid_cron_expressions_are_still_refused_with_their_reasons(expression: str, message: str) -> None:
    _checked_cron.cache_clear()  # a first load: nothing checked yet
    with pytest.raises(ScheduleFileError, match=re.escape(message)):
        parse(one_job(f'<xc:cron expression="{expression}" start="2026-01-01T00:00:00Z" />'))


def _old_format_datetime(instant: datetime, zone: ZoneInfo, *, santedb: bool = False) -> str:
    """values.format_datetime before issue 16 made it faster: the reference it must still agree with."""
    if instant <= values.NO_START:
        return values.MIN_VALUE_TEXT
    if instant >= datetime.max.replace(microsecond=0, tzinfo=UTC):
        return values.MAX_VALUE_TEXT
    try:
        local = instant.astimezone(zone)
    except OverflowError:
        text = instant.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
        return text + ("+00:00" if santedb else "Z")
    offset = local.utcoffset() or timedelta()
    if offset % timedelta(minutes=1):
        if santedb:
            return values.format_wall(local)
        local, offset = instant.astimezone(UTC), timedelta()
    text = local.replace(tzinfo=None).isoformat(timespec="microseconds" if local.microsecond else "seconds")
    if not offset:
        return text + "Z"
    sign = "-" if offset < timedelta() else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{text}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(timezones=st.just(UTC))
    | st.datetimes(min_value=datetime(1800, 1, 1), max_value=datetime(1900, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(
        ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Africa/Monrovia", "Pacific/Kiritimati"]
    ),
    st.booleans(),
)
def test_format_datetime_agrees_with_its_reference(instant: datetime, zone: str, santedb: bool) -> None:
    expected = _old_format_datetime(instant, ZoneInfo(zone), santedb=santedb)
    assert values.format_datetime(instant, ZoneInfo(zone), santedb=santedb) == expected


@pytest.mark.parametrize(
    "policies",
    [
        None,
        {},
        {"misfire_policy": MisfirePolicy.SKIP, "misfire_grace": timedelta(seconds=5)},
        {"max_catchup_runs": 3, "overlap_policy": OverlapPolicy.BUFFER_ONE},
    ],
)
def test_the_readers_schedule_is_what_schedule_makes(policies: dict[str, Any] | None) -> None:
    """The reader builds Schedules without __init__: every field, and every attribute, as Schedule() sets them."""
    spec = IntervalSpec(every=timedelta(seconds=60))
    start, end = datetime(2026, 1, 5, 3, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)
    made = _schedule(spec, start, end, "Europe/Paris", {"a": 1}, policies)
    expected = Schedule(
        spec=spec, start=start, end=end, time_zone="Europe/Paris", parameters={"a": 1}, **(policies or {})
    )
    assert type(made) is Schedule
    assert vars(made) == vars(expected)
    assert made == expected and made.key == expected.key
    # Every field Schedule fills from a factory is one the reader always gives.
    assert {f.name for f in dataclasses.fields(Schedule) if f.default_factory is not dataclasses.MISSING} == {
        "parameters"
    }
