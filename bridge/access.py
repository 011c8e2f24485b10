"""Approving people without a restart: pairing codes and the allowlist kept in the store.

The config's allowlists (``telegram.allowed_users``, ``slack.allowed_users``) stay
the first word: an adapter asks `Access` only about someone the config would
refuse, so the common path costs nothing. Such a person is looked up in the
store's allowlist (one primary-key read); if they are not there, their refusal
carries a pairing code (`Access.code_for`), which an administrator approves with
``agent-bridge users approve CODE``, ``/approve CODE`` (Telegram) or ``/agent
approve CODE`` (Slack). Their next message is then answered, on every instance:
there is no cache, so nothing goes stale when another instance (or the CLI)
changes the list. A refused message costs one read more than before, and
refused messages are the rare ones.

A code is 8 characters from an alphabet without look-alikes (no 0/O, 1/I/L),
from `secrets`; it is valid for `CODE_TTL` (1 hour) and single use. The same
person asking again while their code is valid gets the same code, not a new one
per message. Every change (approve, allow, deny) is written to an audit table
with who made it (``cli:<OS user>`` or ``telegram:<admin id>``,
``slack:<admin id>``) and logged at INFO on ``bridge.access``.

A deny removes a store entry and any pending code; it cannot take away access the
config's allowlist gives (``"*"``, a listed id): that is edited in the config.

Example::

    access = Access(store)
    if not await access.approved("telegram", "6666"):
        code = await access.code_for("telegram", "6666", name="@mallory", chat="6666")
    ...
    person = await access.approve(code, actor="cli:alice")   # CodeRefused if not valid
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bridge.errors import BridgeError

log = logging.getLogger("bridge.access")

#: Letters and digits no one misreads: no 0/O, 1/I/L.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 8
CODE_TTL = timedelta(hours=1)
PLATFORMS = ("telegram", "slack")
#: What an approved person is told, where the platform lets the bridge tell them.
APPROVED_TEXT = "An administrator gave you access: you can talk to the agent now."
_SLACK_USER = re.compile(r"[UW][A-Z0-9]+")


class AccessError(BridgeError):
    """An access change that cannot be made: a code that is unknown, used or
    expired (`CodeRefused`), or a person named wrongly (``PLATFORM:ID``)."""


class CodeRefused(AccessError):
    """The pairing code is unknown, already used, expired, or of another platform."""


@dataclass(frozen=True, slots=True)
class Approved:
    """One person in the store's allowlist."""

    platform: str
    user_id: str
    #: What the platform called them when they asked (``@mallory``), or "".
    name: str
    added_by: str
    added_at: datetime
    #: Where to tell them they were approved (Telegram: their private chat), or None.
    chat: str | None = None


@dataclass(frozen=True, slots=True)
class PendingCode:
    """A pairing code handed out and not yet used."""

    code: str
    platform: str
    user_id: str
    name: str
    chat: str | None
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change of the store's allowlist."""

    at: datetime
    action: str  # "approve", "allow" or "deny"
    platform: str
    user_id: str
    actor: str


class AccessStore(Protocol):
    """What `Access` needs of the store (`storage.access.AccessLists`). ``now`` is
    the caller's clock, so that the tests can move it."""

    async def is_approved(self, platform: str, user_id: str) -> bool: ...

    async def pairing_code(
        self,
        platform: str,
        user_id: str,
        *,
        code: str,
        name: str,
        chat: str | None,
        now: datetime,
        ttl: timedelta,
    ) -> str: ...

    async def redeem_code(
        self, code: str, *, actor: str, now: datetime, platform: str | None = None
    ) -> Approved: ...

    async def allow_user(
        self, platform: str, user_id: str, *, actor: str, now: datetime, name: str = ""
    ) -> bool: ...

    async def deny_user(
        self, platform: str, user_id: str, *, actor: str, now: datetime
    ) -> bool: ...

    async def list_approved(self) -> list[Approved]: ...

    async def list_codes(self, now: datetime) -> list[PendingCode]: ...

    async def access_log(self) -> list[AuditEntry]: ...


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalize_code(text: str) -> str:
    """What people type -> the stored form: case and spaces or dashes do not matter."""
    return re.sub(r"[\s-]", "", text).upper()


