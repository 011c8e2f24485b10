"""Feedback buttons under the agent's answers, and the clicks on them.

The last piece of every agent answer (not an error text, not a note) carries a
``context_actions`` block with a ``feedback_buttons`` element (Block Kit, for AI
apps): a thumbs up and a thumbs down whose values are ``good:<message id>`` and
``bad:<message id>``, the id of the question in the store. A click arrives as a
``block_actions`` interaction (``action_id`` `FEEDBACK_ACTION`; the manifest turns
interactivity on, Socket Mode needs no request URL); `feedback_listener` acks it and
records it through `Dispatcher.record_feedback`. Nothing is posted back: Slack shows
which button is pressed.

Slack refuses ``markdown_text`` together with ``blocks`` (or ``text``) in
chat.postMessage and chat.update (``markdown_text_conflict``), so a piece with the
buttons puts its Markdown in a ``markdown`` block before them, with the piece as the
``text`` fallback for notifications (`piece_args`). chat.stopStream takes both: the
buttons go in its ``blocks``, shown under the streamed text.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.models.blocks import (
    ContextActionsBlock,
    FeedbackButtonObject,
    FeedbackButtonsElement,
    MarkdownBlock,
)

from adapters.slack_events import PLATFORM
from bridge.errors import StorageError

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("adapters.slack")

#: The ``action_id`` of the feedback buttons (what the listener is registered for).
FEEDBACK_ACTION = "agent_feedback"
#: How long a click may take to store before it is acked anyway (Slack wants the ack
#: within 3 s).
STORE_WITHIN = 2.5
#: The values a click records.
VALUES = ("good", "bad")
#: Text of the buttons (the screen reader's; Slack draws thumbs).
GOOD_TEXT = "Good answer"
BAD_TEXT = "Bad answer"


def feedback_block(message_id: int) -> dict[str, Any]:
    """The ``context_actions`` block with the buttons for the answer to ``message_id``."""
    buttons = FeedbackButtonsElement(
        action_id=FEEDBACK_ACTION,
        positive_button=FeedbackButtonObject(text=GOOD_TEXT, value=f"good:{message_id}"),
        negative_button=FeedbackButtonObject(text=BAD_TEXT, value=f"bad:{message_id}"),
    )
    block: dict[str, Any] = ContextActionsBlock(elements=[buttons]).to_dict()
    return block


def piece_args(piece: str, buttons: dict[str, Any] | None) -> dict[str, Any]:
    """chat.postMessage / chat.update arguments for ``piece``: ``markdown_text``
    alone, or with ``buttons`` a ``markdown`` block, the buttons, and ``text``."""
    if buttons is None:
        return {"markdown_text": piece}
    markdown: dict[str, Any] = MarkdownBlock(text=piece).to_dict()
    return {"text": piece, "blocks": [markdown, buttons]}


def parse_value(value: object) -> tuple[str, int] | None:
    """``("good", 12)`` from ``"good:12"``; None for anything else."""
    if not isinstance(value, str):
        return None
    kind, _, number = value.partition(":")
    if kind not in VALUES or not number.isdigit():
        return None
    return kind, int(number)


def feedback_listener(
    dispatcher: Dispatcher,
) -> Callable[[AsyncAck, dict[str, Any], dict[str, Any]], Awaitable[None]]:
    """The bolt listener for `FEEDBACK_ACTION` (bolt passes arguments by name)."""

    async def on_feedback(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        # Acked once stored (a write well inside Slack's 3 s), so that the ack means
        # the click is kept; within the time bolt gives, a failed store is acked too.
        try:
            await _record(dispatcher, body, action)
        finally:
            await ack()

    return on_feedback


async def _record(dispatcher: Dispatcher, body: dict[str, Any], action: dict[str, Any]) -> None:
    user = body.get("user")
    user_id = user.get("id") if isinstance(user, dict) else None
    parsed = parse_value(action.get("value"))
    if parsed is None or not isinstance(user_id, str) or not user_id:
        log.warning("Slack feedback click with an unreadable value or user; ignored")
        return
    value, message_id = parsed
    try:
        await asyncio.wait_for(
            dispatcher.record_feedback(PLATFORM, message_id, user_id, value), STORE_WITHIN
        )
    except (StorageError, TimeoutError) as exc:
        # Slack does not deliver an interaction twice: the click is lost.
        log.error("could not store Slack feedback on message %d: %s", message_id, exc or "timeout")
