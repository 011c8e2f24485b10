"""``agent-bridge feedback list`` as a person runs it: a subprocess, on a store that
holds feedback given through the store's own API."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from bridge.model import ConversationKey, IncomingMessage
from storage import Store
from tests.test_cli import run_cli


async def seed(tmp_path: Path) -> tuple[Path, int]:
    url = f"sqlite+aiosqlite:///{tmp_path}/bridge.db"
    config = tmp_path / "agent-bridge.toml"
    config.write_text(f'[storage]\nurl = "{url}"\n\n[agents.default]\nbackend = "echo"\n')
    async with Store(url) as store:
        key = ConversationKey("slack", "T1", "C1", "1700000000.000001")
        message = await store.accept(
            IncomingMessage(key=key, event_id="e1", sender="U1", text="q", agent="default")
        )
        assert message is not None
        await store.record_feedback(message.id, "U7", "good")
        await store.record_feedback(message.id, "U7", "bad")  # a changed mind
    return config, message.id


async def test_feedback_list_as_a_table_json_and_csv(tmp_path: Path) -> None:
    config, message_id = await seed(tmp_path)

    code, out, err = await run_cli("feedback", "list", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    header, row = out.strip().splitlines()
    assert header.split() == ["TIME", "VALUE", "AGENT", "USER", "PLATFORM", "CHAT", "MESSAGE"]
    assert row.split()[2:] == ["bad", "default", "U7", "slack", "C1", str(message_id)]

    code, out, err = await run_cli(
        "feedback", "list", "--format", "json", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, err
    [entry] = json.loads(out)
    assert entry["value"] == "bad" and entry["user"] == "U7"
    assert entry["message_id"] == message_id and entry["agent"] == "default"
    assert entry["time"].endswith("+00:00")

    code, out, err = await run_cli(
        "feedback", "list", "--format", "csv", "--config", str(config), cwd=tmp_path
    )
    assert code == 0, err
    [line] = list(csv.DictReader(io.StringIO(out)))
    assert (line["value"], line["user"], line["message"]) == ("bad", "U7", str(message_id))


async def test_feedback_list_since(tmp_path: Path) -> None:
    config, _ = await seed(tmp_path)
    args = ("--config", str(config), "--format", "json")
    code, out, err = await run_cli("feedback", "list", "--since", "2000-01-01", *args, cwd=tmp_path)
    assert code == 0, err
    assert len(json.loads(out)) == 1
    code, out, err = await run_cli("feedback", "list", "--since", "2999-01-01", *args, cwd=tmp_path)
    assert code == 0, err
    assert json.loads(out) == []
    code, out, _ = await run_cli(
        "feedback", "list", "--since", "2999-01-01", "--config", str(config), cwd=tmp_path
    )
    assert out.strip() == "no feedback yet"
    code, _, err = await run_cli("feedback", "list", "--since", "last week", cwd=tmp_path)
    assert code == 2 and "--since" in err


async def test_feedback_alone_prints_its_help(tmp_path: Path) -> None:
    code, _, err = await run_cli("feedback", cwd=tmp_path)
    assert code == 2 and "usage: agent-bridge feedback" in err
