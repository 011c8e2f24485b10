"""A thread's earlier messages, for the agent's first turn in it.

When the bot is first mentioned in a channel thread that people started without it
(the bridge has no conversation for the thread yet), the agent knows nothing of what
was said. `thread_context` reads the thread once, with one ``conversations.replies``
call (``latest`` = the mention, so nothing after it), and `format_context` turns the
messages into lines ``name: text``, oldest first, cut to ``slack.context_chars`` from
the oldest end so that the newest are kept. The text goes into the message's
``meta["context"]``; the core puts it before the question (`bridge.model.agent_input`).
Later turns rely on the agent's session: the thread is never read again.

Rate limits: apps outside the Marketplace may get one ``conversations.replies`` a
minute. The call goes through the adapter's reader (no rate-limit retries) under
`CONTEXT_TIMEOUT`, since the event is acknowledged only after it; on any failure
(``ratelimited`` included) the question goes to the agent without the context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import SlackIdentity, slack_to_text

log = logging.getLogger("adapters.slack")

#: Messages read, at most, in the one call: a thread longer than this loses its newest
#: messages before the mention, a price for reading it once.
CONTEXT_MESSAGES = 1000
#: Seconds the read may take: it delays the event's acknowledgement (due within 3 s).
CONTEXT_TIMEOUT = 1.5


def _speaker(item: Mapping[str, Any], identity: SlackIdentity) -> str:
    if item.get("user") == identity.bot_user_id or (
        identity.bot_id is not None and item.get("bot_id") == identity.bot_id
    ):
        return identity.user or "assistant"
    for holder, keys in (
        ("user_profile", ("display_name", "real_name", "name")),
        ("bot_profile", ("name",)),
    ):
        profile = item.get(holder)
        if isinstance(profile, Mapping):
            for key in keys:
                name = profile.get(key)
                if isinstance(name, str) and name.strip():
                    return name.strip()
    for key in ("username", "user", "bot_id"):
        value = item.get(key)
        if isinstance(value, str) and value:
            return value
    return "someone"


def format_context(
    messages: Iterable[object], identity: SlackIdentity, *, before: str, limit: int
) -> str | None:
    """The messages older than ``before`` (a ts) as ``speaker: text`` lines, oldest
    first, at most ``limit`` characters: the oldest lines go first, then the start
    of the oldest one left. None if nothing is left."""
    lines: list[tuple[tuple[int, int], str]] = []
    bound = _ts_key(before)
    for item in messages:
        if not isinstance(item, Mapping):
            continue
        ts, text = item.get("ts"), item.get("text")
        key = _ts_key(ts)
        if key is None or bound is None or key >= bound:
            continue
        text = slack_to_text(text).strip() if isinstance(text, str) else ""
        if not text and item.get("files"):
            text = "(shared a file)"
        if text:
            lines.append((key, f"{_speaker(item, identity)}: {text}"))
    lines.sort(key=lambda pair: pair[0])
    kept: list[str] = []  # newest first
    size = 0
    for _, line in reversed(lines):
        room = limit - size - (1 if kept else 0)  # a newline before the next one
        if room <= 0:
            break
        if len(line) > room:
            kept.append("…" + line[len(line) - (room - 1) :] if room > 1 else "…")
            break
        size += len(line) + (1 if kept else 0)
        kept.append(line)
    return "\n".join(reversed(kept)) or None


async def thread_context(
    reader: AsyncWebClient,
    identity: SlackIdentity,
    *,
    channel: str,
    thread_ts: str,
    before: str,
    limit: int,
) -> str | None:
    """The earlier messages of the thread ``thread_ts`` in ``channel`` (see
    `format_context`), read with one call; None when there are none or the read
    failed."""
    try:
        async with asyncio.timeout(CONTEXT_TIMEOUT):
            resp = await reader.conversations_replies(
                channel=channel, ts=thread_ts, latest=before, limit=CONTEXT_MESSAGES
            )
    except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        log.info(
            "could not read the earlier messages of thread %s in %s (%s); the agent gets "
            "the question without them",
            thread_ts,
            channel,
            error or type(exc).__name__,
        )
        return None
    messages = resp.get("messages")
    if not isinstance(messages, list):
        return None
    context = format_context(messages, identity, before=before, limit=limit)
    log.debug(
        "thread %s in %s: %d earlier message(s), %d characters of context",
        thread_ts,
        channel,
        len(messages),
        len(context or ""),
    )
    return context


def _ts_key(value: object) -> tuple[int, int] | None:
    """A Slack ts as a sortable pair; None for junk."""
    if not isinstance(value, str):
        return None
    seconds, _, micros = value.partition(".")
    if not (seconds.isdigit() and (micros.isdigit() or not micros)):
        return None
    return int(seconds), int(micros or 0)
