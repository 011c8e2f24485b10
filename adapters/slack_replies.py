"""Our own posts: the metadata every reply piece carries, and reading them back.

Each piece of a reply is posted with Slack message metadata
``{"event_type": "agent_bridge_reply", "event_payload": {"inbox_id", "piece",
"pieces"}}`` (chat.postMessage ``metadata``: the ``chat:write`` scope covers it). When
a message's delivery was begun before (``InboxMessage.delivery_attempts > 0``), perhaps
by a process that crashed between posting and marking the message delivered,
`posted_before` reads the bot's posts back, ``conversations.replies`` for a thread or
``conversations.history`` after the user's message for a top-level DM reply, both with
``include_all_metadata`` (the ``*:history`` scopes the events need already cover them),
and `SlackAdapter.send_reply` skips the pieces found.

The read-back goes through a client without rate-limit retries: apps outside the
Marketplace may get one of these calls a minute, and the reply must not wait for that.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import SlackIdentity
from bridge.model import InboxMessage

log = logging.getLogger("adapters.slack")

#: The message metadata ``event_type`` on every piece of a reply the bridge posts.
REPLY_EVENT = "agent_bridge_reply"


def reply_metadata(inbox_id: int, piece: int, pieces: int) -> dict[str, Any]:
    """chat.postMessage ``metadata`` for piece ``piece`` (0-based) of ``pieces`` of the
    reply to inbox message ``inbox_id``: how a later attempt recognizes it."""
    return {
        "event_type": REPLY_EVENT,
        "event_payload": {"inbox_id": inbox_id, "piece": piece, "pieces": pieces},
    }


def posted_piece(item: object, identity: SlackIdentity, inbox_id: int, pieces: int) -> int | None:
    """Which piece of the reply to ``inbox_id`` this message from
    ``conversations.replies``/``history`` is, if our bot posted it; else None. A piece
    of a reply cut differently (another ``pieces``) does not count."""
    if not isinstance(item, Mapping):
        return None
    ours = item.get("user") == identity.bot_user_id or (
        identity.bot_id is not None and item.get("bot_id") == identity.bot_id
    )
    metadata = item.get("metadata")
    if not ours or not isinstance(metadata, Mapping):
        return None
    payload = metadata.get("event_payload")
    if metadata.get("event_type") != REPLY_EVENT or not isinstance(payload, Mapping):
        return None
    piece = payload.get("piece")
    if payload.get("inbox_id") != inbox_id or payload.get("pieces") != pieces:
        return None
    if isinstance(piece, bool) or not isinstance(piece, int) or not 0 <= piece < pieces:
        return None
    return piece


#: Pages of this size, at most this many: the pieces sit right after the user's
#: message, on the first page except in the busiest threads.
READ_BACK_PAGE = 200
READ_BACK_PAGES = 5


async def posted_before(
    reader: AsyncWebClient, identity: SlackIdentity, message: InboxMessage, count: int
) -> set[int]:
    """The pieces of ``message``'s reply that our bot already posted, read back
    from the thread (``conversations.replies``) or, for a top-level DM reply, from
    the DM after the user's message (``conversations.history``)."""
    channel, thread = message.key.chat, message.key.thread
    found: set[int] = set()
    cursor: str | None = None
    try:
        for _ in range(READ_BACK_PAGES):
            args: dict[str, Any] = {
                "channel": channel,
                "include_all_metadata": True,
                "limit": READ_BACK_PAGE,
                "oldest": message.reply_to,
                "cursor": cursor,
            }
            if thread is not None:
                resp = await reader.conversations_replies(ts=thread, **args)
            else:
                resp = await reader.conversations_history(**args)
            for item in resp.get("messages") or []:
                piece = posted_piece(item, identity, message.id, count)
                if piece is not None:
                    found.add(piece)
            meta = resp.get("response_metadata")
            cursor = meta.get("next_cursor") if isinstance(meta, dict) else None
            if not resp.get("has_more") or not cursor or len(found) == count:
                break
    except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        # The one window left for a double post: we cannot see what an earlier
        # attempt posted, and a reply posted twice beats a reply never posted.
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        log.warning(
            "message %d: could not read back earlier posts in %s (%s); posting the "
            "reply anyway, a piece may appear twice",
            message.id,
            message.key,
            error or type(exc).__name__,
        )
    if found:
        log.info(
            "message %d: %d of %d piece(s) already posted by an earlier attempt",
            message.id,
            len(found),
            count,
        )
    return found