def parse_person(text: str) -> tuple[str, str]:
    """``telegram:12345`` or ``slack:U0123`` -> (platform, user id); `AccessError`
    naming the expected form otherwise."""
    platform, _, user = text.strip().partition(":")
    platform = platform.lower()
    if platform not in PLATFORMS or not user:
        raise AccessError(f"{text!r}: expected telegram:USER_ID or slack:USER_ID")
    if platform == "telegram" and not re.fullmatch(r"[0-9]{1,20}", user):
        raise AccessError(f"{text!r}: a Telegram user id is a number, e.g. telegram:12345")
    if platform == "slack" and not _SLACK_USER.fullmatch(user):
        raise AccessError(f"{text!r}: a Slack user id looks like U0123ABCD (or W...)")
    return platform, user


def _now() -> datetime:
    return datetime.now(UTC)


class Access:
    """The store's allowlist and its pairing codes, for the adapters and the CLI."""

    def __init__(self, store: AccessStore, *, clock: Callable[[], datetime] = _now) -> None:
        self._store = store
        self._clock = clock

    async def approved(self, platform: str, user_id: str) -> bool:
        """Whether the store's allowlist has this person (asked only when the
        config's would refuse them). `StorageError` when the store failed."""
        return await self._store.is_approved(platform, user_id)

    async def code_for(
        self, platform: str, user_id: str, *, name: str = "", chat: str | None = None
    ) -> str:
        """The person's pairing code: the one they have if it is still valid, else a
        new one, valid for `CODE_TTL`. ``chat``: where to tell them when approved."""
        code = await self._store.pairing_code(
            platform,
            user_id,
            code=new_code(),
            name=name,
            chat=chat,
            now=self._clock(),
            ttl=CODE_TTL,
        )
        log.debug("pairing code for %s:%s handed out", platform, user_id)
        return code

    async def approve(self, code: str, *, actor: str, platform: str | None = None) -> Approved:
        """Add the person who was given ``code`` to the allowlist and use the code up.
        ``platform``: only a code of that platform (an admin approves their own
        platform's people). `CodeRefused` when the code is not valid."""
        person = await self._store.redeem_code(
            normalize_code(code), actor=actor, now=self._clock(), platform=platform
        )
        log.info(
            "access: %s:%s%s approved by %s (pairing code)",
            person.platform,
            person.user_id,
            f" ({person.name})" if person.name else "",
            actor,
        )
        return person

    async def allow(self, platform: str, user_id: str, *, actor: str) -> bool:
        """Add the person to the allowlist; False if they were in it already."""
        added = await self._store.allow_user(platform, user_id, actor=actor, now=self._clock())
        log.info(
            "access: %s:%s allowed by %s%s",
            platform,
            user_id,
            actor,
            "" if added else " (already allowed)",
        )
        return added

    async def deny(self, platform: str, user_id: str, *, actor: str) -> bool:
        """Remove the person from the store's allowlist (and any pending code); False
        if they were not in it. The config's allowlist is not changed."""
        removed = await self._store.deny_user(platform, user_id, actor=actor, now=self._clock())
        log.info(
            "access: %s:%s denied by %s%s",
            platform,
            user_id,
            actor,
            "" if removed else " (was not in the store's allowlist)",
        )
        return removed

    async def listing(self) -> tuple[list[Approved], list[PendingCode]]:
        """The allowlist and the codes still valid."""
        return await self._store.list_approved(), await self._store.list_codes(self._clock())

    async def audit(self) -> list[AuditEntry]:
        return await self._store.access_log()
