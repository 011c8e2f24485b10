"""The live view of a streamed answer, for `bridge.turns`: a streaming agent's events
are read to its final reply while the text so far is shown on the adapter's
`LiveAnswer` by a small pump task, at most every ``LIVE_INTERVAL`` seconds, so that a
slow platform call never holds up the stream. Split from `bridge.turns` along that seam.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from bridge import stream
from bridge.model import AgentReply, InboxMessage

if TYPE_CHECKING:
    from bridge.stream import AgentEvent, LiveAnswer

log = logging.getLogger("bridge.dispatcher")


@dataclasses.dataclass(slots=True)
class Shown:
    """The text of a streamed answer shown live so far (empty without a live view)."""

    text: str = ""


async def read_stream(
    events: AsyncIterator[AgentEvent], live: LiveAnswer | None, shown: Shown
) -> AgentReply:
    """Read a streaming agent's events to its final reply, showing the text so far
    on ``live`` (if any) and keeping it in ``shown`` for an error mid-stream."""
    shown.text = ""
    pump = Pump(live) if live is not None else None
    text = ""
    result: AgentReply | None = None
    try:
        async for event in events:
            if isinstance(event, stream.TextDelta):
                text += event.text
                if pump is not None and event.text:
                    shown.text = text
                    pump.update(text)
            elif isinstance(event, stream.StatusLine):
                if pump is not None:
                    await pump.status(event.text)
            else:
                result = event  # the last event; the stream ends after it
        if result is None:
            raise RuntimeError("the agent's stream ended without a final reply")
        if pump is not None:
            await pump.finish()
    finally:
        if pump is not None:
            await pump.settle()
    return result


#: Seconds a stopping live view waits for the update in progress.
SETTLE_TIMEOUT = 10.0


class Pump:
    """Shows the latest text on a `LiveAnswer`, at most every ``LIVE_INTERVAL``
    seconds, in a task of its own: a slow platform call never holds up the
    stream, and texts that came meanwhile are skipped for the newest."""

    def __init__(self, live: LiveAnswer) -> None:
        self._live = live
        self._text = ""
        self._shown = ""
        self._closing = False
        self._stopped = False
        self._showing = False
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="live-answer")

    def update(self, text: str) -> None:
        self._text = text
        self._changed.set()

    async def status(self, text: str) -> None:
        try:
            await self._live.status(text)
        except Exception:  # a LiveAnswer must not raise; if it does, only the view suffers
            log.debug("a live answer's status failed", exc_info=True)

    async def finish(self) -> None:
        """Show the last text (when its turn comes), then stop."""
        self._closing = True
        self._changed.set()
        await self._task

    async def settle(self) -> None:
        """Stop: let a show in progress end (the adapter must learn what it started,
        e.g. a streamed message's ts, or it would post a second copy), start none."""
        self._stopped = True
        self._changed.set()
        if self._showing and not self._task.done():
            await asyncio.wait({self._task}, timeout=SETTLE_TIMEOUT)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = 0.0
        while not self._stopped and not (self._closing and self._text == self._shown):
            await self._changed.wait()
            if self._stopped:
                break
            self._changed.clear()
            if self._text == self._shown:
                continue
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the pump's own pace; the stream goes on
            text = self._text
            due = loop.time() + stream.LIVE_INTERVAL
            self._showing = True
            try:
                await self._live.show(text)
            except Exception:
                log.debug("a live answer's update failed", exc_info=True)
            finally:
                self._showing = False
            self._shown = text


async def close_live(live: LiveAnswer, message: InboxMessage) -> None:
    try:
        await live.close()
    except Exception:  # the reply is posted (or parked) already: only the view suffers
        log.warning("message %d: could not close its live answer", message.id, exc_info=True)
