"""`live_checks` against the fake platforms and agents over real HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.checks import CheckResult, config_warnings, live_checks
from bridge.config import Config, parse_config
from tests.fakes.agents import FAKE_AGENT_ID, FakeAgentServer
from tests.fakes.slack import FakeSlack
from tests.fakes.telegram import FakeTelegram

WRONG_TELEGRAM_TOKEN = "987654321:AAwrongTelegramTokenForTheChecks_xyz"


def make_config(
    tmp_path: Path,
    *,
    agents: FakeAgentServer,
    telegram: FakeTelegram | None = None,
    slack: FakeSlack | None = None,
    telegram_token: str | None = None,
    slack_bot_token: str | None = None,
    agent_key: str = "ak_right",
) -> Config:
    raw: dict[str, Any] = {
        "storage": {"url": f"sqlite+aiosqlite:///{tmp_path / 'bridge.db'}"},
        "agents": {
            "default": {
                "backend": "thinnest",
                "agent_id": FAKE_AGENT_ID,
                "api_key": agent_key,
                "base_url": agents.url,
                "timeout": 5.0,
                "max_retry_wait": 0.0,
            }
        },
    }
    if telegram is not None:
        raw["telegram"] = {
            "bot_token": telegram_token or telegram.token,
            "api_url": telegram.api_url,
            "allowed_users": ["*"],
        }
    if slack is not None:
        raw["slack"] = {
            "bot_token": slack_bot_token or slack.bot_token,
            "app_token": slack.app_token,
            "api_url": slack.api_url,
        }
    return parse_config(raw, base_dir=tmp_path)


def by_item(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {r.item: r for r in results}


async def test_everything_accepted(tmp_path: Path) -> None:
    async with (
        FakeAgentServer(api_key="ak_right") as agents,
        FakeTelegram() as telegram,
        FakeSlack() as slack,
    ):
        config = make_config(tmp_path, agents=agents, telegram=telegram, slack=slack)
        results = await live_checks(config)
    items = by_item(results)
    assert [r.item for r in results] == [
        "storage",
        "agents.default",
        "telegram",
        "slack",
        "slack app token",
    ]
    assert all(r.ok for r in results), results
    assert items["telegram"].detail == "bot @bridge_test_bot (id 123456789)"
    assert "T0FAKE" in items["slack"].detail
    assert [c.method for c in telegram.calls] == ["getMe"]
    assert [c.method for c in slack.calls] == ["auth.test", "apps.connections.open"]
    assert agents.chat_calls == []  # a check never spends an agent turn


async def test_bad_credentials_are_named_without_the_secret(tmp_path: Path) -> None:
    async with (
        FakeAgentServer(api_key="ak_right") as agents,
        FakeTelegram() as telegram,
        FakeSlack() as slack,
    ):
        config = make_config(
            tmp_path,
            agents=agents,
            telegram=telegram,
            slack=slack,
            telegram_token=WRONG_TELEGRAM_TOKEN,
            slack_bot_token="xoxb-wrong-token-123",
            agent_key="ak_wrong",
        )
        results = await live_checks(config)
    items = by_item(results)
    assert items["storage"].ok
    assert not items["telegram"].ok
    assert items["telegram"].detail == "Unauthorized: check telegram.bot_token"
    assert not items["slack"].ok
    assert items["slack"].detail == "invalid_auth: check slack.bot_token"
    assert items["slack app token"].ok
    assert not items["agents.default"].ok
    text = repr(results)
    for secret in (WRONG_TELEGRAM_TOKEN, "xoxb-wrong-token-123", "ak_wrong"):
        assert secret not in text


async def test_unreachable_platform_is_one_line(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        async with FakeTelegram() as telegram:
            config = make_config(tmp_path, agents=agents, telegram=telegram)
        # the fake is closed now: nothing listens on its port
        results = await live_checks(config)
    telegram_result = by_item(results)["telegram"]
    assert not telegram_result.ok
    assert telegram_result.detail.startswith("cannot connect: ConnectError")
    assert "\n" not in telegram_result.detail
    assert "AAfake" not in telegram_result.detail


async def test_an_unusable_database_is_named(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        config = make_config(tmp_path, agents=agents)
        broken = config.model_copy(
            update={
                "storage": config.storage.model_copy(
                    update={"url": "sqlite+aiosqlite:////nonexistent/dir/bridge.db"}
                )
            }
        )
        results = await live_checks(broken)
    storage = by_item(results)["storage"]
    assert not storage.ok
    assert storage.detail.startswith("storage.url: ")
    assert by_item(results)["agents.default"].ok


def warnings_for(telegram: dict[str, Any] | None = None, **slack: Any) -> list[str]:
    raw: dict[str, Any] = {"agents": {"default": {"backend": "echo"}}}
    if telegram is not None:
        raw["telegram"] = {"bot_token": "1:x", **telegram}
    if slack:
        raw["slack"] = {"bot_token": "xoxb-1", "app_token": "xapp-1", **slack}
    return config_warnings(parse_config(raw, base_dir=Path("/tmp"), environ={}))


def test_an_open_telegram_bot_is_a_warning() -> None:
    [warning] = warnings_for({"allowed_users": ["*"]})
    assert warning.startswith('telegram.allowed_users: "*" lets anyone on Telegram talk to the bot')


def test_usernames_in_the_allowlist_are_a_warning() -> None:
    [warning] = warnings_for({"allowed_users": [123, "@alice", "@bob"]})
    assert warning.startswith("telegram.allowed_users: @alice, @bob are usernames")
    assert "numeric user ids" in warning


def test_ids_only_and_slack_workspace_wide_are_no_warning() -> None:
    assert warnings_for({"allowed_users": [123, 456]}) == []
    # In Slack "*" is the workspace's members (other teams need allowed_teams).
    assert warnings_for(allowed_users=["*"], allowed_channels=["*"]) == []


def test_files_over_telegrams_getfile_limit_are_a_warning_without_a_local_server() -> None:
    def warnings(max_bytes: int, **telegram: Any) -> list[str]:
        raw: dict[str, Any] = {
            "agents": {"default": {"backend": "echo"}},
            "telegram": {"bot_token": "1:x", "allowed_users": [1], **telegram},
            "files": {"max_bytes": max_bytes},
        }
        return config_warnings(parse_config(raw, base_dir=Path("/tmp"), environ={}))

    [warning] = warnings(50 * 1024 * 1024)
    assert warning.startswith("files.max_bytes: 52428800 is above the 20 MB")
    assert warnings(20 * 1024 * 1024) == []
    assert warnings(50 * 1024 * 1024, api_url="http://127.0.0.1:8081/bot") == []
