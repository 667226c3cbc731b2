"""What the benchmark scripts share: result lines, statistics, server subprocesses and worker processes."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psutil

ROOT = Path(__file__).resolve().parent.parent
EXIT_MISSED = 1
EXIT_ERROR = 3
_READY = re.compile(r"listening on (\S+):(\d+)")
_SPAWN = multiprocessing.get_context("spawn")


# -- results -------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the values; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def fmt_ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if math.isinf(seconds):
        return "inf"
    return f"{seconds * 1000:.1f} ms" if seconds < 10 else f"{seconds:.1f} s"


@dataclass
class Row:
    bench: str
    name: str
    passed: bool | None
    text: str
    figures: dict[str, float] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        return "INFO" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def line(self) -> str:
        return f"RESULT {self.bench}.{self.name} {self.verdict}: {self.text}"


class Report:
    """The rows of one benchmark script, printed as they come; `exit_code` is 1 if any target was missed."""

    def __init__(self, bench: str, json_path: Path | None = None) -> None:
        self.bench = bench
        self.rows: list[Row] = []
        self._json_path = json_path

    def row(self, name: str, text: str, passed: bool | None, **figures: float) -> Row:
        row = Row(self.bench, name, passed, text, dict(figures))
        self.rows.append(row)
        print(row.line(), flush=True)
        if self._json_path is not None:
            record = {
                "bench": row.bench,
                "row": row.name,
                "verdict": row.verdict,
                "text": row.text,
                "figures": row.figures,
                "time": time.time(),
            }
            with self._json_path.open("a") as out:
                out.write(json.dumps(record) + "\n")
        return row

    @staticmethod
    def note(text: str) -> None:
        print(f"  {text}", flush=True)

    @property
    def exit_code(self) -> int:
        return EXIT_MISSED if any(r.passed is False for r in self.rows) else 0


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes and durations (smoke tests)")
    p.add_argument("--json", type=Path, default=None, help="append each row's figures to this JSON-lines file")
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="run xcron under cProfile and write .prof files into this folder",
    )
    return p


def run_main(
    name: str, build: Callable[[], argparse.ArgumentParser], body: Callable[[argparse.Namespace], Report]
) -> None:
    """Parses the arguments, runs the benchmark, exits 0 (all met), 1 (a target missed) or 3 (error)."""
    args = build().parse_args()
    print(f"# {name}: {machine()}", flush=True)
    try:
        report = body(args)
    except Exception:
        traceback.print_exc()
        print(f"RESULT {name}.error FAIL: the benchmark failed (see the traceback above)", flush=True)
        sys.exit(EXIT_ERROR)
    sys.exit(report.exit_code)


def machine() -> str:
    import grpc

    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()}, grpcio {grpc.__version__}, "
        f"{platform.system()} {platform.release()}"
    )


# -- server subprocesses ---------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    """The environment of child processes: the repository root on PYTHONPATH, so `bench.*` imports."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


