"""Telegram's half of approving people (`bridge.access`): what happens to a
`Stranger` (someone the config's allowlist refuses) and to an admin's
``/approve CODE``.

A stranger whom the store's allowlist has is answered like anyone allowed (their
message is routed again, as approved). Anyone else is refused as before, and in a
private chat the refusal carries their pairing code; in a group the refusal stays
silent and hands out no code (the group would read it). The code remembers the
private chat, so that the person is told there when an admin approves them.
"""

from __future__ import annotations

import logging

from telegram import Message, User

from adapters.telegram_events import PLATFORM, Action, TelegramEvents
from bridge.access import APPROVED_TEXT, Access, Approved, CodeRefused

log = logging.getLogger("adapters.telegram")


def display_name(user: User) -> str:
    return f"@{user.username}" if user.username else user.full_name


async def resolve_stranger(
    events: TelegramEvents, access: Access, message: Message, private: bool
) -> Action:
    """The action for a message whose sender the config's allowlist refuses.
    `StorageError` propagates: the update then comes again."""
    user = message.from_user
    assert user is not None
    if await access.approved(PLATFORM, str(user.id)):
        return events.on_message(message, approved=True)
    code = None
    if private:
        code = await access.code_for(
            PLATFORM, str(user.id), name=display_name(user), chat=str(message.chat.id)
        )
    return events.refuse(message, private, code)


async def approve(
    access: Access, message: Message, code: str
) -> tuple[str, tuple[int, str] | None]:
    """Carry out an admin's ``/approve CODE``: the text for the admin, and (chat id,
    text) to tell the approved person, when they asked in a private chat."""
    admin = message.from_user
    assert admin is not None
    try:
        person = await access.approve(code, actor=f"{PLATFORM}:{admin.id}", platform=PLATFORM)
    except CodeRefused as exc:
        log.info("Telegram admin %d: /approve refused: %s", admin.id, exc)
        return f"Not approved: {exc}.", None
    tell = (int(person.chat), APPROVED_TEXT) if person.chat else None
    return f"Approved {who(person)}: their next message is answered.", tell


def who(person: Approved) -> str:
    return f"{person.name} (id {person.user_id})" if person.name else f"id {person.user_id}"
