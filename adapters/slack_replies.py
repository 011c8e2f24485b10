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

`SlackPoster` does the posting itself: the pieces of a reply (split to
``markdown_text``'s limit, paced per channel by `ChannelPace`), the notes, the ephemeral
refusals, with every Web API failure translated by `call_api`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiolimiter import AsyncLimiter
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import PLATFORM, SlackIdentity
from adapters.slack_feedback import feedback_block, piece_args
from adapters.text import split_markdown
from bridge.chat import LIVE_REF
from bridge.errors import AdapterError, ReplyUndeliverable
from bridge.model import ConversationKey, InboxMessage, Reply

if TYPE_CHECKING:
    from adapters.slack_live import SlackStream

log = logging.getLogger("adapters.slack")

#: Web API errors after which a post can never succeed (the channel is gone, archived,
#: or the bot was removed): the reply ends as failed instead of being retried.
GONE_ERRORS = frozenset(
    {"channel_not_found", "is_archived", "not_in_channel", "thread_not_found", "restricted_action"}
)
#: ``markdown_text`` of chat.postMessage takes standard Markdown, up to 12,000 characters.
MARKDOWN_LIMIT = 12_000
#: Seconds of posting a channel may do at once (a burst), at its rate.
CHANNEL_BURST_SECONDS = 3.0
#: Channels whose posting rate is remembered (the least recently used go first).
CHANNEL_LIMITERS = 1000

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


async def call_api(method: str, call: Coroutine[Any, Any, Any]) -> Any:
    """Await a Web API call; translate its failure (after slack_sdk's retries)."""
    try:
        return await call
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        if error in GONE_ERRORS:
            # Trying again cannot help: the dispatcher ends the reply as failed.
            raise ReplyUndeliverable(PLATFORM, f"{method} failed: {error}") from None
        raise AdapterError(PLATFORM, f"{method} failed: {error}") from None
    except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
        raise AdapterError(PLATFORM, f"{method} failed: {type(exc).__name__}") from exc


#: What a Web API call through slack_sdk may raise.
STREAM_ERRORS = (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError)


async def replace_dangling(
    client: AsyncWebClient,
    message: InboxMessage,
    ts: str,
    piece: str,
    metadata: dict[str, Any],
    buttons: dict[str, Any] | None = None,
) -> bool:
    """Make the message streamed by an earlier attempt (perhaps in a process that
    crashed, its stream left open) the reply's first ``piece`` (with the feedback
    ``buttons`` when it is the last): stop its stream if still open, then update it.
    False when it cannot be updated (deleted...): the piece is posted anew."""
    await stop_stream(client, message.key.chat, ts)
    try:
        await client.chat_update(
            channel=message.key.chat, ts=ts, metadata=metadata, **piece_args(piece, buttons)
        )
    except SlackApiError as exc:
        log.warning(
            "message %d: could not replace its earlier streamed message %s (%s); "
            "posting the reply anew",
            message.id,
            ts,
            exc.response.get("error"),
        )
        return False
    except (SlackClientError, aiohttp.ClientError, TimeoutError) as exc:
        # Perhaps updated, perhaps not: the whole delivery is tried again later.
        raise AdapterError(PLATFORM, f"chat.update failed: {type(exc).__name__}") from exc
    log.info("message %d: finished the answer streamed by an earlier attempt", message.id)
    return True


async def stop_stream(client: AsyncWebClient, channel: str, ts: str) -> None:
    """Stop a stream that may be stopped already (or expired): errors only logged."""
    try:
        await client.chat_stopStream(channel=channel, ts=ts)
    except STREAM_ERRORS as exc:
        error = exc.response.get("error") if isinstance(exc, SlackApiError) else None
        log.debug("chat.stopStream of %s failed: %s", ts, error or type(exc).__name__)


class ChannelPace:
    """Posts per second into one channel (``channel_messages_per_second``): keeping to
    Slack's limit is cheaper than its 429 and the retry after it. 0: no pacing."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        #: One limiter per channel, least recently used first.
        self._limits: dict[str, AsyncLimiter] = {}

    async def turn(self, channel: str) -> None:
        """Wait until ``channel`` may take another post."""
        if self._rate <= 0:
            return
        limiter = self._limits.pop(channel, None)
        if limiter is None:
            # A burst of a few posts, then the rate: what Slack itself tolerates.
            limiter = AsyncLimiter(self._rate * CHANNEL_BURST_SECONDS, CHANNEL_BURST_SECONDS)
        self._limits[channel] = limiter  # most recently used last
        if len(self._limits) > CHANNEL_LIMITERS:
            del self._limits[next(iter(self._limits))]
        await limiter.acquire()


class SlackPoster:
    """The bridge's posts. ``poster`` posts reply pieces (it retries only 429s: a
    connection error or a 5xx may come after Slack posted the piece, and a blind retry
    could post it twice, so the attempt fails and the dispatcher's next one reads back
    what is there); ``reader`` reads them back; ``client`` posts the notes. With
    ``feedback``, the last piece of an agent answer carries the feedback buttons."""

    def __init__(
        self,
        identity: SlackIdentity,
        *,
        client: AsyncWebClient,
        poster: AsyncWebClient,
        reader: AsyncWebClient,
        rate: float,
        feedback: bool = False,
    ) -> None:
        self._identity = identity
        self._feedback = feedback
        self._client = client
        self._poster = poster
        self._reader = reader
        self._pace = ChannelPace(rate)
        #: message id -> pieces of its reply already posted, so that a retried
        #: delivery does not post the first pieces twice.
        self._posted_pieces: dict[int, int] = {}

    async def reply(
        self,
        message: InboxMessage,
        reply: Reply,
        *,
        posted: Callable[[InboxMessage], None] | None = None,
        stream: SlackStream | None = None,
    ) -> None:
        """Post ``reply`` in ``message``'s thread, skipping the pieces already there;
        ``posted(message)`` is called after each piece. The first piece finishes
        ``stream`` (the answer streamed live), or the message an earlier attempt
        streamed (``meta[LIVE_REF]``), instead of being posted anew."""
        pieces = split_markdown(reply.text, MARKDOWN_LIMIT) or ["…"]
        last = len(pieces) - 1
        # Under the agent's answer only: an error text is not an answer to rate.
        buttons = (
            feedback_block(message.id) if self._feedback and reply.error_kind is None else None
        )
        # What this process posted of it already (a retry after a failed piece)...
        done = set(range(self._posted_pieces.get(message.id, 0)))
        if message.delivery_attempts > 0:
            # ...and what an earlier attempt posted, perhaps in a process that crashed
            # between posting and marking the message delivered: Slack has it.
            done |= await posted_before(self._reader, self._identity, message, len(pieces))
        if 0 not in done:
            first = reply_metadata(message.id, 0, len(pieces))
            dangling = message.meta.get(LIVE_REF)
            first_buttons = buttons if last == 0 else None
            finished = stream is not None and await stream.finish(pieces[0], first, first_buttons)
            if not finished and isinstance(dangling, str):
                finished = await replace_dangling(
                    self._poster, message, dangling, pieces[0], first, first_buttons
                )
            if finished:
                done.add(0)
                self._posted_pieces[message.id] = 1
                if posted is not None:
                    posted(message)
        for index, piece in enumerate(pieces):
            if index in done:
                continue
            await self._pace.turn(message.key.chat)
            await call_api(
                "chat.postMessage",
                self._poster.chat_postMessage(
                    channel=message.key.chat,
                    thread_ts=message.key.thread,
                    metadata=reply_metadata(message.id, index, len(pieces)),
                    **piece_args(piece, buttons if index == last else None),
                ),
            )
            self._posted_pieces[message.id] = index + 1
            if posted is not None:
                posted(message)
        self._posted_pieces.pop(message.id, None)

    async def note(self, key: ConversationKey, text: str) -> None:
        """A note in ``key``'s thread (a reset, a hint); a failure is only logged."""
        try:
            await call_api(
                "chat.postMessage",
                self._client.chat_postMessage(
                    channel=key.chat, thread_ts=key.thread, markdown_text=text
                ),
            )
        except AdapterError as exc:
            log.warning("could not post a note in %s: %s", key, exc.reason)

    async def notice(self, channel: str, text: str) -> None:
        """A message of its own in ``channel`` (an admin alert); raises `AdapterError`."""
        await self._pace.turn(channel)
        await call_api(
            "chat.postMessage", self._client.chat_postMessage(channel=channel, markdown_text=text)
        )

    async def ephemeral(self, channel: str, user: str, text: str, thread_ts: str | None) -> None:
        """A note only ``user`` sees; a failure is only logged."""
        try:
            await call_api(
                "chat.postEphemeral",
                self._client.chat_postEphemeral(
                    channel=channel, user=user, text=text, thread_ts=thread_ts
                ),
            )
        except AdapterError as exc:
            log.warning("could not post an ephemeral note in %s: %s", channel, exc.reason)
