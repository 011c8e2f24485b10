"""``agent-bridge check`` for ``backend = "http"`` agents: the resolved request (never a
secret), the free live probe, and ``--probe AGENT``, the one check that spends a turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.agent_platforms import (
    DIFY_KEY,
    LANGFLOW_KEY,
    SECRETS,
    FakePlatforms,
    http_config_toml,
)
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml
from tests.test_cli import run_cli, write_config


@pytest.fixture
async def fake() -> AsyncIterator[FakePlatforms]:
    async with FakePlatforms() as server:
        yield server


def with_env_key(section: str, secret: str, var: str) -> str:
    """The section with its key read from ``${var}``, as a user writes it."""
    return section.replace(f'"{secret}"', f'"${{{var}}}"')


async def test_check_offline_shows_each_http_request_without_secrets(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    sections = (
        with_env_key(http_config_toml("dify", fake, "dify"), DIFY_KEY, "DIFY_KEY")
        + http_config_toml("langflow", fake, "flow")
        + http_config_toml("n8n", fake, "hook")
    )
    config = write_config(tmp_path, sections)

    code, out, err = await run_cli(
        "check", "--offline", "--config", str(config), cwd=tmp_path, env={"DIFY_KEY": DIFY_KEY}
    )

    assert code == 0, err
    assert "agents.dify: http, preset dify" in out
    assert f"request: POST {fake.url}/v1/chat-messages" in out
    assert "headers: Authorization: Bearer ***" in out
    assert '"conversation_id": "{session_id}"' in out
    assert "session: server" in out
    assert "headers: x-api-key: ***" in out  # langflow
    assert "headers: Authorization: Basic ***" in out  # n8n
    assert "reachability only" in out and "checks the key" in out
    assert not any(secret in out + err for secret in SECRETS)
    assert LANGFLOW_KEY not in out


async def test_check_offline_names_every_problem_of_an_http_agent(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        "[agents.default]\n"
        'backend = "http"\n'
        'url = "https://agent.example/{flow}"\n'
        'answer_path = "outputs[0"\n'
        'body = { q = "{mesage}" }\n'
        'headers = { "X-Key" = "${NOT_SET}" }\n',
    )

    code, _, err = await run_cli("check", "--offline", "--config", str(config), cwd=tmp_path)

    assert code == 2
    lines = err.splitlines()
    assert "config: agents.default.url: {flow} has no value: set params.flow" in lines
    assert any(line.startswith("config: agents.default.answer_path: not a valid") for line in lines)
    assert any(
        line.startswith("config: agents.default.body: in q: unknown placeholder") for line in lines
    )
    assert "config: agents.default.headers.X-Key: environment variable NOT_SET is not set" in lines


async def test_live_check_probes_http_agents_for_free(tmp_path: Path, fake: FakePlatforms) -> None:
    config = write_config(
        tmp_path, http_config_toml("dify", fake, "dify") + http_config_toml("n8n", fake, "hook")
    )

    code, out, err = await run_cli("check", "--config", str(config), cwd=tmp_path)

    assert code == 0, out + err
    assert "✓ agents.dify: dify agent reachable, key accepted" in out
    assert "✓ agents.hook: n8n agent reachable" in out and "not verified" in out
    assert fake.chat_calls() == []  # no turn spent


async def test_probe_sends_one_message_and_shows_what_came_back(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    config = write_config(tmp_path, http_config_toml("dify", fake, "dify"))

    code, out, err = await run_cli(
        "check", "--probe", "dify", "--config", str(config), cwd=tmp_path
    )

    assert code == 0, out + err
    assert "→ agents.dify: sending 'ping'" in out
    assert "✓ agents.dify: answered in " in out
    assert "answer: echo: ping" in out
    assert ":conv-1" in out  # the session
    assert "usage: 1 in, 2 out, 3 total tokens" in out
    [call] = fake.chat_calls("dify")
    assert call.json["query"] == "ping"


async def test_probe_text_and_any_backend(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        config = write_config(tmp_path, thinnest_config_toml(agents.url))

        code, out, err = await run_cli(
            "check",
            "--probe",
            "default",
            "--text",
            "hello bot",
            "--config",
            str(config),
            cwd=tmp_path,
        )

        assert code == 0, out + err
        assert "answer: echo: hello bot" in out and "session: sess-1" in out


async def test_probe_of_an_unknown_agent_lists_the_agents(
    tmp_path: Path, fake: FakePlatforms
) -> None:
    config = write_config(
        tmp_path, http_config_toml("dify", fake, "dify") + http_config_toml("n8n", fake, "hook")
    )

    code, _, err = await run_cli("check", "--probe", "difi", "--config", str(config), cwd=tmp_path)

    assert code == 2
    assert err.strip() == (
        "config: --probe: no agent named 'difi' (configured: dify, hook); did you mean \"dify\"?"
    )
    assert fake.calls == []


async def test_probe_failure_is_exit_1_with_the_reason(tmp_path: Path, fake: FakePlatforms) -> None:
    fake.dify_quota = "status"
    config = write_config(tmp_path, http_config_toml("dify", fake, "dify"))

    code, out, err = await run_cli(
        "check", "--probe", "dify", "--config", str(config), cwd=tmp_path
    )

    assert code == 1
    assert "✗ agents.dify: HTTP 400 (provider_quota_exceeded)" in out
    assert "out of credit" in out
    assert DIFY_KEY not in out + err


async def test_probe_shows_the_flowise_session_warning(tmp_path: Path, fake: FakePlatforms) -> None:
    fake.flowise_override = False
    config = write_config(tmp_path, http_config_toml("flowise", fake))

    code, out, err = await run_cli(
        "check", "--probe", "default", "--config", str(config), cwd=tmp_path
    )

    assert code == 0, out + err
    assert "overrideConfig" in err


async def test_probe_and_offline_do_not_go_together(tmp_path: Path, fake: FakePlatforms) -> None:
    config = write_config(tmp_path, http_config_toml("n8n", fake))

    code, _, err = await run_cli(
        "check", "--probe", "default", "--offline", "--config", str(config), cwd=tmp_path
    )

    assert code == 2 and "--offline" in err
    assert fake.calls == []
