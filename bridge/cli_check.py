"""``agent-bridge check``: the config's report, the live checks, ``--probe``.

    agent-bridge check [--offline]                 every section, then the free live checks
    agent-bridge check --probe AGENT [--text T]    one real message to AGENT (spends a turn)

The report never shows a secret: keys and header values are ``***``, a storage
URL's password is masked. An ``http`` agent's report is its resolved request
(method, URL, headers, body template, paths): every placeholder, expression and
``${VAR}`` was checked when the config was read, so a report means they are all
known, compile and are set.

`bridge.cli` imports this module when ``check`` (or ``init``, which reports the
file it wrote) runs, so ``import bridge.cli`` stays cheap.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from bridge.budgets import describe_budgets
from bridge.cli import EXIT_FAILURE, EXIT_OK
from bridge.config import (
    Config,
    EchoAgentConfig,
    HttpAgentConfig,
    PeakaAgentConfig,
    ThinnestAgentConfig,
)
from bridge.errors import AgentError, ConfigError
from bridge.logs import redact


def run_check(
    config: Config,
    path: Path | None,
    *,
    offline: bool = False,
    probe: str | None = None,
    probe_text: str | None = None,
) -> int:
    """The whole ``check`` command on a loaded config; returns the exit code."""
    from bridge.checks import PROBE_TEXT, probe_agent_name

    if probe is not None:
        if offline:
            raise ConfigError(["--probe: sends a real message; it cannot go with --offline"])
        probe_agent_name(config, probe)  # before the report: a typo is the one line shown
    elif probe_text is not None:
        raise ConfigError(["--text: only with --probe AGENT"])
    print_config(config, path)
    if probe is not None:
        return _probe(config, probe, probe_text or PROBE_TEXT)
    if offline:
        return EXIT_OK
    from bridge.checks import live_checks

    results = asyncio.run(live_checks(config))
    for result in results:
        mark = "✓" if result.ok else "✗"
        print(f"{mark} {result.item}: {result.detail}")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILURE


def _probe(config: Config, name: str, text: str) -> int:
    from bridge.checks import probe_agent

    # What a probe is for includes the backends' warnings (a Flowise flow that ignores
    # our session id), which check's default ERROR level would hide.
    backends_log = logging.getLogger("bridge.backends")
    if backends_log.getEffectiveLevel() > logging.WARNING:
        backends_log.setLevel(logging.WARNING)
    item = f"agents.{name}"
    print(f"→ {item}: sending {text!r} (a real turn: the agent runs it, and may bill it)")
    try:
        report = asyncio.run(probe_agent(config, name, text))
    except AgentError as exc:
        print(f"✗ {item}: {redact(exc.detail)}")
        print(f"  the user would see: {exc.user_message}")
        return EXIT_FAILURE
    usage = report.usage
    print(f"✓ {item}: answered in {report.seconds:.2f}s")
    print(f"  answer: {report.answer}")
    print(f"  session: {report.session_id or '(none)'}")
    print(
        f"  usage: {usage.input_tokens} in, {usage.output_tokens} out, "
        f"{usage.total_tokens} total tokens"
    )
    return EXIT_OK


def print_config(config: Config, path: Path | None) -> None:
    """``check``'s report of a valid config: a line per section, then warnings."""
    from bridge.checks import config_warnings

    print(f"✓ config {path}")
    for line in describe_config(config):
        print(f"  {line}")
    warnings = config_warnings(config)
    if warnings:
        print(f"! {len(warnings)} warning{'s' if len(warnings) > 1 else ''}:")
        for warning in warnings:
            print(f"  {warning}")


def describe_config(config: Config) -> list[str]:
    """One line per section (an http agent's request below it), never a secret."""
    from bridge.backends.generic import request_summary
    from bridge.files import human_size

    lines = [
        f"storage: {config.storage.display_url} (text kept {config.storage.retention_days:g} days)"
    ]
    for name, agent in config.agents.items():
        details: list[str] = []
        if isinstance(agent, ThinnestAgentConfig):
            where = f"agent {agent.agent_id} at {agent.base_url}"
        elif isinstance(agent, PeakaAgentConfig):
            where = f"project {agent.project_id} at {agent.effective_base_url}"
        elif isinstance(agent, HttpAgentConfig):
            where = f"preset {agent.preset}" if agent.preset else "custom request"
            details = request_summary(agent)
        elif isinstance(agent, EchoAgentConfig):
            where = "answers with the user's text"
        else:
            base_url = getattr(agent, "base_url", None)
            where = f"at {base_url}" if base_url else "configured"
        lines.append(f"agents.{name}: {agent.backend}, {where}, timeout {agent.timeout:g}s")
        lines.extend(f"  {detail}" for detail in details)
    lines.append(
        f"dispatcher: up to {config.dispatcher.max_concurrency} agent calls at once, "
        f"input up to {config.dispatcher.max_input_chars} characters"
    )
    if config.telegram is not None:
        tg = config.telegram
        n = len(tg.allowed_users)
        users = (
            "anyone can talk to the bot"
            if "*" in tg.allowed_users
            else f"{n} allowed user{'s' if n > 1 else ''}"
        )
        if tg.allowed_chats:
            users += f" (and anyone in {len(tg.allowed_chats)} allowed chat(s))"
        lines.append(
            f"telegram: {tg.mode}, agent {tg.agent!r}, {users}, group trigger {tg.group_trigger}"
        )
        # Where the token goes with every download (`bridge.config.telegram_file_url`).
        lines.append(f"  files from {tg.effective_file_url}<token>/<path>")
    else:
        lines.append("telegram: not configured")
    if config.slack is not None:
        sl = config.slack
        n = len(sl.allowed_users)
        users = (
            "anyone in the workspace"
            if "*" in sl.allowed_users
            else f"{n} allowed user{'s' if n > 1 else ''}"
        )
        lines.append(
            f"slack: {'Socket Mode' if sl.mode == 'socket' else 'HTTP ' + sl.listen + sl.path}, "
            f"agent {sl.agent!r}, {users}, "
            f"thread follow-ups {'on' if sl.thread_followups else 'off'}"
        )
    else:
        lines.append("slack: not configured")
    if config.alerts is not None:
        al = config.alerts
        places = [f"Telegram chat {al.telegram_chat}"] if al.telegram_chat is not None else []
        places += [f"Slack channel {al.slack_channel}"] if al.slack_channel else []
        lines.append(
            f"alerts: to {' and '.join(places)}, each problem at most every "
            f"{al.repeat_after:g}s, degraded after {al.degraded_after:g}s"
        )
    lines.append(describe_budgets(config.budgets))
    files, voice = config.files, config.transcription
    lines.append(
        f"files: up to {human_size(files.max_bytes)} each, documents cut at {files.max_chars} "
        f"characters; voice {'via ' + voice.base_url + ', ' + voice.model if voice else 'off'}"
    )
    daemon = config.daemon
    lines.append(
        f"daemon: health {'on ' + daemon.http_listen if daemon.http_listen else 'off'}, "
        f"grace {daemon.shutdown_grace:g}s, log {daemon.log_level}/{daemon.log_format}"
    )
    return lines
