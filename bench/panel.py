"""The jobs panel and the Connect port (`python -m bench.panel`), in headless Chromium (Selenium):

- first meaningful paint: from navigation start to the frame that paints the table of 1,000 jobs
  (the page's `xcron:jobs-painted` mark), target < 1 s;
- state change -> painted: 1,000 jobs each reporting progress 10 times a second; each status text
  carries the server's publish time, and a MutationObserver in the page notes when the new text is in
  the DOM (the frame that paints it follows). p99 target 250 ms; main-thread tasks over 50 ms (the
  Long Tasks API) are counted, target 0;
- Connect JSON unary calls/s against gRPC calls/s on the same server and method (GetJob), in the same
  run, same concurrency; target ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import grpc
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

from bench.common import Report, ServerProcess, fmt_ms, parser, percentile, run_main
from bench.panel_jobs import JOB_COUNT, job_id
from xcron.v1 import job_service_pb2 as pb
from xcron.v1 import job_service_pb2_grpc as pb_grpc

_HTTP = re.compile(r"xcron http on (\S+):(\d+)")


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__ or "")
    p.add_argument("--seconds", type=float, default=15.0, help="how long the jobs change (%(default)s)")
    p.add_argument("--rate", type=float, default=10.0, help="changes per second per job (%(default)s)")
    p.add_argument("--calls", type=float, default=5.0, help="seconds of unary calls per protocol (%(default)s)")
    return p


def server(workdir: Path) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable, "-m", "xcron.server",
        "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
        "--schedule-file", str(workdir / "xcron.xml"), "--data-dir", str(workdir / "data"),
        "--jobs", "bench.panel_jobs", "--no-entry-points", "--time-zone", "UTC",
        "--max-running", str(JOB_COUNT + 10), "--shutdown-grace", "2", "--log-level", "WARNING",
    ]  # fmt: skip
    return ServerProcess(argv, cwd=workdir, name="xcron")


def http_port(process: ServerProcess) -> int:
    for line in process.output:
        if match := _HTTP.search(line):
            return int(match.group(2))
    raise RuntimeError("the server printed no HTTP port")


def browser(profile: str) -> WebDriver:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver", env={**os.environ, "TZ": "UTC"}), options=options)


OBSERVE = """
window.lat = []; window.offscreenLat = []; window.longTasks = [];
const visible = new Set([...document.querySelectorAll('#jobs tbody tr')].filter((tr) => {
  const r = tr.getBoundingClientRect(); return r.bottom > 0 && r.top < innerHeight;
}));
new PerformanceObserver((list) => { for (const e of list.getEntries()) window.longTasks.push(e.duration); })
  .observe({type: 'longtask'});
const body = document.querySelector('#jobs tbody');
new MutationObserver((records) => {
  const now = performance.timeOrigin + performance.now();
  for (const r of records) {
    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
    if (!el || !el.classList.contains('status-text')) continue;
    const parts = el.textContent.split(' ');
    if (parts.length !== 2) continue;
    (visible.has(el.closest('tr')) ? window.lat : window.offscreenLat).push(now - Number(parts[1]) / 1e6);
  }
}).observe(body, {subtree: true, childList: true, characterData: true});
"""


async def run_all(target: str, updates: int, rate: float) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        params = {"updates": pb.ParameterValue(int_value=updates), "rate": pb.ParameterValue(double_value=rate)}
        for start in range(0, JOB_COUNT, 100):
            await asyncio.gather(
                *(stub.RunJob(pb.RunJobRequest(job_id=job_id(i), parameters=params)) for i in range(start, start + 100))
            )


async def throughput(
    xcron: ServerProcess, http_url: str, seconds: float, concurrency: int = 8
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(gRPC calls/s, server CPU s per call), (Connect JSON calls/s, server CPU s per call)."""
    from connectrpc.compat import google_protobuf_json_codec

    from xcron.server.api.connect_gen.job_service_connect import JobServiceClient

    request = pb.GetJobRequest(job_id=job_id(1))

    async def loop(call: object) -> int:
        n = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await call(request)  # type: ignore[operator]
            n += 1
        return n

    async with grpc.aio.insecure_channel(xcron.target) as channel:
        stub = pb_grpc.JobServiceStub(channel)
        await stub.GetJob(request)
        cpu = xcron.cpu_seconds()
        grpc_calls = sum(await asyncio.gather(*(loop(stub.GetJob) for _ in range(concurrency))))
        grpc_cpu = (xcron.cpu_seconds() - cpu) / grpc_calls
    async with JobServiceClient(http_url, codec=google_protobuf_json_codec()) as connect:
        await connect.get_job(request)
        cpu = xcron.cpu_seconds()
        connect_calls = sum(await asyncio.gather(*(loop(connect.get_job) for _ in range(concurrency))))
        connect_cpu = (xcron.cpu_seconds() - cpu) / connect_calls
    return (grpc_calls / seconds, grpc_cpu), (connect_calls / seconds, connect_cpu)


