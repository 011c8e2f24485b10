from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.cli import main
from bridge.config import (
    ConfigError,
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


def test_example_config_loads_with_the_variables_it_names(tmp_path: Path) -> None:
    text = (ROOT / "config.example.toml").read_text()
    names = set(re.findall(r"\$\{([A-Z_]+)\}", text))
    key_file = tmp_path / "peaka-key"
    key_file.write_text("pk_secret\n")
    env = {name: f"value-of-{name.lower().replace('_', '-')}" for name in names}
    env["PEAKA_KEY_FILE"] = str(key_file)
    config = load_config(ROOT / "config.example.toml", env)
    assert config.telegram is not None and config.slack is not None
    assert isinstance(config.agents["analytics"], PeakaAgentConfig)
    assert config.agents["analytics"].api_key.get_secret_value() == "pk_secret"
    assert config.daemon.http_listen == "127.0.0.1:9464"
    # Every key of every section is documented in the example.
    for section, model in [
        ("storage", type(config.storage)),
        ("dispatcher", type(config.dispatcher)),
        ("telegram", type(config.telegram)),
        ("slack", type(config.slack)),
        ("daemon", type(config.daemon)),
        ("messages", type(config.messages)),
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
    assert found == ['agents.default.backend: expected one of "thinnest", "peaka", "echo"']


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
