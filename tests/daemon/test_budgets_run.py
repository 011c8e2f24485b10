"""Budgets through `agent-bridge run` (a subprocess) against `FakeTelegram` and
`FakeAgentServer`: a user over their daily budget gets the budget text without an
agent call, with the reset time right across midnight (the budgets' clock is a file,
`bridge.budgets.TEST_CLOCK_ENV`); the next day they are answered; ``/usage`` shows
what is left; ``agent-bridge usage`` matches what the agent reported."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import httpx

from bridge.budgets import TEST_CLOCK_ENV
from tests.daemon.conftest import BridgeProcess, subprocess_env
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml
from tests.fakes.telegram import ALICE, FakeTelegram, private_text
from tests.ports import free_port
from tests.test_cli import run_cli


def write_config(tmp_path: Path, tg: FakeTelegram, agents: FakeAgentServer, port: int) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        "[storage]\n"
        f'url = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n'
        f"{thinnest_config_toml(agents.url)}\n"
        "[telegram]\n"
        f'bot_token = "{tg.token}"\n'
        f'api_url = "{tg.api_url}"\n'
        f"allowed_users = [{ALICE.id}]\n\n"
        "[daemon]\n"
        f'http_listen = "127.0.0.1:{port}"\n\n'
        "[budgets]\n"
        "user_daily_messages = 2\n"
        "user_monthly_tokens = 1000\n",
        encoding="utf-8",
    )
    return path


async def test_over_the_daily_budget_until_midnight_then_answered(tmp_path: Path) -> None:
    clock = tmp_path / "now"
    clock.write_text("2027-03-01T23:59:50+00:00")
    port = free_port()
    async with (
        FakeTelegram() as tg,
        FakeAgentServer() as agents,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        config = write_config(tmp_path, tg, agents, port)
        bridge = BridgeProcess(config, subprocess_env(**{TEST_CLOCK_ENV: str(clock)}))
        try:
            await bridge.start()
            try:
                await tg.wait_calls("getUpdates", within=30)
            except TimeoutError:
                raise AssertionError(bridge.stderr) from None

            async def ask(text: str, count: int) -> str:
                tg.push(private_text(ALICE, text))
                sent = await tg.wait_sent(ALICE.id, count=count, within=15)
                return str(sent[count - 1].params["text"])

            assert await ask("one two three", 1) == "echo: one two three"
            assert await ask("four five", 2) == "echo: four five"
            refused = await ask("six", 3)
            assert refused == (
                "Sorry, you have reached your daily message limit (2 of 2). "
                "It resets at 2027-03-02 00:00 UTC (in 10s)."
            )
            assert len(agents.chat_calls) == 2  # the agent never saw "six"
            metrics = (await http.get("/metrics")).text
            assert (
                'agent_bridge_budget_refusals_total{agent="default",limit="user_daily_messages"}'
                " 1.0" in metrics
            )

            clock.write_text("2027-03-02T00:00:05+00:00")  # past midnight: a new day
            assert await ask("seven eight", 4) == "echo: seven eight"
            assert len(agents.chat_calls) == 3

            usage = await ask("/usage", 5)
            assert usage.splitlines()[0] == "Today: 1 message(s), 5 token(s); left: 1 of 2 messages"
            assert "resets at 2027-03-03 00:00 UTC (in 23h 59m)" in usage
            bridge.signal(signal.SIGTERM)
            assert await bridge.wait() == 0, bridge.stderr
        finally:
            await bridge.kill()

    code, out, err = await run_cli(
        "usage", "--by", "day", "--format", "json", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, err
    days = json.loads(out)
    assert [(d["day"], d["messages"]) for d in days] == [("2027-03-01", 2), ("2027-03-02", 1)]
    reported = agents.reported_usage
    assert len(reported) == 3
    assert sum(d["input_tokens"] for d in days) == sum(u["input_tokens"] for u in reported)
    assert sum(d["output_tokens"] for d in days) == sum(u["output_tokens"] for u in reported)

    code, out, err = await run_cli("usage", "--by", "user", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    header, row, total = out.strip().splitlines()
    assert header.split() == ["USER", "MESSAGES", "INPUT_TOKENS", "OUTPUT_TOKENS"]
    assert row.split()[:2] == [f"telegram:{ALICE.id}", "3"]
    assert total.split() == ["TOTAL", *row.split()[1:]]
