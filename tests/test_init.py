"""`agent-bridge init` as a new user runs it on a fresh clone: flags (or answers on a
terminal), then `check --offline` and `chat` with no hand edit."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from bridge.cli import main
from tests.fakes.agents import FAKE_AGENT_ID, FAKE_API_KEY, FAKE_PROJECT_ID, FakeAgentServer
from tests.test_cli import run_cli


async def test_echo_init_then_check_and_chat_work_unedited(tmp_path: Path) -> None:
    code, out, err = await run_cli("init", "--backend", "echo", cwd=tmp_path)
    assert code == 0, err
    assert "wrote agent-bridge.toml" in out and "✓ config agent-bridge.toml" in out
    assert "next: agent-bridge chat" in out
    code, out, err = await run_cli("check", "--offline", cwd=tmp_path)
    assert code == 0, err
    assert "agents.default: echo" in out
    code, out, err = await run_cli("chat", stdin="hello there\n", cwd=tmp_path)
    assert code == 0, err
    assert "default> hello there" in out
    assert "echo agent" not in err  # it used the written file, not the built-in default


async def test_thinnest_init_names_the_variable_never_the_key(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        env = {"MY_AGENT_KEY": FAKE_API_KEY}
        code, out, err = await run_cli(
            "init",
            "--backend",
            "thinnest",
            "--agent-id",
            FAKE_AGENT_ID,
            "--api-key-env",
            "MY_AGENT_KEY",
            "--base-url",
            agents.url,
            cwd=tmp_path,
            env=env,
        )
        assert code == 0, err
        text = (tmp_path / "agent-bridge.toml").read_text()
        assert 'api_key = "${MY_AGENT_KEY}"' in text and FAKE_API_KEY not in text
        assert "MY_AGENT_KEY" in text.split("[storage]")[0]  # the header says what to export
        code, out, err = await run_cli("check", "--offline", cwd=tmp_path, env=env)
        assert code == 0, err
        code, out, err = await run_cli("chat", stdin="one\ntwo\n", cwd=tmp_path, env=env)
        assert code == 0, err
        assert "default> echo: one" in out and "default> echo: two" in out
        assert [c.json["message"] for c in agents.chat_calls] == ["one", "two"]
        assert FAKE_API_KEY not in out + err


async def test_init_with_platforms_and_a_key_file(tmp_path: Path) -> None:
    key = tmp_path / "secrets" / "peaka"
    key.parent.mkdir()
    key.write_text("pk_very_secret\n")
    code, out, err = await run_cli(
        "init",
        "--backend",
        "peaka",
        "--project-id",
        FAKE_PROJECT_ID,
        "--zone",
        "eu",
        "--api-key-file",
        "secrets/peaka",
        "--telegram-users",
        "123456789, @alice",
        "--slack",
        "--slack-channels",
        "C0123,im",
        "--path",
        "conf/bridge.toml",
        cwd=tmp_path,
    )
    path = tmp_path / "conf" / "bridge.toml"
    # The tokens' variables are not set yet: listed as what to do, and init succeeded.
    assert code == 0, err
    assert "telegram.bot_token: environment variable TELEGRAM_BOT_TOKEN is not set" in out
    raw = tomllib.loads(path.read_text())
    assert raw["agents"]["default"] == {
        "backend": "peaka",
        "project_id": FAKE_PROJECT_ID,
        "zone": "eu",
        "api_key_file": str(key),  # typed relative to here, written absolute
    }
    assert raw["telegram"]["allowed_users"] == [123456789, "@alice"]
    assert raw["slack"]["allowed_channels"] == ["C0123", "im"]
    assert "pk_very_secret" not in path.read_text()
    env = {"TELEGRAM_BOT_TOKEN": "1:tg", "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1"}
    code, out, err = await run_cli(
        "check", "--offline", "--config", str(path), cwd=tmp_path, env=env
    )
    assert code == 0, err
    assert f"project {FAKE_PROJECT_ID} at https://partner.eu.peaka.studio" in out
    assert "telegram.allowed_users: @alice is a username" in out


async def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    path = tmp_path / "agent-bridge.toml"
    path.write_text("# mine\n")
    code, _, err = await run_cli("init", "--backend", "echo", cwd=tmp_path)
    assert code == 2 and "agent-bridge.toml exists; pass --force" in err
    assert path.read_text() == "# mine\n"
    code, _, err = await run_cli("init", "--backend", "echo", "--force", cwd=tmp_path)
    assert code == 0, err
    assert 'backend = "echo"' in path.read_text()


async def test_init_without_a_terminal_names_every_missing_flag(tmp_path: Path) -> None:
    code, _, err = await run_cli("init", cwd=tmp_path)
    assert code == 2 and "init: --backend: required" in err
    code, _, err = await run_cli(
        "init", "--backend", "thinnest", "--telegram", "--api-key-env", "not a name", cwd=tmp_path
    )
    assert code == 2
    assert "init: --agent-id: required" in err
    assert "init: --api-key-env: 'not a name' is not an environment variable name" in err
    assert "init: --telegram-users: required" in err
    code, _, err = await run_cli("init", "--backend", "echo", "--agent-id", "x", cwd=tmp_path)
    assert code == 2 and "--agent-id: not used by --backend echo" in err
    assert not (tmp_path / "agent-bridge.toml").exists()


async def test_init_does_not_write_a_config_that_would_not_validate(tmp_path: Path) -> None:
    code, _, err = await run_cli(
        "init", "--backend", "echo", "--slack-users", "alice", cwd=tmp_path
    )
    assert code == 2
    assert 'slack.allowed_users[0]: "alice" is a name: expected a user id' in err
    assert not (tmp_path / "agent-bridge.toml").exists()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_init_asks_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("THINNEST_API_KEY", raising=False)
    answers = [
        "thinest",  # a typo: asked again
        "thinnest",
        "ag_123",
        "",  # the key's variable: the default, THINNEST_API_KEY
        "y",  # Telegram
        "n",  # Slack
        "TG_TOKEN",
        "42, @bob",
    ]
    monkeypatch.setattr("sys.stdin", _Terminal("\n".join(answers) + "\n"))
    assert main(["init"]) == 0
    out = capsys.readouterr().out
    assert "choose thinnest, peaka, echo" in out
    raw = tomllib.loads((tmp_path / "agent-bridge.toml").read_text())
    assert raw["agents"]["default"] == {
        "backend": "thinnest",
        "agent_id": "ag_123",
        "api_key": "${THINNEST_API_KEY}",
    }
    assert raw["telegram"]["bot_token"] == "${TG_TOKEN}"
    assert raw["telegram"]["allowed_users"] == [42, "@bob"]
    assert "slack" not in raw


def test_init_leaves_without_writing_when_the_answers_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", _Terminal("thinnest\n"))
    assert main(["init"]) == 0  # Ctrl-D: like Ctrl-C, a clean exit
    assert not (tmp_path / "agent-bridge.toml").exists()
