from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from core_harness import Harness


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp=tmp_path)
    yield h
    if h.manager is not None:
        await h.stop()
