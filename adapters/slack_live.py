"""A streamed answer on Slack: one message written by ``chat.startStream`` /
``appendStream`` / ``stopStream`` (slack-sdk 3.37+), in the thread of the question.

The dispatcher calls `SlackStream.show` with the whole text so far (at most every
``LIVE_INTERVAL``); the first call starts the stream with that text, every later one
appends only what is new (Slack appends). The methods are called directly rather than
through slack-sdk's ``chat_stream`` helper, which holds back 256 characters before its
first call. In a channel Slack wants the recipient (``recipient_team_id``,
``recipient_user_id``: the workspace the event came from and the asker); they are sent
everywhere.

The final reply is posted by `SlackPoster.reply` as for any answer, except that its
first piece finishes the streamed message instead of being posted anew:
``chat.stopStream`` with the text not yet appended (and the piece's metadata, so a
later read-back finds it), or, when what was streamed is not the start of the final
text (a text cut to the limit, an error text, an append whose outcome is unknown),
``chat.update`` of the whole piece after stopping the stream. The streamed message holds
at most ``MARKDOWN_LIMIT`` characters; the rest of a long answer follows in new
messages, as without streaming. A stream that does not start costs only the live view:
the reply is posted as usual.

Crash safety: the stream's ts is stored with the message as soon as it starts
(`Dispatcher.note_live`, ``meta[LIVE_REF]``). A message answered again after a
restart finds it there: no new stream is started for it, and its reply replaces that
message (`replace_dangling`: ``stopStream``, then ``chat.update``) instead of leaving
a half answer beside a second copy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_feedback import piece_args
from adapters.slack_replies import MARKDOWN_LIMIT, STREAM_ERRORS, call_api, stop_stream
from bridge.model import InboxMessage
from bridge.stream import LiveAnswer

log = logging.getLogger("adapters.slack")


class SlackStream(LiveAnswer):
    """The answer to ``message`` streamed into its thread through ``client``.
    ``started(message, ts)`` stores the stream's ts (awaited when the stream starts);
    ``posted(message)`` tells the working indicator that Slack cleared the thread's
    status; ``closed(self)`` lets the adapter forget the stream."""

    def __init__(
        self,
        client: AsyncWebClient,
        message: InboxMessage,
        *,
        started: Callable[[InboxMessage, str], Awaitable[None]],
        posted: Callable[[InboxMessage], None] | None,
        closed: Callable[[SlackStream], None],
    ) -> None:
        assert message.key.thread is not None
        self.message = message
        self._client = client
        self._channel = message.key.chat
        self._thread = message.key.thread
        self._started = started
        self._posted = posted
        self._closed = closed
        #: The streamed message, once started.
        self.ts: str | None = None
        #: What Slack holds of it (as far as we know).
        self._appended = ""
        #: No more appends: the stream failed to start, an append failed (its outcome
        #: unknown), or the text stopped extending what was appended.
        self._stuck = False
        self._finished = False

    async def show(self, text: str) -> None:
        if self._stuck or self._finished:
            return
        text = text[:MARKDOWN_LIMIT]
        if not text.startswith(self._appended):
            self._stuck = True  # e.g. a fresh session's answer: the reply updates it
            return
        delta = text[len(self._appended) :]
        if not delta:
            return
        try:
            if self.ts is None:
                response = await self._client.chat_startStream(
                    channel=self._channel,
                    thread_ts=self._thread,
                    markdown_text=delta,
                    recipient_team_id=self.message.key.scope,
                    recipient_user_id=self.message.sender,
                )
                ts = response.get("ts")
                if not isinstance(ts, str):
                    raise SlackClientError("chat.startStream returned no ts")
                self.ts = ts
                self._appended = delta
                if self._posted is not None:
                    self._posted(self.message)
                await self._started(self.message, ts)
            else:
                await self._client.chat_appendStream(
                    channel=self._channel, ts=self.ts, markdown_text=delta
                )
                self._appended = text
        except STREAM_ERRORS as exc:
            self._stuck = True
            log.info(
                "message %d: Slack %s failed (%s); the answer is posted when complete",
                self.message.id,
                "chat.startStream" if self.ts is None else "chat.appendStream",
                _reason(exc),
            )

    async def finish(
        self, piece: str, metadata: dict[str, Any], buttons: dict[str, Any] | None = None
    ) -> bool:
        """Make the streamed message ``piece``, the reply's first, with its
        ``metadata`` (and the feedback ``buttons`` under it, when it is the last);
        False when nothing was streamed (post the piece instead). Raises
        `AdapterError` as `call_api` does."""
        if self.ts is None:
            return False
        if not self._stuck and piece.startswith(self._appended):
            await call_api(
                "chat.stopStream",
                self._client.chat_stopStream(
                    channel=self._channel,
                    ts=self.ts,
                    markdown_text=piece[len(self._appended) :] or None,
                    # chat.stopStream takes blocks beside markdown_text: shown under it.
                    blocks=[buttons] if buttons is not None else None,
                    metadata=metadata,
                ),
            )
        else:
            await stop_stream(self._client, self._channel, self.ts)
            await call_api(
                "chat.update",
                self._client.chat_update(
                    channel=self._channel,
                    ts=self.ts,
                    metadata=metadata,
                    **piece_args(piece, buttons),
                ),
            )
        self._finished = True
        return True

    async def close(self) -> None:
        self._closed(self)
        if self.ts is not None and not self._finished:
            # The reply was not posted (parked, or the lease lost): end the stream
            # here; whoever delivers the reply later replaces it (meta[LIVE_REF]).
            await stop_stream(self._client, self._channel, self.ts)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error"))
    return type(exc).__name__
