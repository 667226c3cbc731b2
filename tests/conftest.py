"""Shared fixtures: a real xcron server in a subprocess on a free loopback port."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from server_process import ServerProcess

__all__ = ["ServerProcess"]


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    class Factory(ServerProcess):
        def __init__(self, workdir: Path = tmp_path, extra_args: list[str] | None = None) -> None:
            super().__init__(workdir=workdir, extra_args=extra_args or [])
            started.append(self)

    yield Factory
    for server in started:
        server.kill()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory().start()
