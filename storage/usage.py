"""Usage accounting: the store's half of `bridge.budgets`.

A turn's life in these tables (every statement that writes them is here)::

    reserve_usage ──> a ``usage`` row (tokens 0), +1 message on its counters
         │                │
         │                ├─ settle_usage(usage)  (with the answer): + its tokens
         │                └─ settle_usage(None)   (an agent error): the row and
         │                                         its message are given back
         └─ a limit reached: nothing written, the message is refused

The check and the charge are one transaction (the one that marks the message
running, `Queue.start_charged_turn`): the turn's counters are incremented by an
upsert that creates them if missing, locks them (in one order, so that two charges
never deadlock; SQLite's write lock serializes writers anyway) and returns what they
hold; over a limit, the increment is taken back before the transaction commits.
Two instances answering at once therefore never both take the last message of a
budget: the second waits for the first's row locks and sees its charge. The
``usage`` row is keyed by message id: a turn tried again after a crash finds its
charge and is not charged twice.

Nothing here is touched by the retention purge (`Store.purge_text`): the counts
outlive the messages' text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from sqlalchemy import delete, func, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
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
        async with self._write("reserve a turn's usage") as conn:
            return await reserve_in(conn, self._insert, charge, limits)

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


async def reserve_in(
    conn: AsyncConnection,
    insert: Callable[[Any], Any],
    charge: Charge,
    limits: Sequence[Limit],
) -> Exceeded | None:
    """`UsageStore.reserve_usage` inside the caller's transaction (``insert``: the
    store's dialect-specific ``_insert``), e.g. the one that starts the turn.

    Two statements on the usual path: the turn's record (a retry finds it there and
    is not charged again), then its counters' increment, which locks them and returns
    what they hold. Over a limit, both are taken back in the same transaction."""
    recorded = await conn.execute(
        insert(usage)
        .values(
            message_id=charge.message_id,
            day=charge.day,
            user_id=charge.user,
            chat=charge.chat,
            agent=charge.agent,
            input_tokens=0,
            output_tokens=0,
            created_at=charge.at,
        )
        .on_conflict_do_nothing(index_elements=["message_id"])
    )
    if recorded.rowcount != 1:
        return None  # charged before: a retry after a crash, or a lost lease's turn
    keys = charge.keys
    after = await _add(conn, insert, keys, messages=1)
    for limit in limits:
        used = after.get(limit.key, Counts()).of(limit.measure)
        if limit.measure == "messages":
            used -= 1  # this turn's own message, just added
        if used >= limit.maximum:
            await _add(conn, insert, keys, messages=-1)
            await conn.execute(delete(usage).where(usage.c.message_id == charge.message_id))
            return Exceeded(limit, used)
    return None


async def settle_usage(conn: AsyncConnection, message_id: int, used: Usage | None) -> None:
    """In the transaction that stores a turn's answer: add the agent's ``used``
    tokens to the turn's charge, or (None: no agent answer) give the charge back.
    Nothing to do for a message never charged (refused, or too long)."""
    u = usage.c
    columns = (u.user_id, u.chat, u.agent, u.day)
    if used is None:
        statement: Any = delete(usage).where(u.message_id == message_id).returning(*columns)
    else:
        statement = (
            update(usage)
            .where(u.message_id == message_id)
            .values(
                input_tokens=u.input_tokens + used.input_tokens,
                output_tokens=u.output_tokens + used.output_tokens,
            )
            .returning(*columns)
        )
    row = (await conn.execute(statement)).first()
    if row is None:
        return
    keys = counter_keys(row.user_id, row.chat, row.agent, row.day)
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    if used is None:
        await _add(conn, insert, keys, messages=-1)
    else:
        await _add(
            conn, insert, keys, input_tokens=used.input_tokens, output_tokens=used.output_tokens
        )


async def _add(
    conn: AsyncConnection,
    insert: Callable[[Any], Any],
    keys: Sequence[CounterKey],
    *,
    messages: int = 0,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> dict[CounterKey, Counts]:
    """Add to the counters ``keys`` (created if missing) in one statement, and return
    what they hold after. An upsert takes the rows' locks in the order of its VALUES,
    and ``keys`` are sorted (`counter_keys`): two turns adding to the same counters
    wait for each other instead of deadlocking."""
    c = usage_counters.c
    statement = insert(usage_counters).values(
        [
            {
                "subject": subject,
                "period": period,
                "messages": messages,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
            }
            for subject, period in keys
        ]
    )
    statement = statement.on_conflict_do_update(
        index_elements=["subject", "period"],
        set_={
            "messages": c.messages + statement.excluded.messages,
            "input_tokens": c.input_tokens + statement.excluded.input_tokens,
            "output_tokens": c.output_tokens + statement.excluded.output_tokens,
        },
    ).returning(c.subject, c.period, c.messages, c.input_tokens, c.output_tokens)
    rows = (await conn.execute(statement)).all()
    return {
        (row.subject, row.period): Counts(row.messages, row.input_tokens, row.output_tokens)
        for row in rows
    }
