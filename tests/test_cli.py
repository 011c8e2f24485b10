"""`agent-bridge` as a person runs it: a subprocess with real stdin and stdout."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from bridge import __version__
from tests.fakes.agents import (
    FakeAgentServer,
    FakeResponse,
    peaka_config_toml,
    thinnest_config_toml,
)

ROOT = Path(__file__).resolve().parent.parent


async def run_cli(
    *args: str, stdin: str = "", cwd: Path, env: dict[str, str] | None = None, within: float = 30
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=_env(env),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), within)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BRIDGE")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def write_config(tmp_path: Path, agents_section: str) -> Path:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(f'[storage]\nurl = "sqlite+aiosqlite:///bridge.db"\n\n{agents_section}')
    return path


async def test_chat_without_config_uses_the_echo_agent(tmp_path: Path) -> None:
    code, out, err = await run_cli("chat", stdin="hello there\n", cwd=tmp_path)
    assert code == 0, err
    assert "default> hello there" in out
    assert "echo agent" in err and "config.example.toml" in err
    assert (tmp_path / "agent-bridge.db").exists()


async def test_chat_keeps_the_thinnest_session_and_reset_starts_over(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        config = write_config(tmp_path, thinnest_config_toml(agents.url))
        code, out, err = await run_cli(
            "chat",
            "--config",
            str(config),
            stdin="one\ntwo\n/reset\nthree\n/quit\nnever sent\n",
            cwd=tmp_path,
        )
        assert code == 0, err
        for word in ("one", "two", "three"):
            assert f"default> echo: {word}" in out
        assert "started a new conversation" in out
        sent = [c.json for c in agents.chat_calls]
        assert [s["message"] for s in sent] == ["one", "two", "three"]
        assert "session_id" not in sent[0]
        assert sent[1]["session_id"] == "sess-1"
        assert "session_id" not in sent[2]


async def test_chat_with_peaka_reuses_the_thread(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        config = write_config(tmp_path, peaka_config_toml(agents.url))
        code, out, err = await run_cli(
            "chat", "--config", str(config), stdin="a\nb\n", cwd=tmp_path
        )
        assert code == 0, err
        threads = {c.json["threadId"] for c in agents.chat_calls}
        assert len(threads) == 1 and "default> echo: b" in out


async def test_chat_shows_the_friendly_text_on_agent_errors(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        agents.script(FakeResponse(status=402, json={"detail": "Insufficient balance"}))
        config = write_config(tmp_path, thinnest_config_toml(agents.url))
        code, out, err = await run_cli("chat", "--config", str(config), stdin="hi\n", cwd=tmp_path)
        assert code == 0, err
        assert "out of credit" in out
        assert "Traceback" not in out + err


async def test_ctrl_c_leaves_cleanly(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "chat",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=_env(None),
    )
    assert proc.stdout is not None and proc.stdin is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    assert b"/reset" in line  # the help line: it is waiting for input
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0
    assert b"Traceback" not in err


async def test_sessions_list_and_reset(tmp_path: Path) -> None:
    async with FakeAgentServer() as agents:
        config = write_config(tmp_path, thinnest_config_toml(agents.url))
        code, _, err = await run_cli("chat", "--config", str(config), stdin="hi\n", cwd=tmp_path)
        assert code == 0, err
    code, out, err = await run_cli("sessions", "list", "--config", str(config), cwd=tmp_path)
    assert code == 0, err
    header, row = out.strip().splitlines()
    assert header.split()[:5] == ["PLATFORM", "CHAT", "THREAD", "AGENT", "SESSION"]
    assert row.split()[0] == "console" and "sess-1" in row
    code, out, err = await run_cli(
        "sessions", "reset", "--all", "--config", str(config), cwd=tmp_path
    )
    assert code == 0 and "reset 1 conversation" in out
    code, out, _ = await run_cli("sessions", "list", "--config", str(config), cwd=tmp_path)
    assert "sess-1" not in out
    code, _, err = await run_cli("sessions", "reset", "--config", str(config), cwd=tmp_path)
    assert code == 2 and "--all" in err


async def test_check_offline_describes_each_section_without_secrets(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[agents.default]\nbackend = "thinnest"\nagent_id = "ag_1"\napi_key = "${KEY}"\n',
    )
    code, out, err = await run_cli(
        "check", "--offline", "--config", str(config), cwd=tmp_path, env={"KEY": "ak_very_secret"}
    )
    assert code == 0, err
    assert "agents.default: thinnest, agent ag_1" in out
    assert "telegram: not configured" in out
    assert "ak_very_secret" not in out + err


async def test_run_without_config_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = await run_cli("run", cwd=tmp_path)
    assert code == 2 and "no config file" in err


async def test_version_and_help(tmp_path: Path) -> None:
    code, out, _ = await run_cli("--version", cwd=tmp_path)
    assert code == 0 and out.strip() == f"agent-bridge {__version__}"
    for command in (
        ["chat"],
        ["run"],
        ["check"],
        ["sessions", "list"],
        ["sessions", "reset"],
        ["db", "upgrade"],
    ):
        code, out, _ = await run_cli(*command, "--help", cwd=tmp_path)
        assert code == 0 and "usage: agent-bridge" in out, command


@pytest.mark.parametrize("agent", ["nope"])
async def test_unknown_agent_for_chat(tmp_path: Path, agent: str) -> None:
    code, _, err = await run_cli("chat", "--agent", agent, cwd=tmp_path)
    assert code == 2 and "--agent: no agent named 'nope'" in err


async def test_sessions_alone_prints_the_sessions_help(tmp_path: Path) -> None:
    code, out, err = await run_cli("sessions", cwd=tmp_path)
    assert code == 2
    assert "usage: agent-bridge sessions" in err
    assert "list" in err and "reset" in err
    assert "chat" not in out + err  # not the top-level help
    code, _, err = await run_cli("db", cwd=tmp_path)
    assert code == 2 and "usage: agent-bridge db" in err and "upgrade" in err


@pytest.mark.parametrize("command", ["list", "reset"])
async def test_a_wrong_platform_names_the_choices(tmp_path: Path, command: str) -> None:
    code, out, err = await run_cli("sessions", command, "--platform", "slak", cwd=tmp_path)
    assert code == 2 and out == ""
    assert "invalid choice: 'slak'" in err
    assert "'slack', 'telegram', 'console'" in err


async def test_check_says_an_open_bot_is_open_and_warns(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        '[agents.default]\nbackend = "echo"\n\n'
        '[telegram]\nbot_token = "${TG}"\nallowed_users = ["*", "@alice"]\n',
    )
    code, out, err = await run_cli(
        "check", "--offline", "--config", str(config), cwd=tmp_path, env={"TG": "1:secret"}
    )
    assert code == 0, err  # warnings do not change the exit code
    assert "anyone can talk to the bot" in out
    assert "allowed user entr" not in out
    assert "! 2 warnings:" in out
    assert 'telegram.allowed_users: "*" lets anyone on Telegram talk to the bot' in out
    assert "telegram.allowed_users: @alice is a username" in out
    assert "1:secret" not in out + err


async def test_check_shows_where_files_are_downloaded_and_whether_voice_is_on(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path,
        '[agents.default]\nbackend = "echo"\n\n'
        '[telegram]\nbot_token = "${TG}"\nallowed_users = [1]\n'
        'api_url = "http://127.0.0.1:8081/tg/bot"\n\n'
        "[files]\nmax_bytes = 31457280\n\n"
        '[transcription]\nbase_url = "http://127.0.0.1:9000/v1"\n',
    )
    code, out, err = await run_cli(
        "check", "--offline", "--config", str(config), cwd=tmp_path, env={"TG": "1:secret"}
    )
    assert code == 0, err
    assert "  files from http://127.0.0.1:8081/tg/file/bot<token>/<path>" in out
    assert "files: up to 30 MB each, documents cut at 40000 characters; voice via " in out
    # A local Bot API server serves files above getFile's 20 MB: no warning.
    assert "files.max_bytes" not in out
    assert "1:secret" not in out + err


@pytest.mark.parametrize(
    ("flags", "configured", "expected"),
    [
        ([], "warning", "warning"),
        (["-v"], "warning", "info"),
        (["-vv"], "info", "debug"),
        (["-v"], "debug", "debug"),  # -v never makes the daemon quieter
    ],
)
def test_run_verbosity_raises_the_daemon_log_level(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: list[str],
    configured: str,
    expected: str,
) -> None:
    from bridge import daemon
    from bridge.cli import main
    from bridge.config import Config

    seen: list[Config] = []

    async def fake_run(config: Config, *, config_path: Path | None) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr(daemon, "run", fake_run)
    path = write_config(
        tmp_path, f'[agents.default]\nbackend = "echo"\n\n[daemon]\nlog_level = "{configured}"\n'
    )
    assert main(["run", *flags, "--config", str(path)]) == 0
    assert [c.daemon.log_level for c in seen] == [expected]


async def test_run_vv_logs_at_debug(tmp_path: Path) -> None:
    """The real daemon: with -vv its DEBUG lines appear although the file says info."""
    config = write_config(
        tmp_path,
        '[agents.default]\nbackend = "echo"\n\n'
        '[telegram]\nbot_token = "1:x"\nallowed_users = ["*"]\n'
        'api_url = "http://127.0.0.1:9/bot"\n\n[daemon]\nlog_level = "info"\n',
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bridge",
        "run",
        "-vv",
        "--config",
        str(config),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=tmp_path,
        env=_env(None),
    )
    assert proc.stderr is not None
    lines: list[bytes] = []
    try:
        async with asyncio.timeout(20):
            while not any(b"DEBUG" in line for line in lines):
                line = await proc.stderr.readline()
                if not line:
                    break
                lines.append(line)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await proc.communicate()
    assert any(b"DEBUG" in line for line in lines), b"".join(lines).decode()