class ServerProcess:
    """A server in a subprocess that prints "... listening on HOST:PORT" once it serves."""

    def __init__(self, argv: Sequence[str], *, cwd: Path, name: str) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.name = name
        self.port = 0
        self.output: list[str] = []
        self._process: subprocess.Popen[str] | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self, timeout: float = 60.0) -> Self:
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self._process is not None and self._process.stdout is not None
            for line in self._process.stdout:
                self.output.append(line)
                match = _READY.search(line)
                if match and not ready.is_set():
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, name=f"{self.name}-output", daemon=True).start()
        if not ready.wait(timeout) or not self.port:
            self.stop()
            raise RuntimeError(f"{self.name} did not start:\n{''.join(self.output)}")
        return self

    def poll(self) -> int | None:
        """Its exit code, None while it runs."""
        return self._process.poll() if self._process is not None else None

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.pid).cpu_times()
        return float(times.user + times.system)

    def stop(self, timeout: float = 30.0) -> int | None:
        process = self._process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        return process.returncode

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def xcron_server(workdir: Path, *, profile: Path | None = None, jobs: Sequence[str] = ("bench.jobs",)) -> ServerProcess:
    """The real `python -m xcron.server`, loading the benchmark jobs (bench.jobs) and nothing else.

    XCRON_BENCH_SERVER_MODULE names another module to run instead (same arguments), e.g. a wrapper
    that patches a proposed change in, to measure it before and after in the same way.
    """
    module = os.environ.get("XCRON_BENCH_SERVER_MODULE", "xcron.server")
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = [sys.executable]
    if profile is not None:
        profile.parent.mkdir(parents=True, exist_ok=True)
        prefix += ["-m", "cProfile", "-o", str(profile.resolve())]
    argv = [
        *prefix,
        "-m", module,
        "--listen", "127.0.0.1:0",
        "--schedule-file", str(workdir / "xcron.xml"),
        "--data-dir", str(workdir / "data"),
        *(arg for module in jobs for arg in ("--jobs", module)),
        "--no-entry-points",
        "--time-zone", "UTC",
        "--shutdown-grace", "5",
        "--log-level", "WARNING",
    ]  # fmt: skip
    return ServerProcess(argv, cwd=workdir, name="xcron")


def bare_server(workdir: Path, *args: str) -> ServerProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "bench.bare", "--listen", "127.0.0.1:0", *args]
    return ServerProcess(argv, cwd=workdir, name="bare")


class RssSampler:
    """Samples a process's resident memory and CPU time every `interval` seconds in a thread."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self._process = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[float, int, float]] = []  # (time, rss bytes, cpu seconds)
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self._process.oneshot():
                    cpu = self._process.cpu_times()
                    self.samples.append((time.time(), int(self._process.memory_info().rss), cpu.user + cpu.system))
            except psutil.Error:
                return
            self._stop.wait(self._interval)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[int]:
        """RSS samples taken between two times (epoch seconds)."""
        return [rss for t, rss, _ in self.samples if start <= t <= end]

    def cpu_share(self, start: float, end: float) -> float:
        """CPU seconds per second (1.0 = one core busy) between two times."""
        inside = [(t, cpu) for t, _, cpu in self.samples if start <= t <= end]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return math.nan
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


# -- worker processes ------------------------------------------------------------------------------


@dataclass
class WorkerError:
    text: str


def _run_worker(target: Callable[..., None], conn: Connection, args: tuple[Any, ...]) -> None:
    try:
        target(conn, *args)
    except BaseException:
        conn.send(WorkerError(traceback.format_exc()))
    finally:
        conn.close()


class Workers:
    """Fresh-interpreter processes ("spawn": nothing of this process's gRPC state is inherited), each
    running `target(conn, *args)` and talking over a pipe: they answer each message the caller sends."""

    def __init__(self, target: Callable[..., None], args_list: Sequence[tuple[Any, ...]]) -> None:
        self._workers: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
        for args in args_list:
            parent, child = _SPAWN.Pipe()
            process = _SPAWN.Process(target=_run_worker, args=(target, child, args), daemon=True)
            process.start()
            child.close()
            self._workers.append((process, parent))

    def __len__(self) -> int:
        return len(self._workers)

    def send(self, messages: Sequence[Any]) -> None:
        """One message per worker, in order."""
        for (_, conn), message in zip(self._workers, messages, strict=True):
            conn.send(message)

    def send_all(self, message: Any) -> None:
        self.send([message] * len(self._workers))

    def receive(self, timeout: float) -> list[Any]:
        """One answer from each worker; raises if one failed or did not answer in time."""
        deadline = time.monotonic() + timeout
        answers = []
        for process, conn in self._workers:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"worker {process.pid} did not answer within {timeout:.0f} s")
            answer = conn.recv()
            if isinstance(answer, WorkerError):
                raise RuntimeError(f"worker {process.pid} failed:\n{answer.text}")
            answers.append(answer)
        return answers

    def close(self) -> None:
        for _, conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send(None)
        for process, conn in self._workers:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)
            conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible (larger shares first)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
