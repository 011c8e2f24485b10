"""The ``[budgets]`` config (errors name the key) and `bridge.budgets`: which
limits apply, the refusal's text and its reset time on an injected clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.budgets import (
    Budgets,
    Counts,
    Exceeded,
    Limit,
    clock_from_env,
    describe_budgets,
    duration,
    next_reset,
)
from bridge.config import BudgetsConfig, ConfigError, parse_config
from bridge.model import ConversationKey, InboxMessage, MessageStatus

ECHO = {"default": {"backend": "echo"}, "support": {"backend": "echo"}}


def problems(budgets: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config({"agents": ECHO, "budgets": budgets}, base_dir=Path("/tmp"), environ={})
    return info.value.problems


def message(sender: str = "7", chat: str = "-100", platform: str = "telegram") -> InboxMessage:
    key = ConversationKey(platform, "bot", chat)
    return InboxMessage(1, 1, key, "e1", sender, "hi", "default", MessageStatus.RUNNING)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_budgets_load_with_every_key() -> None:
    raw = {
        "user_daily_messages": 20,
        "user_monthly_tokens": 1_000_000,
        "chat_daily_tokens": 50_000,
        "agent_daily_messages": 500,
        "agents": {"support": {"daily_tokens": 9}},
        "unlimited_users": ["telegram:1", "slack:U1"],
        "text": "{limit}: {used}/{max}, back at {resets} ({resets_in})",
    }
    config = parse_config({"agents": ECHO, "budgets": raw}, base_dir=Path("/tmp"), environ={})
    assert config.budgets.user_daily_messages == 20
    assert config.budgets.agents["support"].daily_tokens == 9
    assert config.budgets.limited
    assert not BudgetsConfig().limited


def test_budget_errors_name_the_key() -> None:
    found = problems(
        {
            "user_daily_messages": 0,
            "chat_daily_tokens": "100",
            "unlimited_users": ["telegram:1", "telegram:@alice", "slack:general", "123"],
            "text": "over {limt}",
            "user_dayly_messages": 3,
        }
    )
    joined = "\n".join(found)
    assert "budgets.user_daily_messages:" in joined
    assert "budgets.chat_daily_tokens:" in joined
    unlimited = [p.partition(":")[0] for p in found if "platform:user id" in p]
    assert unlimited == [f"budgets.unlimited_users[{n}]" for n in (1, 2, 3)]
    assert any(p.startswith("budgets.text:") and "{limt}" in p for p in found)
    assert 'budgets.user_dayly_messages: unknown key; did you mean "user_daily_messages"?' in found


def test_an_agent_cap_must_name_an_agent() -> None:
    found = problems({"agents": {"suport": {"daily_messages": 5}}})
    assert found == ['budgets.agents.suport: no agent named "suport" (define [agents.suport])']


def test_limits_per_user_chat_and_agent_with_an_agent_of_its_own() -> None:
    config = BudgetsConfig(
        user_daily_messages=3,
        chat_monthly_tokens=100,
        agent_daily_tokens=1000,
        agents={"support": {"daily_messages": 7}},  # type: ignore[dict-item]
        unlimited_users=["telegram:42"],
    )
    budgets = Budgets(config, clock=Clock(datetime(2027, 3, 31, 23, 0, tzinfo=UTC)))
    limits = budgets.limits(budgets.charge(message(), "default"))
    assert [(lim.name, lim.key, lim.maximum) for lim in limits] == [
        ("user_daily_messages", ("user:telegram:7", "2027-03-31"), 3),
        ("chat_monthly_tokens", ("chat:telegram:-100", "2027-03"), 100),
        ("agent_daily_tokens", ("agent:default", "2027-03-31"), 1000),
    ]
    support = budgets.limits(budgets.charge(message(), "support"))
    own = Limit("agent_daily_messages", ("agent:support", "2027-03-31"), "messages", 7)
    assert support[-1] == own
    assert budgets.limits(budgets.charge(message(sender="42"), "default")) == []


def test_the_refusal_says_which_limit_and_when_it_resets_across_midnight() -> None:
    clock = Clock(datetime(2027, 3, 1, 23, 59, 30, tzinfo=UTC))
    budgets = Budgets(BudgetsConfig(user_daily_messages=2), clock=clock)
    [limit] = budgets.limits(budgets.charge(message(), "default"))
    reply = budgets.refusal(Exceeded(limit, 2))
    assert reply.error_kind == "budget"
    assert reply.text == (
        "Sorry, you have reached your daily message limit (2 of 2). "
        "It resets at 2027-03-02 00:00 UTC (in 30s)."
    )
    clock.now += timedelta(seconds=31)  # the next day: its own counter, its own reset
    [limit] = budgets.limits(budgets.charge(message(), "default"))
    assert limit.key == ("user:telegram:7", "2027-03-02")
    assert "2027-03-03 00:00 UTC (in 23h 59m)" in budgets.refusal(Exceeded(limit, 2)).text


def test_the_agent_cap_has_its_own_text_and_kind() -> None:
    budgets = Budgets(
        BudgetsConfig(agent_daily_tokens=10, agent_cap_text="cap: {limit} {max}"),
        clock=Clock(datetime(2027, 12, 31, 12, tzinfo=UTC)),
    )
    [limit] = budgets.limits(budgets.charge(message(), "default"))
    reply = budgets.refusal(Exceeded(limit, 12))
    assert (reply.text, reply.error_kind) == ("cap: its daily token cap 10", "budget_agent_cap")


def test_resets_and_durations() -> None:
    dec = datetime(2027, 12, 15, 8, tzinfo=UTC)
    assert next_reset(dec, monthly=True) == datetime(2028, 1, 1, tzinfo=UTC)
    assert next_reset(dec, monthly=False) == datetime(2027, 12, 16, tzinfo=UTC)
    assert duration(timedelta(days=2, hours=3, minutes=5)) == "2d 3h"
    assert duration(timedelta(minutes=5)) == "5m"
    assert duration(timedelta(seconds=0.2)) == "1s"


async def test_usage_text_shows_what_is_used_and_left() -> None:
    class Ledger:
        async def reserve_usage(self, charge: object, limits: object) -> None:
            return None

        async def usage_counts(self, keys: list[tuple[str, str]]) -> dict:
            return {keys[0]: Counts(2, 100, 50), keys[1]: Counts(9, 900, 100)}

    budgets = Budgets(
        BudgetsConfig(user_daily_messages=5, user_monthly_tokens=5000),
        clock=Clock(datetime(2027, 3, 1, 22, tzinfo=UTC)),
    )
    text = await budgets.usage_text(Ledger(), platform="telegram", user="7", chat="1", agent="d")
    assert text.splitlines() == [
        "Today: 2 message(s), 150 token(s); left: 3 of 5 messages",
        "This month: 9 message(s), 1,000 token(s); left: 4,000 of 5,000 tokens",
        "Daily use resets at 2027-03-02 00:00 UTC (in 2h 0m), monthly use at 2027-04-01 00:00 UTC.",
    ]


def test_the_test_clock_reads_its_file(tmp_path: Path) -> None:
    path = tmp_path / "now"
    path.write_text("2027-03-01T23:59:00+00:00\n")
    clock = clock_from_env({"AGENT_BRIDGE_TEST_CLOCK_FILE": str(path)})
    assert clock() == datetime(2027, 3, 1, 23, 59, tzinfo=UTC)
    path.write_text("2027-03-02T00:00:01+00:00")
    assert clock().day == 2
    assert clock_from_env({})().tzinfo is not None


def test_check_lists_the_limits() -> None:
    config = BudgetsConfig(
        user_daily_messages=20,
        agent_daily_tokens=1_000_000,
        agents={"support": {"daily_messages": 7}},  # type: ignore[dict-item]
        unlimited_users=["slack:U1", "telegram:2"],
    )
    assert describe_budgets(config) == (
        "budgets: user_daily_messages 20, agent_daily_tokens 1,000,000, "
        "agent 'support' daily messages 7, 2 unlimited users (UTC days and months)"
    )
    assert describe_budgets(BudgetsConfig()).startswith("budgets: no limits")


def test_the_example_config_documents_every_budget_key() -> None:
    text = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    section = text.partition("\n[budgets]\n")[2]
    for key in BudgetsConfig.model_fields:
        assert re.search(rf"^#? ?{key} =", section, re.M), f"budgets.{key} undocumented"
