"""Budgets on Slack, end to end through bolt against the fake Slack: a DM over the
user's daily budget is answered with the budget text without an agent call, and
``/agent usage`` shows the asker what they used and what is left."""

from __future__ import annotations

from pathlib import Path

from bridge.config import BudgetsConfig
from tests.adapters.test_slack import agents, make_config, running, slack  # noqa: F401
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import FakeSlack


async def test_a_dm_over_budget_is_refused_and_agent_usage_shows_what_is_left(
    tmp_path: Path,
    slack: FakeSlack,  # noqa: F811
    agents: FakeAgentServer,  # noqa: F811
) -> None:
    config = make_config(tmp_path, slack, agents)
    config = config.model_copy(
        update={"budgets": BudgetsConfig(user_daily_messages=1, unlimited_users=["slack:U9"])}
    )
    async with running(config, slack) as bridge:
        await bridge.deliver(slack.message("one two", channel="D1", channel_type="im"))
        await bridge.deliver(slack.message("three", channel="D1", channel_type="im"))
        # Another person is not held to U1's count, and U9 has no limit at all.
        await bridge.deliver(slack.message("four", channel="D9", user="U9", channel_type="im"))
        await bridge.deliver(slack.message("five", channel="D9", user="U9", channel_type="im"))

        usage = await slack.wait_ack(await slack.send_command("usage", channel="D1"))
        unlimited = await slack.wait_ack(await slack.send_command("usage", channel="D9", user="U9"))
        help_text = await slack.wait_ack(await slack.send_command("help"))

    replies = bridge.replies()
    assert replies[0] == "echo: one two"
    assert replies[1].startswith("Sorry, you have reached your daily message limit (1 of 1).")
    assert replies[2:] == ["echo: four", "echo: five"]
    assert [c.json["message"] for c in agents.chat_calls] == ["one two", "four", "five"]
    lines = usage["payload"]["text"].splitlines()
    assert lines[0] == "Today: 1 message(s), 5 token(s); left: 0 of 1 messages"
    assert lines[1] == "This month: 1 message(s), 5 token(s); no limit"
    assert "You have no limits." in unlimited["payload"]["text"]
    assert "/agent usage" in help_text["payload"]["text"]
