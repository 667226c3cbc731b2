"""SanteDB's side of xcron.xml, run for real: tests/santedb/SanteDbSide.cs compiled with Mono."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from requires import require

SOURCE = Path(__file__).resolve().parent.parent / "santedb" / "SanteDbSide.cs"


@dataclass(frozen=True)
class SanteDb:
    """Runs the compiled program; `zone` is the SanteDB host's zone (Mono honours TZ)."""

    exe: Path

    def run(self, *args: str | Path, zone: str = "UTC") -> str:
        result = subprocess.run(
            ["mono", str(self.exe), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "TZ": zone},
            check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"SanteDbSide {args[0]} failed ({result.returncode}):\n{result.stderr}")
        return result.stdout

    def write(self, path: Path, items: Sequence[str], *, zone: str = "UTC") -> bytes:
        """Serializes JobItemConfiguration items (see SanteDbSide.cs) the way SanteDB does; the bytes."""
        self.run("write", path, *items, zone=zone)
        return path.read_bytes()

    def resave(self, source: Path, target: Path, *, zone: str = "UTC") -> None:
        """XmlFileJobScheduleManager: loads `source` at start-up and saves its list over `target`."""
        self.run("resave", source, target, zone=zone)

    def dump(self, path: Path, *, zone: str = "UTC") -> list[str]:
        """What SanteDB's classes hold, a line per job and per schedule (fails if SanteDB cannot read it)."""
        return self.run("dump", path, zone=zone).splitlines()

    def applies(self, path: Path, type_name: str, local_times: Sequence[str], *, zone: str) -> list[str]:
        """The local times (yyyy-MM-ddTHH:mm:ss, in order) at which SanteDB's timer runs the job."""
        hits = []
        for line in self.run("applies", path, type_name, *local_times, zone=zone).splitlines():
            when, hit = line.split()
            if hit == "1":
                hits.append(when)
        return hits


def compile_santedb(folder: Path) -> SanteDb:
    """Compiles the program into `folder`; skips (fails in CI) without Mono."""
    require(
        shutil.which("mcs") is not None and shutil.which("mono") is not None,
        "Mono's mcs and mono (Debian mono-mcs, mono-runtime)",
    )
    exe = folder / "SanteDbSide.exe"
    subprocess.run(
        ["mcs", "-nologo", f"-out:{exe}", "-r:System.Xml.dll", "-r:System.Core.dll", str(SOURCE)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return SanteDb(exe)
