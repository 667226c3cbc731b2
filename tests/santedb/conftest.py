"""SanteDB's side of xcron.xml, compiled once per session (see tests/support/santedb_side.py)."""

from __future__ import annotations

import pytest
from santedb_side import SanteDb, compile_santedb


@pytest.fixture(scope="session")
def santedb(tmp_path_factory: pytest.TempPathFactory) -> SanteDb:
    return compile_santedb(tmp_path_factory.mktemp("santedb"))
