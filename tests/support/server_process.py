"""A real xcron server in a subprocess on a free loopback port; restartable on the same files."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

SUPPORT = Path(__file__).resolve().parent
READY = re.compile(r"xcron listening on (\S+):(\d+)")
HTTP_READY = re.compile(r"xcron http on (\S+):(\d+)")


@dataclass
class ServerProcess:
    """One `xcron-server` process; restartable on the same files."""

    workdir: Path
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    port: int = 0
    http_port: int = 0
    """The --http-listen port (Connect and the jobs panel), when the server was started with one."""
    output: list[str] = field(default_factory=list)
    _logged: threading.Condition = field(default_factory=threading.Condition)

    @property
    def schedule_file(self) -> Path:
        return self.workdir / "xcron.xml"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "xcron.server",
            "--listen", "127.0.0.1:0",
            "--schedule-file", str(self.schedule_file),
            "--data-dir", str(self.data_dir),
            "--jobs", "xcron_test_jobs",
            "--time-zone", "UTC",
            "--shutdown-grace", "5",
            *self.extra_args,
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]))
        self.output = []
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.process is not None and self.process.stdout is not None
            for line in self.process.stdout:
                with self._logged:
                    self.output.append(line)
                    self._logged.notify_all()
                http = HTTP_READY.search(line)
                if http:
                    self.http_port = int(http.group(2))
                match = READY.search(line)
                if match and not ready.is_set():
                    self.port = int(match.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError("xcron-server did not start:\n" + "".join(self.output))
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        return code

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return "".join(self.output)

    def wait_for_log(self, pattern: str, *, after: int = 0, timeout: float = 30.0) -> str:
        """Waits until the server logs a line matching `pattern` (among lines after index `after`)."""
        regex = re.compile(pattern)

        def found() -> str | None:
            return next((line for line in self.output[after:] if regex.search(line)), None)

        with self._logged:
            if not self._logged.wait_for(lambda: found() is not None, timeout):
                raise AssertionError(f"no log line matching {pattern!r}:\n{self.log()}")
            line = found()
            assert line is not None
            return line
