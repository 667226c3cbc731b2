"""``xcronctl`` and ``python -m xcron.ctl``."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

# gRPC's C core logs handshake and connection details to stderr; a command line reports the error itself.
# This must happen before grpc is imported. Setting GRPC_VERBOSITY yourself still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from ._app import main as run


def main(argv: Sequence[str] | None = None) -> int:
    """The console script's entry point: the exit code of one command."""
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
