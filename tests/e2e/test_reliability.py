"""Reliability with real server processes (issue 12): one server per data dir and per port, a bounded
exit whatever a job does, stale temp files of interrupted saves removed at start."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha.reflection_pb2 import ServerReflectionRequest
from server_process import SUPPORT, ServerProcess
from waiting import eventually

from xcron.client import Client, ExecutionState
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc


def run_to_exit(server: ServerProcess, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Runs the server's command to its end (a server that refuses to start exits by itself)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        server.command(), cwd=server.workdir, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_a_second_server_on_the_same_data_dir_exits_2_naming_the_holder(server_factory: Any, tmp_path: Path) -> None:
    first = server_factory().start()
    assert first.process is not None
    with Client(first.target, timeout=20) as client:
        run = client.run_job("test.block", {"timeout": 120.0})
        # Same data dir, another port: refused before it opens the store (it would mark the live run
        # "interrupted: server stopped" and run the same schedules).
        second = run_to_exit(server_factory(extra_args=["--schedule-file", str(tmp_path / "other.xml")]))
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"pid {first.process.pid}" in second.stderr
        assert "data dir" in second.stderr
        assert client.get_execution(run.id).state is ExecutionState.RUNNING  # untouched
        client.cancel_job("test.block")
    assert first.stop() == 0


def test_a_second_server_on_a_port_in_use_exits_2(server_factory: Any, tmp_path: Path) -> None:
    first = server_factory().start()
    other = tmp_path / "other"
    other.mkdir()
    second = run_to_exit(server_factory(workdir=other, extra_args=["--listen", first.target]))
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"cannot listen on {first.target}" in second.stderr
    assert "in use" in second.stderr
    assert not (other / "data" / "state.sqlite3").exists()  # refused before opening anything
    with Client(first.target, timeout=20) as client:  # the first one serves every call
        assert client.run_and_wait("test.tick", timeout=20).state is ExecutionState.COMPLETED
    assert first.stop() == 0


def test_an_http_port_in_use_exits_2_before_anything_runs(server_factory: Any, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = run_to_exit(server_factory(extra_args=["--http-listen", f"127.0.0.1:{port}"]))
    assert server.returncode == 2, server.stdout + server.stderr
    assert f"cannot listen on 127.0.0.1:{port} (--http-listen)" in server.stderr
    assert not (tmp_path / "data" / "state.sqlite3").exists()  # refused before opening anything


def test_the_lock_is_free_again_once_the_holder_is_gone(server_factory: Any) -> None:
    first = server_factory().start()
    first.kill()  # kill -9: the kernel drops the lock with the process
    again = server_factory().start()
    assert again.stop() == 0


def test_exit_within_the_grace_even_if_an_async_job_swallows_cancellation(server_factory: Any) -> None:
    server = server_factory(extra_args=["--shutdown-grace", "1"]).start()
    with Client(server.target, timeout=20) as client:
        run = client.run_job("test.swallow", {"timeout": 600.0})
    assert server.process is not None
    server.process.send_signal(signal.SIGTERM)
    # Well before the job would end by itself (600 s); before the fix the process waited for it.
    assert server.process.wait(60) == 0
    server.wait_for_log("ignore cancellation")  # the log is read by a thread: it may trail the exit
    server.start()
    with Client(server.target, timeout=20) as client:
        record = client.get_execution(run.id)
        assert record.state is ExecutionState.ABORTED
        assert "interrupted" in record.error
    assert server.stop() == 0


def test_stale_temp_files_of_interrupted_saves_are_removed_at_start(server_factory: Any, tmp_path: Path) -> None:
    stale = [tmp_path / ".xcron.xml.k3j9x_2a", tmp_path / ".xcron.xml.00000000"]
    kept = [
        tmp_path / ".xcron.xml.bak",  # not the writer's pattern (8 characters of [a-z0-9_])
        tmp_path / ".xcron.xml.ABCDEFGH",
        tmp_path / ".xcron.xml.abcdefghi",
        tmp_path / "xcron.xml.k3j9x_2a",
        tmp_path / "notes.txt",
    ]
    for path in stale + kept:
        path.write_bytes(b"<half a file")
    (tmp_path / ".xcron.xml.dir12345").mkdir()  # a directory of that shape is not ours either
    server = server_factory().start()
    assert [p.name for p in stale if p.exists()] == []
    assert [p.name for p in kept if not p.exists()] == []
    assert (tmp_path / ".xcron.xml.dir12345").is_dir()
    server.wait_for_log("interrupted save")
    assert server.stop() == 0


def test_malformed_bytes_to_reflection_are_invalid_argument_and_logged_at_most_once(server: ServerProcess) -> None:
    method = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    with grpc.insecure_channel(server.target) as channel:
        call = channel.stream_stream(method)  # no serializers: the bytes go as they are
        for _ in range(5):
            with pytest.raises(grpc.RpcError) as failed:
                list(call(iter([b"\xff\xff\xff"]), timeout=10))
            assert failed.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "could not be decoded" in (failed.value.details() or "")
        # A good request on the same service still works.
        good = ServerReflectionRequest(list_services="").SerializeToString()
        answers = list(call(iter([good]), timeout=10))
        assert answers and b"xcron.v1.JobService" in answers[0]
    server.wait_for_log("malformed request to " + method)
    assert server.stop() == 0
    assert server.log().count("malformed request") == 1
    assert "Traceback" not in server.log()


JOBS = {
    "test.tick": {},
    "test.fail": {},
    "test.spam": {"count": pb.ParameterValue(int_value=10)},
    "test.types": {"s": pb.ParameterValue(string_value="x"), "i": pb.ParameterValue(int_value=1)},
}


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.005, 0.01])
async def test_runs_refused_by_sigterm_leave_every_job_as_it_was(server_factory: Any, delay: float) -> None:
    """30 concurrent RunJob calls with SIGTERM among them: a job whose run was refused keeps its previous
    state, in memory and (after a restart) in the store; none is left RUNNING. The timing cannot be forced
    from outside; tests/core/test_reliability.py reproduces the race itself, deterministically."""
    server = server_factory().start()
    assert server.process is not None
    before: dict[str, tuple[int, str]] = {}
    accepted: set[str] = set()
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        with Client(server.target, timeout=20) as client:
            for job_id, parameters in JOBS.items():
                run = await stub.RunJob(pb.RunJobRequest(job_id=job_id, parameters=parameters), timeout=20)
                execution_id = run.execution.id

                def finished(execution_id: str = execution_id) -> bool:
                    return client.get_execution(execution_id).finished

                eventually(finished)
                job = (await stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=20)).job
                before[job_id] = (job.state, job.execution_id)

        async def run_one(job_id: str) -> None:
            try:
                response = await stub.RunJob(pb.RunJobRequest(job_id=job_id, parameters=JOBS[job_id]), timeout=20)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() in (
                    grpc.StatusCode.ABORTED,  # already running
                    grpc.StatusCode.FAILED_PRECONDITION,  # shutting down
                    grpc.StatusCode.UNAVAILABLE,  # gone
                    grpc.StatusCode.CANCELLED,
                ), exc
            else:
                accepted.add(response.execution.id)

        calls = [asyncio.create_task(run_one(list(JOBS)[i % len(JOBS)])) for i in range(30)]
        await asyncio.sleep(delay)  # the calls are on their way (a delay, not synchronisation: any is right)
        server.process.send_signal(signal.SIGTERM)
        await asyncio.gather(*calls)
    assert server.process.wait(60) == 0
    server.start()
    with grpc.insecure_channel(server.target) as sync_channel:
        sync_stub = pb_grpc.JobServiceStub(sync_channel)
        for job_id in JOBS:
            job = sync_stub.GetJob(pb.GetJobRequest(job_id=job_id), timeout=20).job
            assert job.state != pb.JOB_STATE_RUNNING, job
            if job.execution_id not in accepted:  # no run of it started: its state is the one before
                assert (job.state, job.execution_id) == before[job_id], (job_id, job, before[job_id])
    assert server.stop() == 0
