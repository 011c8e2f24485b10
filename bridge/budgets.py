"""Budgets: what a turn is counted under, which limits apply to it, and the texts.

The core's half of usage accounting. Every turn the agent is asked for is charged
one message at its start (`UsageLedger.reserve_usage`, which also checks the
limits, atomically), and its tokens when its answer is stored (the store settles
them in the same transaction as the answer). A turn that ends in an agent error
is given back. What is counted, per UTC day and month::

    user:<platform>:<user id>   day, month
    chat:<platform>:<chat id>   day, month
    agent:<name>                day

A limit is reached when what is used already is at its maximum: a message's own
tokens are known only after the agent answered, so a token limit lets the turn
that crosses it through and refuses the next one.

Example::

    budgets = Budgets(config.budgets)
    charge = budgets.charge(message, agent="default")
    exceeded = await store.reserve_usage(charge, budgets.limits(charge))
    if exceeded is not None:
        reply = budgets.refusal(exceeded)   # Reply(text, error_kind="budget")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol

from bridge.config.budgets import LIMIT_KEYS, BudgetsConfig
from bridge.model import Conversation, InboxMessage, Reply

Measure = Literal["messages", "tokens"]
#: A counter: (subject, period), e.g. ("user:telegram:123", "2027-03-01").
CounterKey = tuple[str, str]

#: Tests only: a file holding an ISO time that replaces the clock of the budgets
#: (read at every look, so a test moves time by rewriting it). Not for production.
TEST_CLOCK_ENV = "AGENT_BRIDGE_TEST_CLOCK_FILE"

_DESCRIPTIONS = {
    "user_daily_messages": "your daily message limit",
    "user_daily_tokens": "your daily token limit",
    "user_monthly_messages": "your monthly message limit",
    "user_monthly_tokens": "your monthly token limit",
    "chat_daily_messages": "this chat's daily message limit",
    "chat_daily_tokens": "this chat's daily token limit",
    "chat_monthly_messages": "this chat's monthly message limit",
    "chat_monthly_tokens": "this chat's monthly token limit",
    "agent_daily_messages": "its daily message cap",
    "agent_daily_tokens": "its daily token cap",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def clock_from_env(environ: Mapping[str, str]) -> Callable[[], datetime]:
    """The real clock, or (tests only, `TEST_CLOCK_ENV`) the time in a file."""
    path = environ.get(TEST_CLOCK_ENV)
    if not path:
        return utc_now

    def read() -> datetime:
        text = Path(path).read_text().strip()
        return datetime.fromisoformat(text).astimezone(UTC) if text else utc_now()

    return read


def day_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%d")


def counter_keys(user: str, chat: str, agent: str, day: str) -> list[CounterKey]:
    """The counters one turn of ``day`` (YYYY-MM-DD) adds to, in lock order."""
    month = day[:7]
    return sorted(
        [
            (f"user:{user}", day),
            (f"user:{user}", month),
            (f"chat:{chat}", day),
            (f"chat:{chat}", month),
            (f"agent:{agent}", day),
        ]
    )


@dataclass(frozen=True, slots=True)
class Counts:
    messages: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def of(self, measure: Measure) -> int:
        return self.messages if measure == "messages" else self.tokens


@dataclass(frozen=True, slots=True)
class Charge:
    """What one turn is counted under: ``user`` and ``chat`` are ``platform:id``."""

    message_id: int
    user: str
    chat: str
    agent: str
    at: datetime

    @property
    def day(self) -> str:
        return day_of(self.at)

    @property
    def keys(self) -> list[CounterKey]:
        return counter_keys(self.user, self.chat, self.agent, self.day)


@dataclass(frozen=True, slots=True)
class Limit:
    """One maximum on one counter. ``name`` is the config key (and the metric's label)."""

    name: str
    key: CounterKey
    measure: Measure
    maximum: int

    @property
    def monthly(self) -> bool:
        return len(self.key[1]) == 7


@dataclass(frozen=True, slots=True)
class Exceeded:
    """The limit a message was refused by, with what its counter held."""

    limit: Limit
    used: int


#: What a turn of a conversation is charged under, and the limits it must stay within:
#: called with the conversation as the turn starts (in the store's transaction).
TurnBudget = Callable[[Conversation], tuple[Charge, list[Limit]]]


@dataclass(frozen=True, slots=True)
class StartedTurn:
    """A turn the store began while accepting its message (`Store.accept_and_start`):
    the message is running under this instance's lease and charged to its budgets;
    ``exceeded`` names the limit it reached, if any (then the agent is not asked)."""

    conversation: Conversation
    exceeded: Exceeded | None


class UsageLedger(Protocol):
    """The store's half (`storage.usage.UsageStore`)."""

    async def reserve_usage(self, charge: Charge, limits: Sequence[Limit]) -> Exceeded | None:
        """Check ``limits`` and, if none is reached, charge one message to the
        turn's counters, atomically (across instances); a turn charged before (a
        retry after a crash) is let through without a second charge."""
        ...

    async def usage_counts(self, keys: Sequence[CounterKey]) -> dict[CounterKey, Counts]: ...


class Budgets:
    """The limits of ``[budgets]``, on a clock that tests may replace."""

    def __init__(self, config: BudgetsConfig, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config
        self.clock = clock
        self._unlimited = frozenset(config.unlimited_users)

    def charge(self, message: InboxMessage, agent: str) -> Charge:
        platform = message.key.platform
        return Charge(
            message_id=message.id,
            user=f"{platform}:{message.sender}",
            chat=f"{platform}:{message.key.chat}",
            agent=agent,
            at=self.clock(),
        )

    def limits(self, charge: Charge) -> list[Limit]:
        """The limits that apply to ``charge`` (none for an unlimited user)."""
        if charge.user in self._unlimited:
            return []
        return self._limits(charge.user, charge.chat, charge.agent, charge.day)

    def _limits(self, user: str, chat: str, agent: str, day: str) -> list[Limit]:
        c = self.config
        month = day[:7]
        cap = c.agents.get(agent)
        agent_messages = cap.daily_messages if cap is not None else c.agent_daily_messages
        agent_tokens = cap.daily_tokens if cap is not None else c.agent_daily_tokens
        wanted: list[tuple[str, CounterKey, Measure, int | None]] = [
            ("user_daily_messages", (f"user:{user}", day), "messages", c.user_daily_messages),
            ("user_daily_tokens", (f"user:{user}", day), "tokens", c.user_daily_tokens),
            ("user_monthly_messages", (f"user:{user}", month), "messages", c.user_monthly_messages),
            ("user_monthly_tokens", (f"user:{user}", month), "tokens", c.user_monthly_tokens),
            ("chat_daily_messages", (f"chat:{chat}", day), "messages", c.chat_daily_messages),
            ("chat_daily_tokens", (f"chat:{chat}", day), "tokens", c.chat_daily_tokens),
            ("chat_monthly_messages", (f"chat:{chat}", month), "messages", c.chat_monthly_messages),
            ("chat_monthly_tokens", (f"chat:{chat}", month), "tokens", c.chat_monthly_tokens),
            ("agent_daily_messages", (f"agent:{agent}", day), "messages", agent_messages),
            ("agent_daily_tokens", (f"agent:{agent}", day), "tokens", agent_tokens),
        ]
        return [Limit(n, k, m, v) for n, k, m, v in wanted if v is not None]

    def refusal(self, exceeded: Exceeded) -> Reply:
        """The reply to a message over ``exceeded``'s limit."""
        limit = exceeded.limit
        agent_cap = limit.name.startswith("agent_")
        now = self.clock()
        resets = next_reset(now, monthly=limit.monthly)
        text = (self.config.agent_cap_text if agent_cap else self.config.text).format(
            limit=_DESCRIPTIONS[limit.name],
            used=f"{exceeded.used:,}",
            max=f"{limit.maximum:,}",
            resets=f"{resets:%Y-%m-%d %H:%M} UTC",
            resets_in=duration(resets - now),
        )
        return Reply(text, error_kind="budget_agent_cap" if agent_cap else "budget")

    async def usage_text(
        self, ledger: UsageLedger, *, platform: str, user: str, chat: str, agent: str
    ) -> str:
        """What ``/usage`` shows: the asker's use today and this month, and what is left."""
        now = self.clock()
        day = day_of(now)
        who = f"{platform}:{user}"
        keys = [(f"user:{who}", day), (f"user:{who}", day[:7])]
        counts = await ledger.usage_counts(keys)
        limits = {} if who in self._unlimited else self._by_name(who, platform, chat, agent, day)
        lines = []
        for label, key, period in (("Today", keys[0], "daily"), ("This month", keys[1], "monthly")):
            used = counts.get(key, Counts())
            line = f"{label}: {used.messages:,} message(s), {used.tokens:,} token(s)"
            left = []
            for measure in ("messages", "tokens"):
                limit = limits.get(f"user_{period}_{measure}")
                if limit is not None:
                    rest = max(limit.maximum - used.of(limit.measure), 0)
                    left.append(f"{rest:,} of {limit.maximum:,} {measure}")
            line += f"; left: {', '.join(left)}" if left else "; no limit"
            lines.append(line)
        if who in self._unlimited:
            lines.append("You have no limits.")
        day_reset = next_reset(now, monthly=False)
        month_reset = next_reset(now, monthly=True)
        lines.append(
            f"Daily use resets at {day_reset:%Y-%m-%d %H:%M} UTC (in {duration(day_reset - now)}), "
            f"monthly use at {month_reset:%Y-%m-%d %H:%M} UTC."
        )
        return "\n".join(lines)

    def _by_name(
        self, who: str, platform: str, chat: str, agent: str, day: str
    ) -> dict[str, Limit]:
        return {limit.name: limit for limit in self._limits(who, f"{platform}:{chat}", agent, day)}


def describe_budgets(config: BudgetsConfig) -> str:
    """One line for ``agent-bridge check``: every limit set, and who is exempt."""
    parts = [
        f"{key} {getattr(config, key):,}" for key in LIMIT_KEYS if getattr(config, key) is not None
    ]
    for name, cap in config.agents.items():
        own = [
            f"{m} {v:,}"
            for m, v in (("messages", cap.daily_messages), ("tokens", cap.daily_tokens))
            if v is not None
        ]
        parts.append(f"agent {name!r} daily {' and '.join(own) or 'unlimited'}")
    if not parts:
        return "budgets: no limits (usage is counted: agent-bridge usage)"
    exempt = len(config.unlimited_users)
    if exempt:
        parts.append(f"{exempt} unlimited user{'s' if exempt > 1 else ''}")
    return "budgets: " + ", ".join(parts) + " (UTC days and months)"


def next_reset(now: datetime, *, monthly: bool) -> datetime:
    """The next UTC midnight (``monthly``: the first of the next month)."""
    now = now.astimezone(UTC)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if not monthly:
        return midnight + timedelta(days=1)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return midnight.replace(year=year, month=month, day=1)


def duration(span: timedelta) -> str:
    """``"3h 20m"``, ``"45s"``, ``"2d 4h"``: a short, human span (rounded up to the second)."""
    seconds = max(int(-(-span.total_seconds() // 1)), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


__all__ = [
    "TEST_CLOCK_ENV",
    "Budgets",
    "Charge",
    "CounterKey",
    "Counts",
    "Exceeded",
    "Limit",
    "TurnBudget",
    "UsageLedger",
    "clock_from_env",
    "counter_keys",
    "day_of",
    "describe_budgets",
    "duration",
    "next_reset",
    "utc_now",
]
