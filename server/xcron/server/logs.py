"""Log output: plain text by default, one JSON object per line with --log-format json. Every line
logged about a run carries its job id and execution id (as `extra` or through JobContext.logger)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

RUN_FIELDS = ("job_id", "execution_id")


class _RunIds(logging.Filter):
    """Renders the run ids for the plain format; lines about no run get none."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = [f"{name.split('_')[0]}={getattr(record, name)}" for name in RUN_FIELDS if hasattr(record, name)]
        record.run_ids = f" [{' '.join(ids)}]" if ids else ""
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in RUN_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str = "INFO", fmt: str = "plain") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RunIds())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s%(run_ids)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