def bench(args: argparse.Namespace) -> Report:
    report = Report("panel", args.json)
    seconds = 3.0 if args.quick else args.seconds
    if not (Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()):
        raise RuntimeError("needs Debian's chromium and chromium-driver")
    work = Path(tempfile.mkdtemp(prefix="xcron-bench-panel-"))
    profile = tempfile.mkdtemp(prefix="xcron-bench-chromium-")
    with server(work / "xcron") as xcron:
        url = f"http://127.0.0.1:{http_port(xcron)}"
        driver = browser(profile)
        try:
            paints = []
            for _ in range(1 if args.quick else 3):
                driver.get(url + "/")
                deadline = time.monotonic() + 30
                mark: float | None = None
                while mark is None and time.monotonic() < deadline:
                    mark = driver.execute_script(
                        "const m = performance.getEntriesByName('xcron:jobs-painted')[0]; return m && m.startTime"
                    )
                    time.sleep(0.05)
                rows = driver.execute_script("return document.querySelectorAll('#jobs tbody tr').length")
                assert rows == JOB_COUNT, rows
                assert mark is not None, "the page never painted the table"
                paints.append(mark / 1000)
            paint = max(paints)
            report.row(
                "first_paint",
                f"table of {JOB_COUNT} jobs painted {fmt_ms(paint)} after navigation start "
                f"(worst of {len(paints)} loads, the first one cold: {', '.join(fmt_ms(p) for p in paints)}; "
                "target < 1 s)",
                paint < 1.0,
                seconds=paint,
            )
            driver.execute_script(OBSERVE)
            updates = int(seconds * args.rate)
            asyncio.run(run_all(xcron.target, updates, args.rate))
            time.sleep(seconds + 1)  # the jobs run for `seconds`; the page records as they go
            lat = [v / 1000 for v in driver.execute_script("return window.lat")]
            offscreen = [v / 1000 for v in driver.execute_script("return window.offscreenLat")]
            long_tasks = driver.execute_script("return window.longTasks")
            p50, p99 = percentile(lat, 50), percentile(lat, 99)
            offered = JOB_COUNT * args.rate
            report.row(
                "offscreen_rows",
                f"rows scrolled out of view are updated at most once a second each: {len(offscreen)} updates, "
                f"p50 {fmt_ms(percentile(offscreen, 50))}, p99 {fmt_ms(percentile(offscreen, 99))} after publication",
                None,
                p50=percentile(offscreen, 50),
                p99=percentile(offscreen, 99),
            )
            report.row(
                "change_to_paint",
                f"{JOB_COUNT} jobs x {args.rate:g}/s ({offered:.0f} changes/s offered); the rows on screen got "
                f"{len(lat)} changes in {seconds:g} s (the rest coalesced), p50 {fmt_ms(p50)}, "
                f"p99 {fmt_ms(p99)} (target p99 <= 250 ms); {len(long_tasks)} main-thread tasks > 50 ms "
                f"(longest {max(long_tasks, default=0):.0f} ms; target 0)",
                p99 <= 0.25 and not long_tasks,
                p50=p50,
                p99=p99,
                long_tasks=len(long_tasks),
                painted_per_second=len(lat) / seconds,
            )
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
        (grpc_rate, grpc_cpu), (connect_rate, connect_cpu) = asyncio.run(
            throughput(xcron, url, 1.0 if args.quick else args.calls)
        )
        ratio = connect_rate / grpc_rate
        report.row(
            "connect_vs_grpc",
            f"GetJob, 8 concurrent callers in one client process (grpc.aio; connectrpc's client, JSON): "
            f"gRPC {grpc_rate:.0f}/s, Connect JSON {connect_rate:.0f}/s, ratio {ratio:.2f} (target >= 0.5); "
            f"server CPU per call {grpc_cpu * 1e6:.0f} us vs {connect_cpu * 1e6:.0f} us "
            f"(ratio {grpc_cpu / connect_cpu:.2f})",
            ratio >= 0.5,
            grpc=grpc_rate,
            connect=connect_rate,
            ratio=ratio,
            grpc_cpu_per_call=grpc_cpu,
            connect_cpu_per_call=connect_cpu,
        )
    shutil.rmtree(work, ignore_errors=True)
    return report


if __name__ == "__main__":
    run_main("panel", build_parser, bench)
