"""Log lines that anyone on the network can trigger, at most one per interval (and a count of the rest)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

DEFAULT_INTERVAL = 60.0


class LogThrottle:
    """At most one line per `interval` seconds per key; the line says how many were held back since."""

    MAX_KEYS = 10_000

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = DEFAULT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # key -> (when last logged, held back since)
        self._lock = threading.Lock()

    def warning(self, key: str, message: str, *args: object) -> bool:
        """Logs `message` (with ", N more since" when lines were held back) unless `key` logged within
        the interval; returns whether it logged."""
        now = self._clock()
        with self._lock:
            last, held = self._last.get(key, (float("-inf"), 0))
            if now - last < self.interval:
                self._last[key] = (last, held + 1)
                return False
            if len(self._last) >= self.MAX_KEYS:
                self._last.clear()  # bounded memory, whoever sends
            self._last[key] = (now, 0)
        suffix = f" ({held} more since the last such line)" if held else ""
        self._logger.warning(message + suffix, *args)
        return True
