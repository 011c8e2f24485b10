"""Logging: one line per event, JSON on demand, journald-aware, never a token."""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path

import pytest

from bridge.config import DaemonConfig
from bridge.logs import setup_logging, stream_is_journald

TELEGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"
SLACK_BOT = "xoxb-1111111111-2222222222-abcdefABCDEF123456"
SLACK_APP = "xapp-1-A0123456789-1234567890123-abcdef0123456789"

pytestmark = pytest.mark.usefixtures("restore_logging")


def configure(**values: object) -> io.StringIO:
    stream = io.StringIO()
    setup_logging(DaemonConfig.model_validate(values), stream=stream, environ={})
    return stream


def test_text_lines_carry_level_logger_and_extra_ids() -> None:
    stream = configure()
    logging.getLogger("bridge.dispatcher").info(
        "answered", extra={"platform": "telegram", "conversation": 42}
    )
    line = stream.getvalue().strip()
    assert line.endswith("INFO bridge.dispatcher: answered platform=telegram conversation=42")
    assert line[:4].isdigit()  # a timestamp outside journald


def test_json_format_is_one_object_per_line() -> None:
    stream = configure(log_format="json")
    log = logging.getLogger("adapters.telegram")
    log.warning("send failed for %s", "chat 7", extra={"platform": "telegram", "chat": "7"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("handler crashed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["level"] == "warning"
    assert first["logger"] == "adapters.telegram"
    assert first["message"] == "send failed for chat 7"
    assert first["platform"] == "telegram" and first["chat"] == "7"
    assert "ts" in first
    assert "ValueError: boom" in second["exc"]


def test_level_comes_from_the_config() -> None:
    stream = configure(log_level="warning")
    logging.getLogger("bridge.daemon").info("hidden")
    logging.getLogger("bridge.daemon").warning("shown")
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


def test_tokens_are_redacted_everywhere() -> None:
    stream = configure(log_level="debug")
    log = logging.getLogger("some.sdk")
    log.info("GET https://api.telegram.org/bot%s/getUpdates", TELEGRAM_TOKEN)
    log.info("auth with " + SLACK_BOT + " and " + SLACK_APP)
    log.info("headers", extra={"authorization": "Bearer sk-live-abcdef0123456789"})
    log.error("failed to connect to wss://wss.slack.com/link/?ticket=5f3a9c0e-tkt&app_id=A1")
    log.info("agent key ak_live_0123456789abcdef rejected")
    try:
        raise RuntimeError(f"connect failed for https://api.telegram.org/bot{TELEGRAM_TOKEN}/getMe")
    except RuntimeError:
        log.exception("request failed")
    out = stream.getvalue()
    for secret in (
        TELEGRAM_TOKEN,
        SLACK_BOT,
        SLACK_APP,
        "sk-live-abcdef0123456789",
        "5f3a9c0e-tkt",
        "ak_live_0123456789abcdef",
    ):
        assert secret not in out
    assert out.count("[redacted]") >= 7
    assert "ticket=[redacted]&app_id=A1" in out
    assert "https://api.telegram.org/bot[redacted]/getUpdates" in out


def test_noisy_sdk_loggers_are_turned_down() -> None:
    stream = configure(log_level="debug")
    logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot.../getMe")
    logging.getLogger("bridge.daemon").debug("kept")
    assert "HTTP Request" not in stream.getvalue()
    assert "kept" in stream.getvalue()


def test_setup_twice_replaces_its_handler() -> None:
    configure()
    stream = configure()
    logging.getLogger("bridge.daemon").warning("once")
    assert stream.getvalue().count("once") == 1
    ours = [h for h in logging.getLogger().handlers if h.get_name() == "agent-bridge"]
    assert len(ours) == 1


def test_journald_lines_have_a_priority_and_no_timestamp(tmp_path: Path) -> None:
    path = tmp_path / "stderr.log"
    with path.open("w") as stream:
        st = os.fstat(stream.fileno())
        environ = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stream_is_journald(stream, environ)
        setup_logging(DaemonConfig(), stream=stream, environ=environ)
        logging.getLogger("bridge.daemon").warning("disk is slow")
        logging.getLogger("bridge.daemon").error("database gone")
    lines = path.read_text().splitlines()
    assert lines == [
        "<4>WARNING bridge.daemon: disk is slow",
        "<3>ERROR bridge.daemon: database gone",
    ]


def test_journal_stream_of_another_file_is_not_ours(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("")
    st = os.stat(other)
    with (tmp_path / "stderr.log").open("w") as stream:
        assert not stream_is_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stream_is_journald(stream, {"JOURNAL_STREAM": "garbage"})
        assert not stream_is_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
