"""The ``/agent`` slash command: ``status``, ``reset`` (in a DM), ``usage``, ``help``,
and ``approve CODE`` for the admins (`adapters.slack_access`).

`answer_command` returns the text the command is acknowledged with (Slack shows it to
the user alone). A slash command carries no thread, so in a DM it acts on the DM's
top-level conversation; in a channel, ``reset`` points at the thread mention instead.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from adapters.slack_access import Tell, approve_command, refusal_text
from adapters.slack_events import (
    PLATFORM,
    TEXT_RESET,
    TEXT_STORAGE,
    USER_NOT_ALLOWED,
    SlackIdentity,
    refusal,
)
from bridge.config import SlackConfig
from bridge.errors import StorageError
from bridge.model import ConversationKey

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("adapters.slack")

TEXT_HELP = (
    "*How to talk to me*\n"
    "• In a channel: mention <@{bot}> with your question; I answer in a thread. "
    "{followups}\n"
    "• In a DM: just write; every message is answered.\n"
    "• `@{name} reset` in a thread (or `reset` in a DM) starts the conversation over.\n"
    "*Commands*: `/agent status`, `/agent reset` (in a DM), `/agent usage`, `/agent help`; "
    "admins: `/agent approve CODE`."
)
TEXT_FOLLOWUPS = "Later messages in that thread are answered without a new mention."


def _field(command: Mapping[str, Any], name: str) -> str:
    value = command.get(name)
    return value if isinstance(value, str) else ""


async def answer_command(
    command: Mapping[str, Any],
    *,
    dispatcher: Dispatcher,
    config: SlackConfig,
    identity: SlackIdentity,
    tell: Tell | None = None,
) -> str:
    """Carry out one ``/agent`` command; return the text to acknowledge it with.
    ``tell``: how to tell an approved user so (``/agent approve``)."""
    user = _field(command, "user_id")
    channel = _field(command, "channel_id")
    team = _field(command, "team_id") or identity.team_id
    words = _field(command, "text").split()
    sub = words[0].lower() if words else "help"
    is_dm = channel.startswith("D")
    try:
        if sub == "approve":  # the admins are checked there, whatever the allowlists say
            return await approve_command(dispatcher.access, config, user, words[1:], tell)
        why = refusal(config, identity, team=team, channel=channel, user=user, is_dm=is_dm)
        if why == USER_NOT_ALLOWED and await dispatcher.access.approved(PLATFORM, user):
            why = None
        if why is not None:
            log.info(
                "refused Slack command: %s (user=%s channel=%s team=%s)", why, user, channel, team
            )
            dispatcher.note_refused(PLATFORM)
            return await refusal_text(dispatcher.access, why, user, channel)
    except StorageError as exc:
        log.error("Slack /agent %s failed: %s", sub, exc)
        return TEXT_STORAGE
    agent = config.channel_agents.get(channel, config.agent)
    key = ConversationKey(PLATFORM, team, channel, None)
    try:
        if sub == "reset":
            if not is_dm:
                return (
                    f"To start a thread over, write `<@{identity.bot_user_id}> reset` "
                    "in that thread."
                )
            await dispatcher.reset(key, agent)
            log.info("Slack conversation %s reset by %s (/agent reset)", key, user)
            return TEXT_RESET
        if sub == "status":
            return await _status_text(dispatcher, key, agent, is_dm)
        if sub == "usage":
            return await dispatcher.usage_text(PLATFORM, user, channel, agent)
    except StorageError as exc:
        log.error("Slack /agent %s failed: %s", sub, exc)
        return TEXT_STORAGE
    followups = TEXT_FOLLOWUPS if config.thread_followups else ""
    return TEXT_HELP.format(bot=identity.bot_user_id, name=identity.user, followups=followups)


async def _status_text(
    dispatcher: Dispatcher, key: ConversationKey, agent: str, is_dm: bool
) -> str:
    if not is_dm:
        return (
            f"In this channel I answer with the agent `{agent}`. Mention me to start a "
            "thread; `/agent status` in a DM shows that conversation."
        )
    conv = await dispatcher.conversation(key)
    if conv is None:
        return f"No conversation yet. Your messages go to the agent `{agent}`."
    session = "active" if conv.session_id else "not started"
    return (
        f"Agent `{conv.agent}` · {conv.turns} turn(s) · tokens {conv.input_tokens} in / "
        f"{conv.output_tokens} out · session {session} · last active "
        f"{conv.last_active_at:%Y-%m-%d %H:%M} UTC"
    )
