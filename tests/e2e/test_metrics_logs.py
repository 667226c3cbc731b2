"""Prometheus metrics scraped from a real server, and structured logs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from requires import require
from waiting import eventually

from xcron.client import Client, NotFoundError
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

JOB_SERVICE = "xcron.v1.JobService"


def metrics_url(server: Any) -> str:
    port = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", server.wait_for_log("metrics on http"))
    assert port is not None
    return f"http://127.0.0.1:{port.group(1)}/metrics"


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = fetch(url)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_counts_runs_rpcs_and_watchers(server_factory: Any) -> None:
    server = server_factory(extra_args=["--metrics-listen", "127.0.0.1:0"]).start()
    url = metrics_url(server)
    with Client(server.target, timeout=20) as client:
        client.run_and_wait("test.tick", timeout=20)
        client.run_and_wait("test.fail", timeout=20)
        with pytest.raises(NotFoundError):
            client.get_job("nope")
        stream = client.watch_jobs()
        next(stream)
        metrics = scrape(url)
        assert metrics[("xcron_runs_started_total", (("job_id", "test.tick"), ("trigger", "manual")))] == 1
        assert metrics[("xcron_runs_finished_total", (("job_id", "test.fail"), ("outcome", "aborted")))] == 1
        assert metrics[("xcron_run_duration_seconds_count", (("job_id", "test.tick"),))] == 1
        assert metrics[("xcron_rpcs_total", (("code", "NOT_FOUND"), ("method", f"{JOB_SERVICE}/GetJob")))] == 1
        assert metrics[("xcron_rpcs_total", (("code", "OK"), ("method", f"{JOB_SERVICE}/RunJob")))] == 2
        assert metrics[("xcron_watchers", ())] >= 1
        assert metrics[("xcron_running_jobs", ())] == 0
        stream.close()
        eventually(lambda: scrape(url)[("xcron_watchers", ())] == 0)  # nothing leaks when a client leaves


def test_calls_on_the_http_port_count_like_grpc_calls(server_factory: Any) -> None:
    """Connect calls (curl, the panel) are RPCs too: counted under the same method and gRPC code names."""
    server = server_factory(extra_args=["--metrics-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"]).start()
    url = metrics_url(server)

    def post(method: str, body: dict[str, Any]) -> int:
        request = urllib.request.Request(
            f"{server.http_url}/{JOB_SERVICE}/{method}",
            data=json.dumps(body).encode(),
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code

    assert post("GetJob", {"jobId": "test.tick"}) == 200
    assert post("GetJob", {"jobId": "nope"}) == 404
    assert post("GetJob", {"jobId": ""}) == 400
    metrics = scrape(url)
    get_job = f"{JOB_SERVICE}/GetJob"
    assert metrics[("xcron_rpcs_total", (("code", "OK"), ("method", get_job)))] == 1
    assert metrics[("xcron_rpcs_total", (("code", "NOT_FOUND"), ("method", get_job)))] == 1
    assert metrics[("xcron_rpcs_total", (("code", "INVALID_ARGUMENT"), ("method", get_job)))] == 1


RESERVED_BY_PROMETHEUS = {"job", "instance"}  # target labels a scrape attaches; an exported one is renamed


def test_labels_follow_prometheus_naming_and_promtool_accepts_the_exposition(server_factory: Any) -> None:
    server = server_factory(extra_args=["--metrics-listen", "127.0.0.1:0"]).start()
    url = metrics_url(server)
    with Client(server.target, timeout=20) as client:
        client.run_and_wait("test.tick", timeout=20)
    text = fetch(url)
    families = list(text_string_to_metric_families(text))
    labels = {name for family in families for sample in family.samples for name in sample.labels}
    assert "job_id" in labels and not labels & RESERVED_BY_PROMETHEUS
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in labels)
    for family in families:
        assert family.name.startswith("xcron_") and family.documentation, family.name
        if family.type == "counter" and family.samples:
            assert any(s.name == f"{family.name}_total" for s in family.samples), family.name
    require(shutil.which("promtool") is not None, "promtool (Debian prometheus)")
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == "", checked.stdout + checked.stderr  # no lint


def test_metrics_only_at_metrics_and_404_elsewhere(server_factory: Any) -> None:
    server = server_factory(extra_args=["--metrics-listen", "127.0.0.1:0"]).start()
    url = metrics_url(server)
    assert "xcron_watchers" in fetch(url)
    assert "xcron_watchers" in fetch(url + "?name[]=xcron_watchers")
    base = url.removesuffix("/metrics")
    for path in ("/", "/favicon.ico", "/metricsx", "/metrics/", "/health"):
        with pytest.raises(urllib.error.HTTPError) as missing:
            fetch(base + path)
        assert missing.value.code == 404, path


def test_rpcs_count_full_method_names_and_calls_the_client_ended(server_factory: Any) -> None:
    server = server_factory(extra_args=["--metrics-listen", "127.0.0.1:0"]).start()
    url = metrics_url(server)
    with grpc.insecure_channel(server.target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=20)
        stub = pb_grpc.JobServiceStub(channel)
        with pytest.raises(grpc.RpcError) as expired:  # no change comes: the client's deadline ends the stream
            for _ in stub.WatchJobs(pb.WatchJobsRequest(job_ids=["test.tick"]), timeout=1.0):
                pass
        assert expired.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
        stream = stub.WatchJobs(pb.WatchJobsRequest(job_ids=["test.tick"]), timeout=20)
        next(stream)  # the snapshot; then the client walks away
        stream.cancel()

    def counted(method: str, code: str) -> float:
        return scrape(url).get(("xcron_rpcs_total", (("code", code), ("method", method))), 0)

    eventually(lambda: counted(f"{JOB_SERVICE}/WatchJobs", "DEADLINE_EXCEEDED") == 1)
    eventually(lambda: counted(f"{JOB_SERVICE}/WatchJobs", "CANCELLED") == 1)
    assert counted(f"{JOB_SERVICE}/WatchJobs", "OK") == 0
    assert counted("grpc.health.v1.Health/Check", "OK") >= 1
    methods = {dict(labels)["method"] for (name, labels) in scrape(url) if name == "xcron_rpcs_total"}
    assert all("/" in method and "." in method.split("/")[0] for method in methods), methods


def test_json_logs_carry_job_and_execution_ids(server_factory: Any) -> None:
    server = server_factory(extra_args=["--log-format", "json"]).start()
    with Client(server.target, timeout=20) as client:
        run = client.run_and_wait("test.fail", {"message": "bad"}, timeout=20)
    line = server.wait_for_log(r'"message": "run failed')
    entry = json.loads(line)
    assert entry["job_id"] == "test.fail" and entry["execution_id"] == run.id
    assert entry["level"] == "WARNING" and "RuntimeError: bad" in entry["message"]
    for raw in server.output:
        if raw.startswith("{"):
            json.loads(raw)  # every log line is one JSON object
