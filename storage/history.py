"""The turns of stateless agents' threads: the store's `ConversationHistory`.

One row per answered turn, keyed by the session id the backend made for the
thread (``bridge.history``). Nothing updates a row: a turn is appended once,
read back by `load`, and deleted by the retention purge (`purge_history`,
which `Store.purge_text` calls) like the text of finished messages.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, insert, select

from bridge.history import ConversationHistory, HistoryTurn, newest_that_fit
from storage.database import Database, _now
from storage.schema import history

#: Rows read per query while looking for the turns that fit: most threads are
#: short, and a long one is read page by page only as far as the budget goes.
_PAGE = 100


class History(Database, ConversationHistory):
    """The history half of the store."""

    async def load(self, session_id: str, *, max_chars: int) -> list[HistoryTurn]:
        h = history.c
        newest_first: list[HistoryTurn] = []
        used = 0
        before: int | None = None
        async with self._read("read a conversation's history") as conn:
            while used <= max_chars:
                query = (
                    select(h.id, h.user_text, h.reply_text)
                    .where(h.session_id == session_id)
                    .order_by(h.id.desc())
                    .limit(_PAGE)
                )
                if before is not None:
                    query = query.where(h.id < before)
                rows = (await conn.execute(query)).all()
                for row in rows:
                    turn = HistoryTurn(row.user_text, row.reply_text)
                    newest_first.append(turn)
                    used += turn.chars
                if len(rows) < _PAGE:
                    break
                before = rows[-1].id
        return newest_that_fit(newest_first, max_chars)

    async def append(self, session_id: str, user_text: str, reply_text: str) -> None:
        statement = insert(history).values(
            session_id=session_id, user_text=user_text, reply_text=reply_text, created_at=_now()
        )
        async with self._write("record a turn in the history") as conn:
            await conn.execute(statement)

    async def purge_history(self, older_than_days: float) -> int:
        """Delete the turns recorded more than ``older_than_days`` ago; return how many."""
        cutoff = _now() - timedelta(days=older_than_days)
        async with self._write("delete old history") as conn:
            result = await conn.execute(delete(history).where(history.c.created_at < cutoff))
            return int(result.rowcount)
