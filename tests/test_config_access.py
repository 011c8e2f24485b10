"""The admins keys of approving people (``telegram.admins``, ``slack.admins``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import parse_config
from tests.test_config import problems

AGENTS = {"default": {"backend": "echo"}}
TELEGRAM = {"bot_token": "1:x", "allowed_users": [1]}
SLACK = {"bot_token": "xoxb-1", "app_token": "xapp-1"}


def test_admins_are_lists_of_user_ids() -> None:
    config = parse_config(
        {
            "agents": AGENTS,
            "telegram": {**TELEGRAM, "admins": [1001, 1002]},
            "slack": {**SLACK, "admins": ["U0ADMIN", "W0GRID"]},
        },
        base_dir=Path("/tmp"),
        environ={},
    )
    assert config.telegram is not None and config.telegram.admins == [1001, 1002]
    assert config.slack is not None and config.slack.admins == ["U0ADMIN", "W0GRID"]


def test_no_admins_by_default() -> None:
    config = parse_config(
        {"agents": AGENTS, "telegram": TELEGRAM, "slack": SLACK}, base_dir=Path("/tmp"), environ={}
    )
    assert config.telegram is not None and config.telegram.admins == []
    assert config.slack is not None and config.slack.admins == []


@pytest.mark.parametrize(
    ("section", "value", "expected"),
    [
        ("telegram", "*", 'telegram.admins[0]: "*" is not allowed here'),
        ("slack", "*", 'slack.admins[0]: "*" is not allowed here'),
        ("telegram", "@alice", 'telegram.admins[0]: "@alice": expected a numeric user id'),
        ("telegram", True, "telegram.admins[0]: expected an integer"),
        ("slack", "alice", 'slack.admins[0]: "alice" is a name'),
        ("slack", "C0123", "slack.admins[0]"),
    ],
)
def test_a_bad_admin_is_named_by_its_key(section: str, value: object, expected: str) -> None:
    base = TELEGRAM if section == "telegram" else SLACK
    [problem] = problems({"agents": AGENTS, section: {**base, "admins": [value]}})
    assert problem.startswith(expected), problem
