from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import (
    ConfigError,
    HttpAgentConfig,
    OpenAIAgentConfig,
    PeakaAgentConfig,
    ThinnestAgentConfig,
    find_config_path,
    load_config,
    parse_config,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "ak_live_SuperSecretValue123"


def problems(raw: dict, env: dict | None = None, base: Path = Path("/tmp")) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, base_dir=base, environ=env or {})
    return info.value.problems


def thinnest(**extra: object) -> dict:
    return {"backend": "thinnest", "agent_id": "ag_1", "api_key": SECRET, **extra}


def _active_variables(text: str) -> set[str]:
    """The ${VAR}s of the example's lines that are not comments."""
    active = "\n".join(line.partition("#")[0] for line in text.splitlines())
    return set(re.findall(r"\$\{([A-Z_]+)\}", active))


def test_example_config_loads_with_the_variables_it_names(tmp_path: Path) -> None:
    text = (ROOT / "config.example.toml").read_text()
    header = text.partition("\n[")[0]
    names = _active_variables(text)
    # The opening comments tell the user every variable to export.
    assert names and all(name in header for name in names), names - set(header.split())
    env = {name: f"value-of-{name.lower().replace('_', '-')}" for name in names}
    config = load_config(ROOT / "config.example.toml", env)
    assert config.telegram is not None and config.slack is not None
    assert isinstance(config.agents["analytics"], PeakaAgentConfig)
    assert config.agents["analytics"].api_key.get_secret_value() == "value-of-peaka-api-key"
    assert isinstance(config.agents["assistant"], OpenAIAgentConfig)
    assert isinstance(config.agents["dify"], HttpAgentConfig)
    assert config.agents["dify"].preset == "dify"
    assert config.daemon.http_listen == "127.0.0.1:9464"
    # Every key of every section is documented in the example.
    for section, model in [
        ("storage", type(config.storage)),
        ("dispatcher", type(config.dispatcher)),
        ("telegram", type(config.telegram)),
        ("slack", type(config.slack)),
        ("daemon", type(config.daemon)),
        ("messages", type(config.messages)),
        ("files", type(config.files)),
        ("transcription", type(config.transcription)),
    ]:
        for key in model.model_fields:
            assert re.search(rf"^#? ?{key}(_file)? =", text, re.M), f"{section}.{key} undocumented"
    for model in (ThinnestAgentConfig, PeakaAgentConfig):
        for key in model.model_fields:
            assert re.search(rf"^#? ?{key}(_file)? =", text, re.M), f"agents.*.{key} undocumented"


def test_typo_gets_a_did_you_mean() -> None:
    raw = {"agents": {"default": thinnest(agentid="x")}, "dispatcher": {"max_concurency": 3}}
    found = problems(raw)
    assert 'agents.default.agentid: unknown key; did you mean "agent_id"?' in found
    assert 'dispatcher.max_concurency: unknown key; did you mean "max_concurrency"?' in found


def test_unknown_section_is_named() -> None:
    found = problems({"agents": {"default": thinnest()}, "telegarm": {}})
    assert found == ['telegarm: unknown section; did you mean "telegram"?']


def test_missing_environment_variable_names_key_and_variable() -> None:
    found = problems({"agents": {"default": thinnest(api_key="${THINNEST_API_KEY}")}})
    assert found == ["agents.default.api_key: environment variable THINNEST_API_KEY is not set"]


def test_wrong_backend_lists_the_choices() -> None:
    found = problems({"agents": {"default": {"backend": "thinnst"}}})
    assert found == [
        'agents.default.backend: expected one of "thinnest", "peaka", "openai", "http", "echo"'
    ]


def test_wrong_type_is_an_error_not_a_coercion() -> None:
    found = problems({"agents": {"default": thinnest(timeout="60")}})
    assert found == ["agents.default.timeout: expected a number"]


def test_all_problems_reported_at_once() -> None:
    raw = {
        "agents": {"default": thinnest(zone="us"), "b": {"backend": "peaka", "project_id": "p"}},
        "telegram": {"bot_token": "1:abc", "allowed_users": []},
    }
    found = problems(raw)
    assert "agents.default.zone: unknown key" in found[0] or any(
        p.startswith("agents.default.zone: unknown key") for p in found
    )
    assert "agents.b.api_key: missing (required)" in found
    assert 'telegram.allowed_users: list at least one user, or ["*"] to let anyone in' in found


