"""Logging: human-readable lines by default, JSON lines with ``--log-format json``."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str, option=orjson.OPT_SERIALIZE_NUMPY).decode()


#: Characters that would end a log line or move the cursor: C0 controls (newline, carriage return,
#: escape ...), DEL, C1 controls and the Unicode line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _escaped(char: re.Match[str]) -> str:
    code = ord(char.group())
    return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(
        char.group(), f"\\x{code:02x}" if code < 256 else f"\\u{code:04x}"
    )


class HumanFormatter(logging.Formatter):
    """``time LEVEL logger: message``, one line per record: control characters in the message
    (a label value from a metric, say, with a newline and a forged record after it) are escaped,
    so every line the log shows is one the agent wrote. A traceback follows on its own lines."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The line, with the message's control characters escaped."""
        record.message = _CONTROL.sub(_escaped, record.message)
        return super().formatMessage(record)


def setup_logging(
    fmt: Literal["human", "json"] = "human", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Configure the root logger once for the process."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(HumanFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # kafka-python logs every reconnect attempt at WARNING/ERROR; the agent reports those itself
    logging.getLogger("kafka").setLevel(max(logging.getLevelName(level), logging.ERROR))
