"""xcron.xml with a real server process: SanteDB's own file, bad files, hand edits and reloads."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from xcron.client import Client, IntervalSpec, InvalidArgumentError, Schedule

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
        (
            b"<ArrayOfJobItemConfiguration>\n"
            b'  <JobItemConfiguration type="A, B" startType="schedule">\n'
            b'    <schedule xmlns="http://santedb.org/configuration">\n'
            b'      <add type="interval" start="2026-01-01T00:00:00Z" interval="-5" />\n'
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
        '  <JobItemConfiguration type="A, B" startType="schedule">\n'
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