def test_secret_from_file_and_never_in_errors_or_repr(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(SECRET + "\n")
    config = parse_config(
        {
            "agents": {
                "default": {"backend": "thinnest", "agent_id": "a", "api_key_file": str(key_file)}
            }
        },
        base_dir=tmp_path,
        environ={},
    )
    agent = config.agents["default"]
    assert isinstance(agent, ThinnestAgentConfig)
    assert agent.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(config) and SECRET not in str(config)
    # A wrong type next to a secret: the error names the key, never the value.
    found = problems({"agents": {"default": thinnest(timeout=SECRET)}})
    assert all(SECRET not in p for p in found)


def test_relative_secret_file_resolves_against_config_folder(tmp_path: Path) -> None:
    (tmp_path / "key").write_text("k1")
    config = parse_config(
        {"agents": {"default": {"backend": "thinnest", "agent_id": "a", "api_key_file": "key"}}},
        base_dir=tmp_path,
        environ={},
    )
    agent = config.agents["default"]
    assert isinstance(agent, ThinnestAgentConfig)
    assert agent.api_key.get_secret_value() == "k1"


def test_secret_file_problems() -> None:
    raw = {"agents": {"default": thinnest(api_key_file="/nonexistent/key")}}
    assert problems(raw) == [
        "agents.default.api_key_file: set either api_key or api_key_file, not both"
    ]
    raw = {
        "agents": {"default": {"backend": "thinnest", "agent_id": "a", "api_key_file": "/no/key"}}
    }
    assert problems(raw) == [
        "agents.default.api_key_file: cannot read '/no/key': No such file or directory"
    ]


def test_relative_sqlite_path_resolves_against_the_config_folder(tmp_path: Path) -> None:
    config = parse_config(
        {
            "storage": {"url": "sqlite+aiosqlite:///data/bridge.db"},
            "agents": {"a": {"backend": "echo"}},
        },
        base_dir=tmp_path,
    )
    assert config.storage.url == f"sqlite+aiosqlite:///{tmp_path}/data/bridge.db"


def test_postgres_password_hidden_from_repr_and_display() -> None:
    config = parse_config(
        {
            "storage": {"url": "postgresql+asyncpg://bridge:hunter2@db/bridge"},
            "agents": {"a": {"backend": "echo"}},
        },
        base_dir=Path("/tmp"),
    )
    assert "hunter2" not in repr(config)
    assert "hunter2" not in config.storage.display_url


def test_cross_references_are_checked() -> None:
    raw = {
        "agents": {"default": {"backend": "echo"}},
        "telegram": {
            "bot_token": "1:x",
            "allowed_users": ["*"],
            "agent": "defualt",
            "mode": "webhook",
            "chat_agents": {"-100": "nope"},
        },
        "slack": {"bot_token": "xoxb-1", "mode": "http"},
        "messages": {"rate_limited": "wait {seconds}"},
    }
    found = problems(raw)
    assert (
        'telegram.agent: no agent named "defualt" (define [agents.defualt]); '
        'did you mean "default"?' in found
    )
    assert 'telegram.chat_agents.-100: no agent named "nope" (define [agents.nope])' in found
    assert 'telegram.webhook_url: required when mode = "webhook"' in found
    assert 'telegram.webhook_secret: required when mode = "webhook"' in found
    assert 'slack.signing_secret: required when mode = "http"' in found
    assert "messages.rate_limited: unknown placeholder {seconds} (use {retry_after})" in found


def test_socket_mode_needs_app_token() -> None:
    raw = {"agents": {"default": {"backend": "echo"}}, "slack": {"bot_token": "xoxb-1"}}
    assert problems(raw) == ['slack.app_token: required in Socket Mode (or set mode = "http")']


def test_config_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config_path(None, {}) is None
    (tmp_path / "agent-bridge.toml").write_text("")
    assert find_config_path(None, {}) == Path("agent-bridge.toml")
    other = tmp_path / "other.toml"
    other.write_text("")
    assert find_config_path(None, {"AGENT_BRIDGE_CONFIG": str(other)}) == other
    explicit = tmp_path / "explicit.toml"
    explicit.write_text("")
    assert find_config_path(explicit, {"AGENT_BRIDGE_CONFIG": str(other)}) == explicit
    with pytest.raises(ConfigError, match="--config: config file"):
        find_config_path(tmp_path / "missing.toml", {})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            '[agents.default]\nbackend = "thinnest"\nagent_id = "a"\napi_key = "${NOPE_KEY}"\n',
            "config: agents.default.api_key: environment variable NOPE_KEY is not set",
        ),
        (
            '[agents.default]\nbackend = "echo"\ntimout = 3\n',
            'config: agents.default.timout: unknown key; did you mean "timeout"?',
        ),
        (
            '[agents.default]\nbackend = "echo"\ntimeout = "3"\n',
            "config: agents.default.timeout: expected a number",
        ),
        ("[agents.default\n", "not valid TOML"),
    ],
)
def test_cli_exits_2_naming_the_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
    expected: str,
) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    path = tmp_path / "bad.toml"
    path.write_text(body)
    assert main(["check", "--offline", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err


def test_example_copied_as_is_passes_check_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """As a user does it: copy, export what the comments name, `check --offline`."""
    text = (ROOT / "config.example.toml").read_text()
    copy = tmp_path / "agent-bridge.toml"
    copy.write_text(text)
    monkeypatch.chdir(tmp_path)
    for name in _active_variables(text):
        monkeypatch.delenv(name, raising=False)
    # Without the variables: one line per variable, nothing about files or folders.
    assert main(["check", "--offline"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err and all("environment variable" in line and "is not set" in line for line in err)
    for name in _active_variables(text):
        monkeypatch.setenv(name, "set-by-the-user")
    assert main(["check", "--offline"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "✓ config agent-bridge.toml" in out and "set-by-the-user" not in out


def test_secret_file_from_an_unset_variable_names_only_the_variable() -> None:
    raw = {"agents": {"a": {"backend": "peaka", "project_id": "p", "api_key_file": "${NOPE}"}}}
    assert problems(raw) == ["agents.a.api_key_file: environment variable NOPE is not set"]


def test_cross_checks_run_alongside_field_errors() -> None:
    """Everything in one pass: cross-key checks do not wait for the fields to be fixed."""
    raw = {
        "agents": {
            "default": {"backend": "echo", "timeout": "slow"},
            "b": {"backend": "peaka", "project_id": "p"},
        },
        "telegram": {
            "bot_token": "1:x",
            "allowed_users": [],
            "agent": "nope",
            "mode": "webhook",
            "listen": "nowhere",
        },
        "slack": {"bot_token": "xoxb-1", "allowed_users": ["bob"], "agent": "defualt"},
    }
    found = problems(raw)
    # field errors
    assert "agents.default.timeout: expected a number" in found
    assert "agents.b.api_key: missing (required)" in found
    assert 'telegram.allowed_users: list at least one user, or ["*"] to let anyone in' in found
    assert any(p.startswith("telegram.listen: ") for p in found)
    assert any(p.startswith("slack.allowed_users[0]: ") for p in found)
    # cross-checks, in the same pass
    assert 'telegram.agent: no agent named "nope" (define [agents.nope])' in found
    assert 'telegram.webhook_url: required when mode = "webhook"' in found
    assert 'telegram.webhook_secret: required when mode = "webhook"' in found
    assert any(p.startswith('slack.agent: no agent named "defualt"') for p in found)
    assert 'slack.app_token: required in Socket Mode (or set mode = "http")' in found


def test_a_wrong_key_is_not_also_blamed_by_the_cross_checks() -> None:
    raw = {
        "agents": {"default": {"backend": "echo"}},
        "telegram": {"bot_token": "1:x", "allowed_users": ["*"], "agent": 5},
    }
    assert problems(raw) == ["telegram.agent: expected a string"]


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("agents.default", "base_url", "htp//x"),
        ("agents.default", "base_url", "ftp://api.thinnest.ai"),
        ("agents.default", "base_url", "https://"),
        ("telegram", "api_url", "api.telegram.org/bot"),
        ("slack", "api_url", "slack.com/api/"),
        ("telegram", "webhook_url", "bridge.example.com/hook"),
    ],
)
def test_urls_need_a_scheme_and_a_host(section: str, key: str, value: str) -> None:
    raw: dict = {
        "agents": {"default": thinnest()},
        "telegram": {"bot_token": "1:x", "allowed_users": ["*"]},
        "slack": {"bot_token": "xoxb-1", "app_token": "xapp-1"},
    }
    node = raw
    for part in section.split("."):
        node = node[part]
    node[key] = value
    assert problems(raw) == [
        f'{section}.{key}: expected an http:// or https:// URL, e.g. "https://host/path"'
    ]


def test_a_peaka_base_url_is_checked_too() -> None:
    raw = {
        "agents": {"p": {"backend": "peaka", "project_id": "p", "api_key": "k", "base_url": "x"}}
    }
    assert problems(raw) == [
        'agents.p.base_url: expected an http:// or https:// URL, e.g. "https://host/path"'
    ]


def test_telegram_webhook_must_be_https_unless_a_local_bot_api_server() -> None:
    def telegram(**extra: object) -> dict:
        return {
            "agents": {"default": {"backend": "echo"}},
            "telegram": {
                "bot_token": "1:x",
                "allowed_users": ["*"],
                "mode": "webhook",
                "webhook_secret": "s3cret",
                **extra,
            },
        }

    assert problems(telegram(webhook_url="http://bridge.example.com/hook")) == [
        "telegram.webhook_url: expected an https:// URL (Telegram posts webhooks over HTTPS only)"
    ]
    ok = parse_config(
        telegram(webhook_url="https://bridge.example.com/hook"), base_dir=Path("/tmp"), environ={}
    )
    assert ok.telegram is not None
    # A local Bot API server (telegram.api_url) may post over http://.
    local = telegram(webhook_url="http://127.0.0.1:8443/hook", api_url="http://127.0.0.1:8081/bot")
    assert parse_config(local, base_dir=Path("/tmp"), environ={}).telegram is not None


def test_slack_ids_are_checked_by_their_prefix() -> None:
    raw = {
        "agents": {"default": {"backend": "echo"}},
        "slack": {
            "bot_token": "xoxb-1",
            "app_token": "xapp-1",
            "allowed_channels": ["C0123", "G0456", "D0789", "im", "*", "general", "#random"],
            "allowed_users": ["U0123", "W0456", "*", "@alice", "u0123"],
            "allowed_teams": ["T0123", "E0456", "acme"],
            "channel_agents": {"C0123": "default", "general": "default"},
        },
    }
    assert problems(raw) == [
        'slack.allowed_channels[5]: "general" is a name: expected a channel id '
        '(C..., G... or D...), "*" or "im"',
        'slack.allowed_channels[6]: "#random" is a name: expected a channel id '
        '(C..., G... or D...), "*" or "im"',
        'slack.allowed_users[3]: "@alice" is a name: expected a user id (U... or W...) or "*"',
        'slack.allowed_users[4]: "u0123": Slack ids are upper case',
        'slack.allowed_teams[2]: "acme" is a name: expected a team id (T... or E...)',
        'slack.channel_agents.general: "general" is a name: expected a channel id '
        "(C..., G... or D...)",
    ]


def test_telegram_ids_are_numbers_or_usernames() -> None:
    raw = {
        "agents": {"default": {"backend": "echo"}},
        "telegram": {
            "bot_token": "1:x",
            "allowed_users": [123, "@alice", "*", "alice", 1.5],
            "allowed_chats": ["-100123"],
            "chat_agents": {"general": "default"},
        },
    }
    assert problems(raw) == [
        'telegram.allowed_users[3]: "alice": expected a numeric user id, "@username" or "*"',
        "telegram.allowed_users[4]: expected an integer",
        "telegram.allowed_chats[0]: expected an integer",
        "telegram.chat_agents.general: expected a numeric chat id",
    ]
