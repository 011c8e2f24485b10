"""Usage accounting: the store's half of `bridge.budgets`.

A turn's life in these tables (every statement that writes them is here)::

    reserve_usage ──> a ``usage`` row (tokens 0), +1 message on its counters
         │                │
         │                ├─ settle_usage(usage)  (with the answer): + its tokens
         │                └─ settle_usage(None)   (an agent error): the row and
         │                                         its message are given back
         └─ a limit reached: nothing written, the message is refused

The check and the charge are one transaction: the turn's counter rows are created
if missing, then locked (``SELECT ... FOR UPDATE`` on PostgreSQL, in one order so
that two charges never deadlock; SQLite's write lock serializes writers anyway),
read, checked and incremented. Two instances answering at once therefore never
both take the last message of a budget. The ``usage`` row is keyed by message id:
a turn tried again after a crash finds its charge and is not charged twice.

Nothing here is touched by the retention purge (`Store.purge_text`): the counts
outlive the messages' text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from bridge.budgets import Charge, CounterKey, Counts, Exceeded, Limit, counter_keys
from bridge.model import Usage
from storage.database import Database
from storage.schema import usage, usage_counters

#: What `usage_report` may group by.
GROUPS = ("day", "user", "chat", "agent")
Group = Literal["day", "user", "chat", "agent"]


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One line of the usage report: a day, user, chat or agent, and its totals."""

    group: str
    messages: int
    input_tokens: int
    output_tokens: int


class UsageStore(Database):
    """The usage half of the store (`bridge.budgets.UsageLedger`)."""

    async def reserve_usage(self, charge: Charge, limits: Sequence[Limit]) -> Exceeded | None:
        keys = charge.keys
        c = usage_counters.c
        async with self._write("reserve a turn's usage") as conn:
            await conn.execute(
                self._insert(usage_counters)
                .values([{"subject": s, "period": p} for s, p in keys])
                .on_conflict_do_nothing(index_elements=["subject", "period"])
            )
            locked = (
                select(c.subject, c.period, c.messages, c.input_tokens, c.output_tokens)
                .where(tuple_(c.subject, c.period).in_(keys))
                .order_by(c.subject, c.period)
                .with_for_update()
            )
            counts = {
                (row.subject, row.period): Counts(row.messages, row.input_tokens, row.output_tokens)
                for row in (await conn.execute(locked)).all()
            }
            # Checked under the locks: a retry's earlier charge is found here, not
            # raced by another instance charging the same message.
            charged = await conn.execute(
                select(usage.c.id).where(usage.c.message_id == charge.message_id)
            )
            if charged.first() is not None:
                return None
            for limit in limits:
                used = counts.get(limit.key, Counts()).of(limit.measure)
                if used >= limit.maximum:
                    return Exceeded(limit, used)
            await conn.execute(
                update(usage_counters)
                .where(tuple_(c.subject, c.period).in_(keys))
                .values(messages=c.messages + 1)
            )
            await conn.execute(
                usage.insert().values(
                    message_id=charge.message_id,
                    day=charge.day,
                    user_id=charge.user,
                    chat=charge.chat,
                    agent=charge.agent,
                    input_tokens=0,
                    output_tokens=0,
                    created_at=charge.at,
                )
            )
        return None

    async def usage_counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, Counts]:
        c = usage_counters.c
        query = select(c.subject, c.period, c.messages, c.input_tokens, c.output_tokens).where(
            tuple_(c.subject, c.period).in_(list(keys))
        )
        async with self._read("read usage counters") as conn:
            rows = (await conn.execute(query)).all()
        return {
            (row.subject, row.period): Counts(row.messages, row.input_tokens, row.output_tokens)
            for row in rows
        }

    async def usage_report(self, *, by: Group = "day", since: date | None = None) -> list[UsageRow]:
        """Messages and tokens per ``by``, of the turns from the UTC day ``since`` on."""
        if by not in GROUPS:
            raise ValueError(f"group by one of {GROUPS}, not {by!r}")
        u = usage.c
        column = {"day": u.day, "user": u.user_id, "chat": u.chat, "agent": u.agent}[by]
        query = (
            select(
                column.label("grp"),
                func.count(),
                func.coalesce(func.sum(u.input_tokens), 0),
                func.coalesce(func.sum(u.output_tokens), 0),
            )
            .group_by(column)
            .order_by(column)
        )
        if since is not None:
            query = query.where(u.day >= since.isoformat())
        async with self._read("report usage") as conn:
            rows = (await conn.execute(query)).all()
        return [UsageRow(str(g), int(n), int(i), int(o)) for g, n, i, o in rows]


async def settle_usage(conn: AsyncConnection, message_id: int, used: Usage | None) -> None:
    """In the transaction that stores a turn's answer: add the agent's ``used``
    tokens to the turn's charge, or (None: no agent answer) give the charge back.
    Nothing to do for a message never charged (refused, or too long)."""
    row = (
        await conn.execute(
            select(usage.c.id, usage.c.user_id, usage.c.chat, usage.c.agent, usage.c.day).where(
                usage.c.message_id == message_id
            )
        )
    ).first()
    if row is None:
        return
    c = usage_counters.c
    keys = counter_keys(row.user_id, row.chat, row.agent, row.day)
    where = tuple_(c.subject, c.period).in_(keys)
    # Locked in `reserve_usage`'s order first: an UPDATE alone locks in scan order,
    # which could deadlock against a charge locking the same rows the other way.
    await conn.execute(
        select(c.subject).where(where).order_by(c.subject, c.period).with_for_update()
    )
    counters = update(usage_counters).where(where)
    if used is None:
        await conn.execute(delete(usage).where(usage.c.id == row.id))
        await conn.execute(counters.values(messages=c.messages - 1))
        return
    values: dict[str, Any] = {
        "input_tokens": usage.c.input_tokens + used.input_tokens,
        "output_tokens": usage.c.output_tokens + used.output_tokens,
    }
    await conn.execute(update(usage).where(usage.c.id == row.id).values(**values))
    await conn.execute(
        counters.values(
            input_tokens=c.input_tokens + used.input_tokens,
            output_tokens=c.output_tokens + used.output_tokens,
        )
    )
