"""Logging for the daemon: stderr, one line per event, ready for journald.

- ``log_format = "text"``: ``2025-01-01 12:00:00 INFO bridge.dispatcher: answered
  platform=telegram conversation=42``. Values passed with ``extra={...}`` are
  appended as ``key=value``. Under journald (``JOURNAL_STREAM`` names our
  stderr) the timestamp is left out, since journald adds its own, and each line
  starts with a ``<N>`` syslog priority so that ``journalctl -p warning`` works.
- ``log_format = "json"``: one JSON object per line (``ts``, ``level``,
  ``logger``, ``message``, the ``extra`` values, ``exc`` for a traceback).

Secrets: the code never logs a token, and `RedactSecrets` is the safety net
behind that rule. It rewrites anything that looks like a Telegram bot token,
a Slack token or a bearer credential before a record is formatted. The SDKs'
HTTP loggers are turned down to WARNING: httpx logs every request URL at INFO,
and a Telegram Bot API URL contains the bot token.

Message text is logged only at DEBUG (that is the callers' rule).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import traceback
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

from bridge.config import DaemonConfig

#: What a secret looks like, wherever it appears in a log line.
_SECRET_PATTERNS = [
    # Telegram bot token "123456789:AA..." (also inside .../bot<token>/getMe URLs)
    re.compile(r"(?<![0-9])\d{5,}:[A-Za-z0-9_-]{30,}"),
    # Slack bot/user/config tokens and app-level tokens
    re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+"),
    re.compile(r"\bxapp-[A-Za-z0-9-]+"),
    # thinnest platform keys, and any bearer credential in a header dump
    re.compile(r"\bthns_sk_[A-Za-z0-9_-]+"),
    re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]+"),
    # thinnest agent keys
    re.compile(r"\bak_[A-Za-z0-9_]{16,}"),
    # Slack's Socket Mode URL carries a short-lived ticket; slack_sdk logs the URL
    # at ERROR when a connection fails.
    re.compile(r"(?<=ticket=)[^&\s'\"]+"),
]
REDACTED = "[redacted]"

#: Loggers that would print request URLs (with a Telegram token in them) or
#: chatter at INFO.
NOISY_LOGGERS = (
    "httpx",
    "httpcore",
    "hpack",
    "aiohttp.access",
    "telegram",
    "telegram.ext",
    "slack_bolt",
    "slack_sdk",
    "websockets",
    "aiosqlite",
    "sqlalchemy.engine",
    "alembic",
)

#: Attributes every LogRecord has; anything else came in through ``extra=``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName"}
)


def redact(text: str) -> str:
    """``text`` with everything that looks like a token replaced by ``[redacted]``."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(REDACTED, text)
    return text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message, extra values and traceback through `redact`.

    Attached to the handler, so it sees every record, whatever logger it came
    from (filters on a logger do not apply to its children's records).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in _extras(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}


def _priority(levelno: int) -> int:
    # syslog priorities: 2 crit, 3 err, 4 warning, 6 info, 7 debug
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class TextFormatter(logging.Formatter):
    def __init__(self, *, journald: bool) -> None:
        fmt = "%(levelname)s %(name)s: %(message)s"
        super().__init__(fmt if journald else "%(asctime)s " + fmt, "%Y-%m-%d %H:%M:%S")
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            head, sep, tail = line.partition("\n")
            pairs = " ".join(f"{k}={_scalar(v)}" for k, v in extras.items())
            line = f"{head} {pairs}{sep}{tail}"
        if self.journald:
            line = f"<{_priority(record.levelno)}>{line}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False)


def _scalar(value: object) -> str:
    text = str(value)
    return json.dumps(text) if (not text or any(c.isspace() for c in text)) else text


def stream_is_journald(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal stream systemd connected us to
    (``JOURNAL_STREAM=<device>:<inode>`` names it; see systemd.exec(5))."""
    value = environ.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return st.st_dev == int(device) and st.st_ino == int(inode)


def setup_logging(
    config: DaemonConfig,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as configured; idempotent:
    replaces the handler a previous call installed. Returns the handler."""
    out = sys.stderr if stream is None else stream
    env = os.environ if environ is None else environ
    handler = logging.StreamHandler(out)
    handler.set_name("agent-bridge")
    if config.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(journald=stream_is_journald(out, env)))
    handler.addFilter(RedactSecrets())

    root = logging.getLogger()
    for old in list(root.handlers):
        if old.get_name() == "agent-bridge":
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(config.log_level.upper())
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    return handler


class ThrottledLog:
    """Logs a recurring event at most once per ``interval`` seconds per reason,
    with the count of those held back since the last line. For refused HTTP
    requests: a scanner or a misconfigured proxy must not flood the journal.

    Example::

        refused = ThrottledLog(log, "Slack request refused")
        refused.note("bad signature", remote=request.remote)
        # WARNING Slack request refused: bad signature (from 10.0.0.7; 41 more since the last line)
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        interval: float = 60.0,
        level: int = logging.WARNING,
        clock: Any = None,
    ) -> None:
        import time

        self._log = logger
        self._what = what
        self._interval = interval
        self._level = level
        self._clock = clock if clock is not None else time.monotonic
        #: reason -> (time of the last line, events held back since)
        self._state: dict[str, tuple[float, int]] = {}

    def note(self, reason: str, *, remote: str | None = None) -> bool:
        """Count one event; log it unless one with this reason was logged less
        than ``interval`` ago. Returns whether a line was written."""
        now = self._clock()
        last, held = self._state.get(reason, (None, 0))
        if last is not None and now - last < self._interval:
            self._state[reason] = (last, held + 1)
            return False
        self._state[reason] = (now, 0)
        origin = f"from {remote}" if remote else ""
        more = f"{held} more since the last line" if held else ""
        detail = "; ".join(part for part in (origin, more) if part)
        self._log.log(self._level, "%s: %s%s", self._what, reason, f" ({detail})" if detail else "")
        return True
