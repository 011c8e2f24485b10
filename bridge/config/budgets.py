"""The ``[budgets]`` section: how much each user, chat and agent may use.

Every limit is optional (unset: no limit). A user's and a chat's limits count per
UTC day and per UTC month; an agent's overall cap per UTC day, the same for every
agent unless ``[budgets.agents.NAME]`` sets its own. Tokens are the agent's
reported input plus output tokens.

Example::

    [budgets]
    user_daily_messages = 50
    user_monthly_tokens = 2_000_000
    agent_daily_tokens = 5_000_000
    unlimited_users = ["telegram:123456789", "slack:U0123ABCD"]

    [budgets.agents.support]
    daily_messages = 2000
"""

from __future__ import annotations

import re
import string
from typing import Annotated

from pydantic import AfterValidator, Field, field_validator

from bridge.config.fields import Section

#: The placeholders a budget text may use (`bridge.budgets` fills them in).
TEXT_PLACEHOLDERS = frozenset({"limit", "used", "max", "resets", "resets_in"})

#: The keys of the limits on users, chats and every agent (also the metric's labels).
LIMIT_KEYS = (
    "user_daily_messages",
    "user_daily_tokens",
    "user_monthly_messages",
    "user_monthly_tokens",
    "chat_daily_messages",
    "chat_daily_tokens",
    "chat_monthly_messages",
    "chat_monthly_tokens",
    "agent_daily_messages",
    "agent_daily_tokens",
)

#: Who is exempt: ``platform:user id``, as the usage report names users.
#: Telegram's numeric user ids (a @username can change hands), Slack's U/W ids.
_UNLIMITED_USER = re.compile(r"telegram:\d+|slack:[UW][A-Z0-9]+|console:\S+")


def _check_user(value: str) -> str:
    if not _UNLIMITED_USER.fullmatch(value):
        raise ValueError(
            'expected "platform:user id", e.g. "telegram:123" (numeric) or "slack:U0123ABCD"'
        )
    return value


#: One entry of ``unlimited_users``; an error names its index.
UnlimitedUser = Annotated[str, AfterValidator(_check_user)]


def _check_text(value: str) -> str:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
    except ValueError as exc:
        raise ValueError(f"not a valid text with {{placeholders}}: {exc}") from None
    unknown = names - TEXT_PLACEHOLDERS
    if unknown:
        allowed = ", ".join(f"{{{n}}}" for n in sorted(TEXT_PLACEHOLDERS))
        raise ValueError(f"unknown placeholder {{{sorted(unknown)[0]}}}; use {allowed}")
    return value


class AgentCapConfig(Section):
    """One agent's overall cap per UTC day, across all users and chats."""

    daily_messages: int | None = Field(None, ge=1)
    daily_tokens: int | None = Field(None, ge=1)


class BudgetsConfig(Section):
    user_daily_messages: int | None = Field(None, ge=1)
    user_daily_tokens: int | None = Field(None, ge=1)
    user_monthly_messages: int | None = Field(None, ge=1)
    user_monthly_tokens: int | None = Field(None, ge=1)
    chat_daily_messages: int | None = Field(None, ge=1)
    chat_daily_tokens: int | None = Field(None, ge=1)
    chat_monthly_messages: int | None = Field(None, ge=1)
    chat_monthly_tokens: int | None = Field(None, ge=1)
    #: Every agent's overall daily cap, unless ``agents.NAME`` sets its own.
    agent_daily_messages: int | None = Field(None, ge=1)
    agent_daily_tokens: int | None = Field(None, ge=1)
    agents: dict[str, AgentCapConfig] = Field(default_factory=dict)
    #: ``"telegram:123"``, ``"slack:U123"``: no limit applies to them (their use
    #: is still counted, also towards the agents' caps).
    unlimited_users: list[UnlimitedUser] = Field(default_factory=list)
    #: The answer to a message over a user's or a chat's limit.
    text: str = (
        "Sorry, you have reached {limit} ({used} of {max}). It resets at {resets} (in {resets_in})."
    )
    #: The answer when the agent's overall daily cap is reached.
    agent_cap_text: str = (
        "Sorry, the agent has reached {limit} ({used} of {max}) for everyone today. "
        "It resets at {resets} (in {resets_in})."
    )

    @field_validator("text", "agent_cap_text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _check_text(value)

    @property
    def limited(self) -> bool:
        """Whether any limit is set."""
        flat = [getattr(self, name) for name in LIMIT_KEYS]
        caps = [v for cap in self.agents.values() for v in (cap.daily_messages, cap.daily_tokens)]
        return any(v is not None for v in [*flat, *caps])
