"""Two `agent-bridge run` processes on one PostgreSQL share an agent's daily cap and
cannot overspend it, under concurrent messages through a round-robin balancer: the
cap's messages reach the agent, every other message gets the cap's text without an
agent call, and ``agent-bridge usage`` matches what the agent reported.

The agent is held while the messages arrive, so the charged turns are all in flight
when the others are checked: a check that read the counters without their row locks
would let more through. Needs ``AGENT_BRIDGE_TEST_DATABASE_URL`` (skipped without).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bridge.budgets import TEST_CLOCK_ENV
from tests.e2e.harness import (
    Cluster,
    Forwarder,
    Instance,
    LoadGenerator,
    Message,
    TelegramPlayer,
    bridge_env,
    toml_text,
)
from tests.e2e.test_multi_instance import WEBHOOK_SECRET, bridge_sections, telegram_section
from tests.fakes.agents import FakeAgentServer
from tests.fakes.telegram import FakeTelegram
from tests.ports import free_port
from tests.test_cli import run_cli

pytestmark = pytest.mark.multi_instance

CAP = 5
USERS = 30
CAP_TEXT = "Sorry, the agent has reached its daily message cap (5 of 5) for everyone today."


async def test_two_instances_cannot_overspend_an_agents_daily_cap(
    tmp_path: Path, pg_database: str
) -> None:
    clock = tmp_path / "now"
    clock.write_text("2027-03-01T12:00:00+00:00")  # both instances on one day
    player = TelegramPlayer(WEBHOOK_SECRET)
    ports = [free_port() for _ in range(2)]
    http_ports = [free_port() for _ in range(2)]
    messages = [Message(user, 0) for user in range(USERS)]
    async with (
        FakeTelegram() as telegram,
        FakeAgentServer() as agents,
        Forwarder([f"http://127.0.0.1:{p}" for p in ports]) as forwarder,
    ):
        instances = []
        for n, (port, http_port) in enumerate(zip(ports, http_ports, strict=True)):
            sections = bridge_sections(
                pg_database,
                agents.url,
                platform="telegram",
                section=telegram_section(telegram, port, f"{forwarder.url}/telegram"),
            )
            sections["daemon"] = {"shutdown_grace": 2, "http_listen": f"127.0.0.1:{http_port}"}
            sections["budgets"] = {"agent_daily_messages": CAP}
            config = tmp_path / f"i{n + 1}.toml"
            config.write_text(toml_text(sections), encoding="utf-8")
            instances.append(
                Instance(f"i{n + 1}", config, bridge_env(**{TEST_CLOCK_ENV: str(clock)}))
            )
        async with Cluster(instances) as cluster:
            await cluster.start()
            agents.hold()
            load = LoadGenerator(
                forwarder.url + "/telegram", player.request, rate=100, in_flight=8, timeout=10
            )
            await load.run(messages)
            assert load.accepted == USERS, load.failures()
            try:
                refusals = await telegram.wait_sent(count=USERS - CAP, within=60)
            except TimeoutError:
                raise AssertionError(cluster.stderr) from None
            await agents.wait_for_calls(CAP, within=15)
            agents.release()
            replies = await telegram.wait_sent(count=USERS, within=60)
            texts = [str(c.params["text"]) for c in replies]
            assert len(agents.chat_calls) == CAP
            assert sum(t.startswith("echo: ") for t in texts) == CAP, texts
            assert sum(t.startswith(CAP_TEXT) for t in texts) == USERS - CAP, texts
            assert all(str(c.params["text"]).startswith(CAP_TEXT) for c in refusals)
            # The refusals of both instances add up: one cap, shared through the database.
            line = (
                'agent_bridge_budget_refusals_total{agent="default",limit="agent_daily_messages"}'
            )
            split = []
            async with httpx.AsyncClient() as http:
                for port in http_ports:
                    metrics = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    found = [m for m in metrics.splitlines() if m.startswith(line)]
                    split.append(float(found[0].split()[-1]) if found else 0.0)
            print(f"\nE2E budgets: refusals per instance {split}")
            assert sum(split) == USERS - CAP

        code, out, err = await run_cli(
            "usage",
            "--by",
            "agent",
            "--format",
            "json",
            "--config",
            str(instances[0].config),
            cwd=tmp_path,
        )
        assert code == 0, err
        [row] = json.loads(out)
        assert (row["agent"], row["messages"]) == ("default", CAP)
        assert row["input_tokens"] == sum(u["input_tokens"] for u in agents.reported_usage)
        assert row["output_tokens"] == sum(u["output_tokens"] for u in agents.reported_usage)
