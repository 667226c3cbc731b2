"""``xcronctl`` and ``python -m xcron.ctl``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# gRPC's C core logs handshake and connection details to stderr; a command line reports the error itself.
# This must happen before grpc is imported. Setting GRPC_VERBOSITY yourself still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

CLI_DEPENDENCIES = frozenset({"rich"})
"""The top-level modules of the `cli` extra in client/pyproject.toml."""


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point: the exit code of one command."""
    try:
        from ._app import main as run
    except ModuleNotFoundError as missing:
        if (missing.name or "").partition(".")[0] not in CLI_DEPENDENCIES:
            raise
        print(
            f"xcronctl: the command line needs the cli extra ({missing.name} is not installed): "
            "pip install 'xcron-client[cli]'",
            file=sys.stderr,
        )
        return 2
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
