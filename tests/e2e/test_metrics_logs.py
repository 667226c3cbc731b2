"""Prometheus metrics scraped from a real server, and structured logs."""

from __future__ import annotations

import json
import re
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import eventually

from xcron.client import Client, NotFoundError


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_endpoint_counts_runs_rpcs_and_watchers(server_factory: Any) -> None:
    server = server_factory(extra_args=["--metrics-listen", "127.0.0.1:0"]).start()
    port = re.search(r"metrics on http://[\d.]+:(\d+)/metrics", server.wait_for_log("metrics on http"))
    assert port is not None
    url = f"http://127.0.0.1:{port.group(1)}/metrics"
    with Client(server.target, timeout=20) as client:
        client.run_and_wait("test.tick", timeout=20)
        client.run_and_wait("test.fail", timeout=20)
        with pytest.raises(NotFoundError):
            client.get_job("nope")
        stream = client.watch_jobs()
        next(stream)
        metrics = scrape(url)
        assert metrics[("xcron_runs_started_total", (("job", "test.tick"), ("trigger", "manual")))] == 1
        assert metrics[("xcron_runs_finished_total", (("job", "test.fail"), ("outcome", "aborted")))] == 1
        assert metrics[("xcron_run_duration_seconds_count", (("job", "test.tick"),))] == 1
        assert metrics[("xcron_rpcs_total", (("code", "NOT_FOUND"), ("method", "GetJob")))] == 1
        assert metrics[("xcron_rpcs_total", (("code", "OK"), ("method", "RunJob")))] == 2
        assert metrics[("xcron_watchers", ())] >= 1
        assert metrics[("xcron_running_jobs", ())] == 0
        stream.close()
        eventually(lambda: scrape(url)[("xcron_watchers", ())] == 0)  # nothing leaks when a client leaves


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
