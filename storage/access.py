"""The allowlist kept in the store, its pairing codes and its audit: the store's
half of `bridge.access`.

- ``access_allowed``: one row per (platform, user id) approved here, beside the
  config's allowlist.
- ``access_codes``: at most one code per person (a unique key), so that a person
  asking again gets the code they have while it is valid; an expired one is
  replaced in the same upsert. Redeeming deletes the row: a code works once.
- ``access_audit``: every change, with who made it and when.

Each change and its audit row are one transaction. Times are the caller's clock
(`bridge.access.Access` passes it), so that the tests can move it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.access import Approved, AuditEntry, CodeRefused, PendingCode
from storage.database import Database
from storage.schema import access_allowed, access_audit, access_codes

_PLATFORM_NAMES = {"telegram": "Telegram", "slack": "Slack"}


class AccessLists(Database):
    """The store's allowlist, pairing codes and audit (`bridge.access.AccessStore`)."""

    async def is_approved(self, platform: str, user_id: str) -> bool:
        a = access_allowed.c
        query = select(a.user_id).where(a.platform == platform, a.user_id == user_id)
        async with self._read("read the allowlist") as conn:
            return (await conn.execute(query)).first() is not None

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
    ) -> str:
        """The person's valid code, or ``code`` stored as their new one."""
        c = access_codes.c
        insert = self._insert(access_codes).values(
            code=code,
            platform=platform,
            user_id=user_id,
            name=name,
            chat=chat,
            created_at=now,
            expires_at=now + ttl,
        )
        # Two instances refusing the same person at once: one insert wins, the
        # other's conflict leaves the winner's valid code, and both read it back.
        statement = insert.on_conflict_do_update(
            index_elements=["platform", "user_id"],
            set_={
                "code": insert.excluded.code,
                "name": insert.excluded.name,
                "chat": insert.excluded.chat,
                "created_at": insert.excluded.created_at,
                "expires_at": insert.excluded.expires_at,
            },
            where=c.expires_at <= now,
        )
        query = select(c.code).where(c.platform == platform, c.user_id == user_id)
        async with self._write("hand out a pairing code") as conn:
            await conn.execute(statement)
            return str((await conn.execute(query)).scalar_one())

    async def redeem_code(
        self, code: str, *, actor: str, now: datetime, platform: str | None = None
    ) -> Approved:
        """Allow the person ``code`` was given to, and use the code up; `CodeRefused`
        (nothing changed) when it is unknown, used, expired or of another platform."""
        c = access_codes.c
        async with self._write("approve a pairing code") as conn:
            row = (await conn.execute(select(access_codes).where(c.code == code))).first()
            if row is None:
                raise CodeRefused(f"unknown or already used code {code!r}")
            if row.expires_at <= now:
                raise CodeRefused(
                    f"code {code!r} expired; the person gets a new one by writing again"
                )
            if platform is not None and row.platform != platform:
                where = _PLATFORM_NAMES.get(row.platform, row.platform)
                raise CodeRefused(
                    f"code {code!r} is for a {where} user: approve it in {where} "
                    "or with agent-bridge users approve"
                )
            await conn.execute(delete(access_codes).where(c.code == code))
            await self._add(conn, row.platform, row.user_id, row.name, actor, now, "approve")
            return Approved(
                platform=row.platform,
                user_id=row.user_id,
                name=row.name,
                added_by=actor,
                added_at=now,
                chat=row.chat,
            )

    async def allow_user(
        self, platform: str, user_id: str, *, actor: str, now: datetime, name: str = ""
    ) -> bool:
        async with self._write("allow a user") as conn:
            return await self._add(conn, platform, user_id, name, actor, now, "allow")

    async def _add(
        self,
        conn: AsyncConnection,
        platform: str,
        user_id: str,
        name: str,
        actor: str,
        now: datetime,
        action: str,
    ) -> bool:
        statement = (
            self._insert(access_allowed)
            .values(platform=platform, user_id=user_id, name=name, added_by=actor, added_at=now)
            .on_conflict_do_nothing(index_elements=["platform", "user_id"])
        )
        added = (await conn.execute(statement)).rowcount == 1
        await conn.execute(
            access_audit.insert().values(
                at=now, action=action, platform=platform, user_id=user_id, actor=actor
            )
        )
        return added

    async def deny_user(self, platform: str, user_id: str, *, actor: str, now: datetime) -> bool:
        a, c = access_allowed.c, access_codes.c
        async with self._write("deny a user") as conn:
            result = await conn.execute(
                delete(access_allowed).where(a.platform == platform, a.user_id == user_id)
            )
            await conn.execute(
                delete(access_codes).where(c.platform == platform, c.user_id == user_id)
            )
            await conn.execute(
                access_audit.insert().values(
                    at=now, action="deny", platform=platform, user_id=user_id, actor=actor
                )
            )
            return bool(result.rowcount)

    async def list_approved(self) -> list[Approved]:
        a = access_allowed.c
        query = select(access_allowed).order_by(a.added_at, a.platform, a.user_id)
        async with self._read("list the allowlist") as conn:
            rows = (await conn.execute(query)).all()
        return [
            Approved(
                platform=r.platform,
                user_id=r.user_id,
                name=r.name,
                added_by=r.added_by,
                added_at=r.added_at,
            )
            for r in rows
        ]

    async def list_codes(self, now: datetime) -> list[PendingCode]:
        c = access_codes.c
        query = select(access_codes).where(c.expires_at > now).order_by(c.created_at)
        async with self._read("list pairing codes") as conn:
            rows = (await conn.execute(query)).all()
        return [
            PendingCode(
                code=r.code,
                platform=r.platform,
                user_id=r.user_id,
                name=r.name,
                chat=r.chat,
                expires_at=r.expires_at,
            )
            for r in rows
        ]

    async def access_log(self) -> list[AuditEntry]:
        u = access_audit.c
        async with self._read("read the access audit") as conn:
            rows = (await conn.execute(select(access_audit).order_by(u.at, u.id))).all()
        return [AuditEntry(r.at, r.action, r.platform, r.user_id, r.actor) for r in rows]
