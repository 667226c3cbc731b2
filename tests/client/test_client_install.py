"""`pip install ./client` into a fresh virtual environment (no system site-packages): the library works
on its own, never needs the server, and `xcronctl` without the `cli` extra says what to install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client"


def run(*cmd: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    here = tmp_path_factory.mktemp("client-venv")
    source = here / "client"  # a copy: building in place would leave build/ in the work tree
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    root = here / "venv"
    created = run(sys.executable, "-m", "venv", root)  # without --system-site-packages
    assert created.returncode == 0, created.stderr
    installed = run(root / "bin" / "python", "-m", "pip", "install", "--quiet", source)
    assert installed.returncode == 0, installed.stderr
    yield root


def test_the_client_alone_imports_without_the_server_or_rich(venv: Path) -> None:
    python = venv / "bin" / "python"
    probe = (
        "import importlib.util as u, xcron.client, xcron.v1.job_service_pb2;"
        "print(u.find_spec('xcron.server') is None, u.find_spec('rich') is None, xcron.client.Client.__name__)"
    )
    out = run(python, "-c", probe)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True", "Client"]


@pytest.mark.parametrize("how", ["script", "module"])
def test_xcronctl_without_the_cli_extra_says_what_to_install_in_one_line(venv: Path, how: str) -> None:
    cmd = [venv / "bin" / "xcronctl"] if how == "script" else [venv / "bin" / "python", "-m", "xcron.ctl"]
    out = run(*cmd, "jobs")
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith("xcronctl: ") and "pip install 'xcron-client[cli]'" in lines[0]


def test_with_the_cli_extra_xcronctl_runs(venv: Path) -> None:  # last: it adds rich to the shared venv
    installed = run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", f"{venv.parent / 'client'}[cli]")
    assert installed.returncode == 0, installed.stderr
    out = run(venv / "bin" / "xcronctl", "--help")
    assert out.returncode == 0, out.stderr
    assert "usage: xcronctl" in out.stdout
