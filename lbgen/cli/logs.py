"""Logging options every command takes, before or after its name: `--log-level`, `--log-format`.

`--log-format json` writes one JSON object per line for log shippers (journald → Loki, Vector,
Fluent Bit): stdlib `logging` and a small formatter, no dependency for a dozen lines.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEFAULT_LEVEL, DEFAULT_FORMAT = "info", "text"


def add_logging_arguments(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options on `parser`. Only the top parser has defaults: a sub-command's copy is
    `SUPPRESS`ed when absent, so `lbgen --log-level debug watch` is not reset by `watch`'s parser."""
    group = parser.add_argument_group("logging")
    group.add_argument("--log-level", type=str.lower, choices=LEVELS, metavar="LEVEL",
                       default=DEFAULT_LEVEL if top else argparse.SUPPRESS,
                       help=f"{', '.join(LEVELS)}; any case (default: {DEFAULT_LEVEL})")
    group.add_argument("--log-format", type=str.lower, choices=FORMATS, metavar="FORMAT",
                       default=DEFAULT_FORMAT if top else argparse.SUPPRESS,
                       help="text, or json: one object per line for log shippers (default: text)")


class JsonFormatter(logging.Formatter):
    """`{"time": "2026-01-02T03:04:05.678Z", "level": "info", "logger": ..., "message": ...}`,
    plus `exception` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        entry: dict[str, Any] = {
            "time": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Root logging to stderr at `level`, as text or JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler])
