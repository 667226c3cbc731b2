"""Faults with real processes and real file systems: full and read-only disks, kill -9 during
saves, jobs that misbehave. Nothing is lost, the server keeps serving, and it recovers."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from xcron.client import Client, ExecutionState, Schedule, UnavailableError

DATA = Path(__file__).resolve().parent.parent / "data"


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tiny file system of its own, so the test can fill it up or make it read-only."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def schedules_in(path: Path, type_prefix: str = "xcron_test_jobs.TickJob") -> int:
    """How many <add> schedules the entry for test.tick holds in the file (0 if none)."""
    root = etree.fromstring(path.read_bytes())
    entries = [e for e in root if str(e.get("type", "")).startswith(type_prefix)]
    return sum(len(e.findall(".//{http://santedb.org/configuration}add")) for e in entries)


def test_disk_full_fails_clearly_changes_nothing_and_recovers(server_factory: Any, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        server = server_factory(workdir=fs, extra_args=["--data-dir", str(tmp_path / "data")]).start()
        with Client(server.target, timeout=20) as client:
            client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
            before = server.schedule_file.read_bytes()
            filler = fs / "filler"
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
            os.close(fd)
            many = [Schedule.every(timedelta(minutes=m + 1)) for m in range(60)]
            with pytest.raises(UnavailableError, match="No space left on device") as failed:
                client.set_schedule("test.tick", many)
            assert failed.value.reason == "SCHEDULE_FILE_UNWRITABLE"
            assert server.schedule_file.read_bytes() == before  # the old file is intact
            assert len(client.get_job("test.tick").schedules) == 1  # and so is the server's view
            assert client.run_and_wait("test.tick", timeout=20).state is ExecutionState.COMPLETED  # still serving
            filler.unlink()
            assert len(client.set_schedule("test.tick", many).schedules) == 60  # recovered
            assert schedules_in(server.schedule_file) == 60
        server.stop()


def test_read_only_file_system_fails_clearly_and_recovers(server_factory: Any, tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "fs", "1m") as fs:
        server = server_factory(workdir=fs, extra_args=["--data-dir", str(tmp_path / "data")]).start()
        with Client(server.target, timeout=20) as client:
            client.set_schedule("test.tick", [Schedule.every(timedelta(hours=1))])
            subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
            try:
                with pytest.raises(UnavailableError, match="Read-only file system"):
                    client.set_schedule("test.tick", [Schedule.every(timedelta(hours=2))])
                assert client.get_job("test.tick").schedules[0].spec.every == timedelta(hours=1)  # type: ignore[union-attr]
            finally:
                subprocess.run(["mount", "-o", "remount,rw", str(fs)], check=True)
            job = client.set_schedule("test.tick", [Schedule.every(timedelta(hours=2))])
            assert job.schedules[0].spec.every == timedelta(hours=2)  # type: ignore[union-attr]
        server.stop()


def hammer(target: str, acknowledged: list[int], stop: threading.Event) -> None:
    """Saves 1, 2, … 40, 1, … schedules as fast as it can; records each save the server acknowledged."""
    with Client(target, timeout=5) as client:
        n = 1
        while not stop.is_set():
            schedules = [Schedule.every(timedelta(minutes=m + 1)) for m in range(n)]
            try:
                client.set_schedule("test.tick", schedules)
            except Exception:
                return  # the server was killed mid-call: not acknowledged
            acknowledged.append(n)
            n = n % 40 + 1


def test_kill_9_during_saves_never_loses_an_acknowledged_schedule(server_factory: Any, tmp_path: Path) -> None:
    shutil.copy(DATA / "santedb.sample.xml", tmp_path / "xcron.xml")
    rng = random.Random(7)
    for round_ in range(3):
        server = server_factory().start()
        acknowledged: list[int] = []
        stop = threading.Event()

        worker = threading.Thread(target=hammer, args=(server.target, acknowledged, stop))
        worker.start()
        target_saves = rng.randint(5, 40)
        while len(acknowledged) < target_saves and worker.is_alive():
            worker.join(0.01)
        server.stop(signal.SIGKILL)
        stop.set()
        worker.join(30)
        assert acknowledged, f"round {round_}: no save was acknowledged:\n{server.log()}"
        # The file is whole: the last acknowledged version or the one being written when killed.
        count = schedules_in(tmp_path / "xcron.xml")
        assert schedules_in(tmp_path / "xcron.xml", "SanteDB.") == 3  # SanteDB's own entries survive every save
        last = acknowledged[-1]
        assert count in (last, last % 40 + 1), (count, last)
        restarted = server_factory().start()  # and it loads
        with Client(restarted.target, timeout=20) as client:
            assert len(client.get_job("test.tick").schedules) == count
        restarted.stop()


def test_misbehaving_jobs_do_not_hurt_the_server_or_other_jobs(server: Any) -> None:
    with Client(server.target, timeout=20) as client:
        stuck = client.run_job("test.stubborn", {"timeout": 120.0})  # hangs, ignores cancel requests
        wild = client.run_and_wait("test.wild", timeout=20)  # progress 5, -1, NaN, inf, then SystemExit
        assert wild.state is ExecutionState.ABORTED and wild.error.startswith("SystemExit")
        assert 0.0 <= wild.progress <= 1.0
        assert client.run_and_wait("test.fail", timeout=20).state is ExecutionState.ABORTED
        assert client.run_and_wait("test.tick", timeout=20).state is ExecutionState.COMPLETED
        assert client.get_execution(stuck.id).state is ExecutionState.RUNNING
        text = "$(touch /tmp/xcron-pwned); rm -rf / `id`"
        echoed = client.run_and_wait("test.types", {"s": text, "i": 1}, timeout=20)
        assert f"s={text!r}" in echoed.status_text  # parameters are data, never shell or code
        assert not os.path.exists("/tmp/xcron-pwned")


def test_sigterm_turns_health_not_serving_refuses_new_runs_and_exits_0(server_factory: Any) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from xcron.client import FailedPreconditionError

    server = server_factory(extra_args=["--shutdown-grace", "3"]).start()
    with Client(server.target, timeout=20) as client, grpc.insecure_channel(server.target) as channel:
        stuck = client.run_job("test.stubborn", {"timeout": 60.0})  # ignores the cancel request
        health = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service="xcron.v1.JobService"))
        assert next(health).status == health_pb2.HealthCheckResponse.SERVING
        server.process.send_signal(signal.SIGTERM)
        assert next(health).status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(FailedPreconditionError) as refused:
            client.run_job("test.tick")
        assert refused.value.reason == "SHUTTING_DOWN"
        health.cancel()
    assert server.process.wait(30) == 0
    restarted = server_factory().start()
    with Client(restarted.target, timeout=20) as client:
        record = client.get_execution(stuck.id)
    assert record.state is ExecutionState.ABORTED and record.error == "interrupted: server stopped"


def test_limits_answer_resource_exhausted_and_name_the_limit(server_factory: Any) -> None:
    import grpc

    from xcron.client import ResourceExhaustedError

    server = server_factory(
        extra_args=["--max-request-bytes", "65536", "--max-watchers", "1", "--max-running", "1"]
    ).start()
    with Client(server.target, timeout=20) as client:
        with pytest.raises(ResourceExhaustedError):
            client.run_job("test.types", {"s": "x" * 100_000, "i": 1})  # larger than the request limit
        first = client.watch_jobs()
        next(first)
        with pytest.raises(ResourceExhaustedError, match="too many watchers"):
            next(client.watch_jobs())
        first.close()
        blocker = client.run_job("test.stubborn", {"timeout": 60.0})
        with pytest.raises(ResourceExhaustedError, match="the limit is 1"):
            client.run_job("test.tick")
        assert client.get_execution(blocker.id).state is ExecutionState.RUNNING
    with grpc.insecure_channel(server.target) as channel:  # and it keeps serving
        grpc.channel_ready_future(channel).result(timeout=10)
