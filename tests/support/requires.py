"""One rule for tests that need something outside Python: on a developer's machine they skip, naming what is
missing; in CI (`CI` set) the missing part is a failure, because CI installs everything (`.ci/run`)."""

from __future__ import annotations

import os

import pytest


def require(available: bool, what: str) -> None:
    """Skips (or, in CI, fails) the calling test unless `available`; `what` names the missing part."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide {what} (scripts/install-system-packages.sh installs it)")
    pytest.skip(f"needs {what}")
