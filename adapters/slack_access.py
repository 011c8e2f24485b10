"""Slack's half of approving people (`bridge.access`): the refusal with a pairing
code, and ``/agent approve CODE`` by an admin (``slack.admins``).

Only a refusal by ``slack.allowed_users`` carries a code: one by the channel or
team rules (``allowed_channels``, ``allowed_teams``) stays as it was, since an
approval would not change it. A code handed out in a DM remembers the DM, so that
the person is told there when an admin approves them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adapters.slack_events import PLATFORM, TEXT_REFUSED, TEXT_REFUSED_CODE, USER_NOT_ALLOWED
from bridge.access import APPROVED_TEXT, Access, CodeRefused
from bridge.config import SlackConfig

log = logging.getLogger("adapters.slack")

TEXT_NOT_ADMIN = "Sorry, only the bridge's administrators can approve people."
TEXT_APPROVE_USAGE = "Write the code after the command, e.g. `/agent approve ABCD2345`."

#: (channel, text): post a short text there, in the background.
Tell = Callable[[str, str], None]


async def refusal_text(access: Access, why: str, user: str, channel: str) -> str:
    """What a refused user is told: with their pairing code when only the user
    allowlist refuses them. `StorageError` propagates (Slack delivers it again)."""
    if why != USER_NOT_ALLOWED:
        return TEXT_REFUSED
    chat = channel if channel.startswith("D") else None
    code = await access.code_for(PLATFORM, user, chat=chat)
    return TEXT_REFUSED_CODE.format(code=code)


async def approve_command(
    access: Access, config: SlackConfig, user: str, args: list[str], tell: Tell | None
) -> str:
    """``/agent approve CODE``: the text the command is acknowledged with."""
    if user not in config.admins:
        log.info("refused /agent approve from Slack user %s: not in slack.admins", user)
        return TEXT_NOT_ADMIN
    if not args:
        return TEXT_APPROVE_USAGE
    try:
        person = await access.approve(" ".join(args), actor=f"{PLATFORM}:{user}", platform=PLATFORM)
    except CodeRefused as exc:
        log.info("Slack admin %s: /agent approve refused: %s", user, exc)
        return f"Not approved: {exc}."
    if person.chat is not None and tell is not None:
        tell(person.chat, APPROVED_TEXT)
    return f"Approved <@{person.user_id}>: their next message is answered."
