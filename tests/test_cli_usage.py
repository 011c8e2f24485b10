"""``agent-bridge usage`` as a person runs it: a subprocess, on a store charged
through the store's own API (``reserve_usage``) on two days, for two users."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

from bridge.budgets import Charge
from storage import Store
from tests.test_cli import run_cli


async def seed(tmp_path: Path) -> Path:
    url = f"sqlite+aiosqlite:///{tmp_path}/bridge.db"
    config = tmp_path / "agent-bridge.toml"
    config.write_text(f'[storage]\nurl = "{url}"\n\n[agents.default]\nbackend = "echo"\n')
    first, second = datetime(2027, 3, 1, 9, tzinfo=UTC), datetime(2027, 3, 2, 9, tzinfo=UTC)
    async with Store(url) as store:
        for message_id, user, agent, at in [
            (1, "telegram:7", "default", first),
            (2, "telegram:7", "default", second),
            (3, "slack:U1", "analytics", second),
        ]:
            chat = user.replace(":", ":c")
            assert await store.reserve_usage(Charge(message_id, user, chat, agent, at), []) is None
    return config


async def test_usage_by_day_user_and_agent_in_every_format(tmp_path: Path) -> None:
    config = await seed(tmp_path)
    args = ("--config", str(config))

    code, out, err = await run_cli("usage", *args, cwd=tmp_path)
    assert code == 0, err
    assert [line.split() for line in out.strip().splitlines()] == [
        ["DAY", "MESSAGES", "INPUT_TOKENS", "OUTPUT_TOKENS"],
        ["2027-03-01", "1", "0", "0"],
        ["2027-03-02", "2", "0", "0"],
        ["TOTAL", "3", "0", "0"],
    ]

    code, out, err = await run_cli(
        "usage", "--by", "agent", "--format", "json", *args, cwd=tmp_path
    )
    assert code == 0, err
    assert json.loads(out) == [
        {"agent": "analytics", "messages": 1, "input_tokens": 0, "output_tokens": 0},
        {"agent": "default", "messages": 2, "input_tokens": 0, "output_tokens": 0},
    ]

    code, out, err = await run_cli(
        "usage", "--by", "user", "--since", "2027-03-02", "--format", "csv", *args, cwd=tmp_path
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["user"], r["messages"]) for r in rows] == [("slack:U1", "1"), ("telegram:7", "1")]

    code, out, err = await run_cli(
        "usage", "--by", "chat", "--since", "2028-01-01", *args, cwd=tmp_path
    )
    assert (code, out.strip()) == (0, "no usage yet")


async def test_a_bad_date_is_a_usage_error(tmp_path: Path) -> None:
    config = await seed(tmp_path)
    code, _, err = await run_cli("usage", "--since", "March", "--config", str(config), cwd=tmp_path)
    assert code == 2
    assert "expected YYYY-MM-DD" in err
