"""Two `agent-bridge run` processes on one PostgreSQL, both seeing the agent answer 402 at
once: the administrators get one alert, not one per instance; and one recovery message
when both see the agent answer again. Black-box, as `tests.e2e.test_multi_instance`."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.e2e.harness import (
    AgentProxy,
    Cluster,
    Instance,
    LoadGenerator,
    Message,
    TelegramPlayer,
    bridge_env,
    toml_text,
    wait_quiet,
    wait_until,
)
from tests.e2e.test_multi_instance import WEBHOOK_SECRET, bridge_sections, telegram_section
from tests.fakes.agents import FakeAgentServer, FakeResponse
from tests.fakes.telegram import FakeTelegram
from tests.ports import free_port

pytestmark = pytest.mark.multi_instance

ADMINS = -1000999
PER_INSTANCE = 4  # conversations whose first message gets the 402, per instance


async def test_two_instances_seeing_a_402_together_send_one_alert_and_one_recovery(
    tmp_path: Path, pg_database: str
) -> None:
    ports = [free_port(), free_port()]
    player = TelegramPlayer(WEBHOOK_SECRET)
    async with FakeTelegram() as telegram, FakeAgentServer() as agents, AsyncExitStack() as stack:
        proxies = [
            await stack.enter_async_context(AgentProxy(agents.url, f"i{n + 1}", latency=0.01))
            for n in range(2)
        ]
        instances = []
        for n, (port, proxy) in enumerate(zip(ports, proxies, strict=True)):
            sections = bridge_sections(
                pg_database,
                proxy.url,
                platform="telegram",
                section=telegram_section(telegram, port, f"http://127.0.0.1:{port}/telegram"),
            )
            sections["alerts"] = {"telegram_chat": ADMINS, "repeat_after": 3600}
            config = tmp_path / f"i{n + 1}.toml"
            config.write_text(toml_text(sections), encoding="utf-8")
            instances.append(Instance(f"i{n + 1}", config, bridge_env()))
        async with Cluster(instances) as cluster:
            await cluster.start()
            agents.hold()
            agents.script(
                *[FakeResponse(status=402, json={"detail": "Insufficient balance"})]
                * (2 * PER_INSTANCE)
            )
            # Each instance takes messages on its own webhook; both call the agent.
            batches = [
                [Message(n * PER_INSTANCE + c, 0) for c in range(PER_INSTANCE)] for n in range(2)
            ]
            await asyncio.gather(
                *(_deliver(port, player, batch) for port, batch in zip(ports, batches, strict=True))
            )
            both = await wait_until(
                lambda: (
                    all(p.calls for p in proxies)
                    and sum(len(p.calls) for p in proxies) == 2 * PER_INSTANCE
                ),
                within=15,
            )
            assert both, [len(p.calls) for p in proxies]
            agents.release()  # every 402 at once, in both instances
            await wait_until(
                lambda: (
                    len([c for c in telegram.sent() if c.params["chat_id"] != ADMINS])
                    >= 2 * PER_INSTANCE
                ),
                within=15,
            )
            [alert] = await telegram.wait_sent(ADMINS, within=15)
            # The agent answers again, in both instances.
            again = [[Message(100 + n, 0)] for n in range(2)]
            await asyncio.gather(
                *(_deliver(port, player, batch) for port, batch in zip(ports, again, strict=True))
            )
            await telegram.wait_sent(ADMINS, count=2, within=15)
            await wait_quiet(lambda: len(telegram.sent()), quiet=2.0, within=15)
            stderr = cluster.stderr

    admin = telegram.sent(ADMINS)
    assert len(admin) == 2, [c.params["text"] for c in admin]
    assert "out of credit" in alert.params["text"]
    assert "answers again" in admin[1].params["text"]
    assert stderr.count("alert sent: insufficient_balance") == 1, stderr


async def _deliver(port: int, player: TelegramPlayer, messages: list[Message]) -> None:
    load = LoadGenerator(
        f"http://127.0.0.1:{port}/telegram", player.request, rate=100, in_flight=4, timeout=10
    )
    await load.run(messages)
    assert not load.not_accepted, load.failures()
