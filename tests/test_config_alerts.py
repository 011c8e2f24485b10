"""``[alerts]`` (bridge/config/alerts.py): validated, and every error names its key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import ConfigError, parse_config

AGENTS = {"default": {"backend": "echo"}}
TELEGRAM = {"bot_token": "1:abc", "allowed_users": [1]}
SLACK = {"bot_token": "xoxb-1", "app_token": "xapp-1"}


def problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir=Path("/tmp"), environ={})
    return info.value.problems


def test_a_telegram_chat_and_a_slack_channel_with_the_defaults() -> None:
    config = parse_config(
        {
            "agents": AGENTS,
            "telegram": TELEGRAM,
            "slack": SLACK,
            "alerts": {"telegram_chat": -1001234567890, "slack_channel": "C0ADMIN"},
        },
        base_dir=Path("/tmp"),
        environ={},
    )
    assert config.alerts is not None
    assert config.alerts.telegram_chat == -1001234567890
    assert config.alerts.slack_channel == "C0ADMIN"
    assert config.alerts.repeat_after == 3600
    assert config.alerts.degraded_after == 300


def test_no_alerts_section_means_no_alerts() -> None:
    config = parse_config({"agents": AGENTS}, base_dir=Path("/tmp"), environ={})
    assert config.alerts is None


def test_a_destination_needs_its_platform_configured() -> None:
    found = problems({"agents": AGENTS, "alerts": {"telegram_chat": 5}})
    assert found == [
        "alerts.telegram_chat: alerts to Telegram are sent by the bridge's Telegram "
        "connection: configure [telegram] too, or remove alerts.telegram_chat"
    ]
    found = problems(
        {"agents": AGENTS, "telegram": TELEGRAM, "alerts": {"slack_channel": "C0ADMIN"}}
    )
    assert [p.partition(":")[0] for p in found] == ["alerts.slack_channel"]
    assert "configure [slack]" in found[0]


def test_an_alerts_section_without_a_destination_is_named() -> None:
    found = problems({"agents": AGENTS, "telegram": TELEGRAM, "alerts": {"repeat_after": 60}})
    assert found == ["alerts: set telegram_chat or slack_channel (or both), or remove [alerts]"]


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ({"telegram_chat": "-100123"}, "alerts.telegram_chat: expected an integer"),
        ({"telegram_chat": 1, "repeat_after": 0}, "alerts.repeat_after: "),
        ({"telegram_chat": 1, "repeat_after": "1h"}, "alerts.repeat_after: expected a number"),
        ({"telegram_chat": 1, "degraded_after": -5}, "alerts.degraded_after: "),
        ({"telegram_chat": 1, "slack_channel": "#admins"}, "alerts.slack_channel: "),
        ({"telegram_chat": 1, "slack_channel": "*"}, "alerts.slack_channel: "),
        ({"telegram_chat": 1, "repeat_afer": 60}, "alerts.repeat_afer: unknown key"),
    ],
)
def test_a_wrong_value_names_its_key(alerts: dict, expected: str) -> None:
    found = problems({"agents": AGENTS, "telegram": TELEGRAM, "slack": SLACK, "alerts": alerts})
    assert len(found) == 1 and found[0].startswith(expected), found


def test_a_wrong_value_and_a_missing_platform_are_reported_at_once() -> None:
    found = problems({"agents": AGENTS, "alerts": {"slack_channel": "C0ADMIN", "repeat_after": 0}})
    assert {p.partition(":")[0] for p in found} == {"alerts.slack_channel", "alerts.repeat_after"}


def test_the_example_documents_every_key_and_works_uncommented(tmp_path: Path) -> None:
    from bridge.config import AlertsConfig, load_config

    example = (Path(__file__).resolve().parent.parent / "config.example.toml").read_text()
    for key in AlertsConfig.model_fields:
        assert re.search(rf"^# {key} = ", example, re.M), f"alerts.{key} undocumented"
    # Its [alerts] section, uncommented, is valid beside the example's platforms.
    head, _, section = example.partition("# [alerts]\n")
    active = "\n".join(line.removeprefix("# ") for line in section.splitlines())
    path = tmp_path / "agent-bridge.toml"
    path.write_text(f"{head}[alerts]\n{active}\n", encoding="utf-8")
    names = set(
        re.findall(
            r"\$\{([A-Z_]+)\}", "\n".join(line.partition("#")[0] for line in example.splitlines())
        )
    )
    config = load_config(path, {name: f"value-{name.lower()}" for name in names})
    assert config.alerts is not None
    assert config.alerts.telegram_chat == -1001234567890
    assert config.alerts.slack_channel == "C0ADMINS"


def test_check_offline_describes_the_alerts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    path = tmp_path / "agent-bridge.toml"
    path.write_text(
        '[agents.default]\nbackend = "echo"\n\n'
        '[telegram]\nbot_token = "1:abc"\nallowed_users = [1]\n\n'
        "[alerts]\ntelegram_chat = -100123\nrepeat_after = 600\n",
        encoding="utf-8",
    )
    assert main(["check", "--offline", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "alerts: to Telegram chat -100123, each problem at most every 600s" in out
