"""Configuration: read once at start, validated, typed and frozen, passed down.

The file is TOML (see ``config.example.toml`` for every key). Before
validation two things are resolved, in this order:

- ``${VAR}`` in any string is replaced by the environment variable ``VAR``;
- every secret key ``X`` may instead be given as ``X_file``, a path whose
  contents (trailing newline stripped) become the value. This is how systemd
  credentials (``LoadCredential=``) reach the bridge.

Every problem is reported at once, one line each, naming the key::

    agents.default.backend: expected one of "thinnest", "peaka", "echo"
    agents.default.api_key: environment variable THINNEST_API_KEY is not set
    slack.alowed_users: unknown key; did you mean "allowed_users"?
    slack.allowed_channels[0]: "general" is a name, not a channel id (C..., G... or D...)

"At once" includes the checks across keys (an agent a platform names must
exist, webhook mode needs a URL): they run on every key that validated, the
keys that did not at their defaults, so fixing one error never reveals the next.

Secrets are `pydantic.SecretStr`: their repr is ``SecretStr('**********')``
and no error message ever includes a value.

Example::

    config = load_config(Path("agent-bridge.toml"), os.environ)
    config.agents["default"].timeout   # 120.0
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from bridge.errors import ConfigError

#: Keys whose values are secrets: each also accepts ``<key>_file``.
SECRET_KEYS = frozenset({"api_key", "bot_token", "app_token", "signing_secret", "webhook_secret"})
BACKENDS = ("thinnest", "peaka", "echo")
PEAKA_ZONES = {
    "us": "https://partner.peaka.studio/api/v1",
    "eu": "https://partner.eu.peaka.studio/api/v1",
}
DEFAULT_CONFIG_NAME = "agent-bridge.toml"
ENV_CONFIG = "AGENT_BRIDGE_CONFIG"
DEFAULT_STORAGE_URL = "sqlite+aiosqlite:///agent-bridge.db"
TELEGRAM_API_URL = "https://api.telegram.org/bot"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class _Section(BaseModel):
    # strict: a wrong type is an error, not a silent coercion ("60" is not 60).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _parse_listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError('expected "host:port", e.g. "127.0.0.1:8443"')
    return value


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8443"`` -> ``("127.0.0.1", 8443)``; ``[::1]:80`` works too."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:  # "http://[::1" and the like
        scheme, host = "", None
    if scheme not in ("http", "https") or not host:
        raise ValueError('expected an http:// or https:// URL, e.g. "https://host/path"')
    return value


#: An http(s) URL with a host: ``htp//x`` is an error, not a connection failure later.
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def _id_check(
    what: str, pattern: str, prefixes: str, *, also: Collection[str] = ()
) -> Callable[[str], str]:
    """A validator for one Slack id: its first letter tells what the id names."""
    choices = [f"a {what} id ({prefixes})", *(f'"{a}"' for a in also)]
    expected = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]

    def check(value: str) -> str:
        if value in also or re.fullmatch(pattern, value):
            return value
        shown = json.dumps(value)[:40]
        if re.fullmatch(pattern, value.upper()) and re.search(r"\d", value):  # "c0123"
            raise ValueError(f"{shown}: Slack ids are upper case")
        # "general", "#general", "@alice": the name people see, not the id Slack sends.
        name = " is a name" if re.fullmatch(r"[#@]?[\w.-]+", value) else ""
        raise ValueError(f"{shown}{name}: expected {expected}")

    return check


# Slack ids start with a letter that says what they are (https://api.slack.com/docs/conversations-api):
# C public channel, G private channel or group DM, D direct message; U/W users (W in
# Enterprise Grid); T workspaces, E Enterprise organisations.
SlackChannel = Annotated[
    str,
    AfterValidator(_id_check("channel", r"[CGD][A-Z0-9]+", "C..., G... or D...", also=("*", "im"))),
]
SlackUser = Annotated[
    str, AfterValidator(_id_check("user", r"[UW][A-Z0-9]+", "U... or W...", also=("*",)))
]
SlackTeam = Annotated[str, AfterValidator(_id_check("team", r"[TE][A-Z0-9]+", "T... or E..."))]


class StorageConfig(_Section):
    #: SQLAlchemy URL; a relative SQLite path is resolved against the config
    #: file's folder. Hidden from repr: a PostgreSQL URL may hold a password.
    url: str = Field(DEFAULT_STORAGE_URL, repr=False)
    #: Days after which the text of finished messages is erased.
    retention_days: float = Field(7, gt=0)
    #: Seconds without a heartbeat after which an instance counts as dead and
    #: its conversations (and its Telegram polling) are taken over by another.
    #: Shorter: faster takeover after a crash; longer: rides out longer
    #: database outages without a second instance stepping in.
    lease_timeout: float = Field(30, ge=1)
    #: Seconds between looks for claimable work when no notification came
    #: (PostgreSQL LISTEN/NOTIFY wakes instances at once; this is the fallback).
    poll_interval: float = Field(2, gt=0)

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for logs and `check`."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparsable url>"


class _AgentBase(_Section):
    #: Seconds for one agent call (connect + read).
    timeout: float = Field(120, gt=0)
    #: Upper bound, in seconds, of the time spent waiting between retries of
    #: one call (429 and 5xx/connection errors).
    max_retry_wait: float = Field(60, ge=0)


class ThinnestAgentConfig(_AgentBase):
    backend: Literal["thinnest"]
    agent_id: str = Field(min_length=1)
    api_key: SecretStr
    base_url: HttpUrl = "https://api.thinnest.ai"


class PeakaAgentConfig(_AgentBase):
    backend: Literal["peaka"]
    project_id: str = Field(min_length=1)
    api_key: SecretStr
    zone: Literal["us", "eu"] = "us"
    base_url: HttpUrl | None = None
    no_execute: bool = False

    @property
    def effective_base_url(self) -> str:
        return self.base_url or PEAKA_ZONES[self.zone]


class EchoAgentConfig(_AgentBase):
    backend: Literal["echo"]


AgentConfig = Annotated[
    ThinnestAgentConfig | PeakaAgentConfig | EchoAgentConfig,
    Field(discriminator="backend"),
]


class MessagesConfig(_Section):
    """What users see when the agent cannot answer. Placeholders in braces."""

    insufficient_balance: str = (
        "Sorry, I can't answer right now: the agent's account is out of credit. "
        "An administrator needs to top it up."
    )
    rate_limited: str = (
        "The agent is busy right now. Please try again in about {retry_after} seconds."
    )
    unauthorized: str = (
        "Sorry, I can't reach the agent: the bridge is not authorized to use it. "
        "An administrator needs to check its API key."
    )
    not_found: str = (
        "Sorry, I can't reach the agent: it was not found. "
        "An administrator needs to check the bridge's configuration."
    )
    unavailable: str = "The agent is unavailable right now. Please try again in a few minutes."
    timeout: str = (
        "The agent took too long to answer. Please try again, perhaps with a shorter question."
    )
    bad_reply: str = "The agent sent a reply I could not read. Please try again."
    session_restarted: str = "_(The previous conversation had expired, so this one started over.)_"
    input_too_long: str = (
        "Your message is too long for the agent ({length} characters; the limit is "
        "{max_chars}). Please shorten it and send it again."
    )
    reply_truncated: str = "_(The answer was cut here: it was longer than {max_chars} characters.)_"
    internal_error: str = (
        "Something went wrong on my side while handling your message. "
        "An administrator can find the details in the bridge's logs."
    )

    @field_validator("*")
    @classmethod
    def _placeholders(cls, value: str, info: ValidationInfo) -> str:
        allowed = _MESSAGE_PLACEHOLDERS.get(info.field_name or "", frozenset())
        used = re.findall(r"\{([^{}]*)\}", value)
        if used and not allowed:
            raise ValueError("takes no placeholders (write {{ and }} for braces)")
        for name in used:
            if name not in allowed:
                names = ", ".join("{" + a + "}" for a in sorted(allowed))
                raise ValueError(f"unknown placeholder {{{name}}} (use {names})")
        return value

    def render(self, kind: str, **values: object) -> str:
        """The text for ``kind`` with its placeholders filled in."""
        template: str = getattr(self, kind, self.internal_error)
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template


#: The placeholders each message may use; anything else is a config error.
_MESSAGE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "rate_limited": frozenset({"retry_after"}),
    "input_too_long": frozenset({"length", "max_chars"}),
    "reply_truncated": frozenset({"max_chars"}),
}


class DispatcherConfig(_Section):
    #: Agent calls in flight across all conversations.
    max_concurrency: int = Field(64, ge=1)
    #: Longer input gets a clear message instead of an agent call.
    max_input_chars: int = Field(16000, ge=1)
    #: A longer agent reply is cut there, with a note saying so.
    max_reply_chars: int = Field(40000, ge=100)
    #: Seconds, at most, between attempts to post a reply the platform refuses
    #: (the wait grows 1, 3, 10, 30 s... up to this), for as long as the bridge runs.
    delivery_retry_max: float = Field(300, ge=1)


def _telegram_user(value: int | str) -> int | str:
    if isinstance(value, str) and value != "*" and not re.fullmatch(r"@\w{1,64}", value):
        raise ValueError(
            f'{json.dumps(value)[:40]}: expected a numeric user id, "@username" or "*"'
        )
    return value


TelegramUser = Annotated[int | str, AfterValidator(_telegram_user)]


class TelegramConfig(_Section):
    bot_token: SecretStr
    agent: str = "default"
    allowed_users: list[TelegramUser] = Field(min_length=1)
    allowed_chats: list[int] = Field(default_factory=list)
    group_trigger: Literal["mention", "all"] = "mention"
    chat_agents: dict[str, str] = Field(default_factory=dict)
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: HttpUrl | None = None
    webhook_secret: SecretStr | None = None
    listen: str = "127.0.0.1:8443"
    api_url: HttpUrl = TELEGRAM_API_URL

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's rule for secret_token (https://core.telegram.org/bots/api#setwebhook).
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("use 1-256 characters A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _parse_listen(value)


class SlackConfig(_Section):
    bot_token: SecretStr
    app_token: SecretStr | None = None
    agent: str = "default"
    allowed_channels: list[SlackChannel] = Field(default_factory=lambda: ["*"])
    allowed_users: list[SlackUser] = Field(default_factory=lambda: ["*"])
    allowed_teams: list[SlackTeam] = Field(default_factory=list)
    # Keys checked in _cross_check, so that a bad one does not hide the agent names.
    channel_agents: dict[str, str] = Field(default_factory=dict)
    thread_followups: bool = True
    mode: Literal["socket", "http"] = "socket"
    signing_secret: SecretStr | None = None
    listen: str = "127.0.0.1:3000"
    path: str = "/slack/events"
    api_url: HttpUrl = "https://slack.com/api/"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return _parse_listen(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('expected a path starting with "/"')
        return value


class DaemonConfig(_Section):
    #: host:port for /healthz and /metrics; off when unset.
    http_listen: str | None = None
    #: Seconds to let agent calls in flight finish on SIGTERM.
    shutdown_grace: float = Field(30, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    #: /healthz turns 503 when the oldest unfinished message has waited longer.
    stuck_after: float = Field(300, gt=0)

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else _parse_listen(value)


class Config(_Section):
    storage: StorageConfig = StorageConfig()
    agents: dict[str, AgentConfig] = Field(min_length=1)
    messages: MessagesConfig = MessagesConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    telegram: TelegramConfig | None = None
    slack: SlackConfig | None = None
    daemon: DaemonConfig = DaemonConfig()


# --- loading ---------------------------------------------------------------------------


def find_config_path(cli_path: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    """``--config``, else ``$AGENT_BRIDGE_CONFIG``, else ``./agent-bridge.toml`` if it
    exists. An explicit path that does not exist is an error; ``None`` means
    "no config anywhere"."""
    explicit = cli_path or environ.get(ENV_CONFIG)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            origin = "--config" if cli_path else ENV_CONFIG
            raise ConfigError([f"{origin}: config file {str(path)!r} not found"])
        return path
    default = Path(DEFAULT_CONFIG_NAME)
    return default if default.is_file() else None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, resolve and validate the config file; raise `ConfigError` listing
    every problem."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(raw, base_dir=path.parent, environ=environ)


def default_config() -> Config:
    """The embedded default: the echo agent and a SQLite file in the current folder."""
    return parse_config({"agents": {"default": {"backend": "echo"}}}, base_dir=Path.cwd())


def parse_config(
    raw: Mapping[str, Any], *, base_dir: Path, environ: Mapping[str, str] | None = None
) -> Config:
    env = os.environ if environ is None else environ
    problems: list[str] = []
    resolved = _resolve(dict(raw), (), env, base_dir, problems)
    config: Config | None = None
    try:
        config = Config.model_validate(resolved)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        for err in errors:
            line = _describe(err)
            # A secret whose ${VAR} or _file already failed is not also "missing".
            if not _reported(problems, line.partition(":")[0]):
                problems.append(line)
        failed = [tuple(err["loc"]) for err in errors]
        telegram = _validated_part(TelegramConfig, resolved.get("telegram"), "telegram", failed)
        slack = _validated_part(SlackConfig, resolved.get("slack"), "slack", failed)
        agents = resolved.get("agents")
        names = list(agents) if isinstance(agents, dict) else []
    else:
        telegram, slack, names = config.telegram, config.slack, list(config.agents)
    for line in _cross_check(names, telegram, slack):
        # A key whose own value is wrong is not also wrong with its neighbours.
        if not _reported(problems, line.partition(":")[0]):
            problems.append(line)
    if problems or config is None:
        raise ConfigError(_unique(problems))
    return config.model_copy(
        update={
            "storage": config.storage.model_copy(
                update={"url": _resolve_sqlite_path(config.storage.url, base_dir)}
            )
        }
    )


_Part = TypeVar("_Part", bound=_Section)


def _validated_part(
    model: type[_Part], raw: Any, section: str, failed: list[tuple[Any, ...]]
) -> _Part | None:
    """The part of a section that validated, for the cross-checks: its keys
    that passed, the others (and the missing ones) at their defaults."""
    if not isinstance(raw, dict) or (section,) in failed:
        return None
    bad = {loc[1] for loc in failed if len(loc) > 1 and loc[0] == section}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in model.model_fields and key not in bad:
            try:
                values[key] = _field_adapter(model, key).validate_python(value)
            except ValidationError:  # cannot happen: the key passed; be safe anyway
                continue
    return cast(_Part, model.model_construct(**values))


@functools.cache
def _field_adapter(model: type[_Section], key: str) -> TypeAdapter[Any]:
    field = model.model_fields[key]
    annotated: Any = Annotated[field.annotation, field]  # the field's type and constraints
    return TypeAdapter(annotated, config=ConfigDict(strict=True))


def _reported(problems: list[str], where: str) -> bool:
    return any(p.startswith((f"{where}:", f"{where}_file:")) for p in problems)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _resolve(
    node: Any, path: tuple[str | int, ...], env: Mapping[str, str], base: Path, problems: list[str]
) -> Any:
    """Expand ``${VAR}`` everywhere and turn ``X_file`` secrets into ``X``."""
    if isinstance(node, str):

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in env:
                problems.append(f"{_dotted(path)}: environment variable {name} is not set")
                return ""
            return env[name]

        return _ENV_REF.sub(sub, node)
    if isinstance(node, list):
        return [_resolve(item, (*path, i), env, base, problems) for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        out[key] = _resolve(value, (*path, key), env, base, problems)
    for key in list(out):
        if not key.endswith("_file") or key[: -len("_file")] not in SECRET_KEYS:
            continue
        secret = key[: -len("_file")]
        file_value = out.pop(key)
        where = _dotted((*path, key))
        if secret in node:
            problems.append(f"{where}: set either {secret} or {key}, not both")
            continue
        if not isinstance(file_value, str):
            problems.append(f"{where}: expected a file path (a string)")
            continue
        if _reported(problems, where):
            continue  # its ${VAR} is unset: reading what is left ("" = the folder) says nothing
        file_path = Path(file_value).expanduser()
        if not file_path.is_absolute():
            file_path = base / file_path
        try:
            out[secret] = file_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            problems.append(f"{where}: cannot read {str(file_path)!r}: {exc.strerror}")
    for key in SECRET_KEYS & out.keys():
        where = _dotted((*path, key))
        if out[key] == "" and not _reported(problems, where):
            problems.append(f"{where}: is empty")
    return out


def _dotted(path: tuple[str | int, ...]) -> str:
    """``("slack", "allowed_users", 0)`` -> ``slack.allowed_users[0]``."""
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path)
    return text.removeprefix(".") or "(top level)"


_TYPE_WORDS = {
    "string_type": "expected a string",
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a table",
    "model_type": "expected a table",
    "model_attributes_type": "expected a table",
}


def _describe(err: Mapping[str, Any]) -> str:
    loc = _clean_loc(tuple(err["loc"]))
    kind = err["type"]
    ctx = err.get("ctx") or {}
    where = _dotted(loc)
    if kind == "extra_forbidden":
        noun = "unknown section" if len(loc) == 1 else "unknown key"
        hint = _did_you_mean(tuple(str(p) for p in loc))
        return f"{where}: {noun}{hint}"
    if kind == "missing":
        return f"{where}: missing (required)"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return f"{where}.backend: expected one of " + ", ".join(f'"{b}"' for b in BACKENDS)
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return f"{where}: expected one of " + ", ".join(f'"{e}"' for e in expected)
    if kind in _TYPE_WORDS:
        return f"{where}: {_TYPE_WORDS[kind]}"
    if kind == "too_short" and loc and loc[-1] in ("allowed_users", "agents"):
        if loc[-1] == "agents":
            return "agents: add at least one [agents.NAME] section"
        return f'{where}: list at least one user, or ["*"] to let anyone in'
    message = str(err["msg"])
    message = message.removeprefix("Value error, ")
    message = message.replace("Input should be", "expected").replace("String should", "should")
    return f"{where}: {message[:1].lower()}{message[1:]}"


def _clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    # pydantic puts the union member's tag in the path (agents.default.thinnest.agent_id)
    # and "int"/"str" for members of `int | str`; neither is a key the user wrote.
    out: list[str | int] = []
    for i, part in enumerate(loc):
        if i == 2 and loc[0] == "agents" and part in BACKENDS:
            continue
        if part in ("int", "str"):
            continue
        out.append(part if isinstance(part, int) else str(part))
    return tuple(out)


def _did_you_mean(loc: tuple[str, ...]) -> str:
    model: Any = Config
    known: list[str] = []
    for part in loc[:-1]:
        if model is Config and part == "agents":
            model = "agents"
            continue
        if model == "agents":
            model = None  # an agent name: the model depends on its backend
            continue
        is_model = isinstance(model, type) and issubclass(model, BaseModel)
        field = model.model_fields.get(part) if is_model else None
        model = _model_of(field.annotation) if field is not None else None
    if isinstance(model, type) and issubclass(model, BaseModel):
        known = list(model.model_fields)
    elif model is None and len(loc) == 3 and loc[0] == "agents":
        known = sorted(
            {f for m in (ThinnestAgentConfig, PeakaAgentConfig) for f in m.model_fields}
            | {f"{k}_file" for k in SECRET_KEYS}
        )
    if len(loc) >= 2 and loc[-2] in ("agents",):
        return ""
    match = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    return f'; did you mean "{match[0]}"?' if match else ""


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _cross_check(
    agent_names: Collection[str], tg: TelegramConfig | None, sl: SlackConfig | None
) -> list[str]:
    """Checks across keys, on what validated (see `_validated_part`)."""
    problems: list[str] = []
    for name in agent_names:
        if not _NAME.match(name):
            problems.append(f"agents.{name}: agent names may use letters, digits, - and _")

    def agent_ref(where: str, name: str) -> None:
        if name not in agent_names:
            hint = difflib.get_close_matches(name, list(agent_names), n=1)
            extra = f'; did you mean "{hint[0]}"?' if hint else ""
            problems.append(f'{where}: no agent named "{name}" (define [agents.{name}]){extra}')

    if tg is not None:
        agent_ref("telegram.agent", tg.agent)
        for chat, name in tg.chat_agents.items():
            if not re.fullmatch(r"-?\d+", chat):
                problems.append(f"telegram.chat_agents.{chat}: expected a numeric chat id")
            agent_ref(f"telegram.chat_agents.{chat}", name)
        if tg.mode == "webhook":
            if not tg.webhook_url:
                problems.append('telegram.webhook_url: required when mode = "webhook"')
            elif tg.api_url == TELEGRAM_API_URL and not tg.webhook_url.startswith("https://"):
                # A local Bot API server (telegram.api_url) also posts over http://.
                problems.append(
                    "telegram.webhook_url: expected an https:// URL (Telegram posts "
                    "webhooks over HTTPS only)"
                )
            if tg.webhook_secret is None:
                problems.append('telegram.webhook_secret: required when mode = "webhook"')
    if sl is not None:
        agent_ref("slack.agent", sl.agent)
        check_channel = _id_check("channel", r"[CGD][A-Z0-9]+", "C..., G... or D...")
        for channel, name in sl.channel_agents.items():
            try:
                check_channel(channel)
            except ValueError as exc:
                problems.append(f"slack.channel_agents.{channel}: {exc}")
            agent_ref(f"slack.channel_agents.{channel}", name)
        if sl.mode == "socket" and sl.app_token is None:
            problems.append('slack.app_token: required in Socket Mode (or set mode = "http")')
        if sl.mode == "http" and sl.signing_secret is None:
            problems.append('slack.signing_secret: required when mode = "http"')
    return problems


def _resolve_sqlite_path(url: str, base_dir: Path) -> str:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return url  # the store reports an unparsable URL with its own message
    database = parsed.database
    if not parsed.drivername.startswith("sqlite") or not database or database == ":memory:":
        return url
    if database.startswith("file:") or Path(database).is_absolute():
        return url
    absolute = (base_dir / database).resolve()
    return parsed.set(database=str(absolute)).render_as_string(hide_password=False)


# --- writing (agent-bridge init) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SecretRef:
    """Where the bridge reads a secret from, never the secret itself: written as
    ``key = "${VAR}"`` (``env``) or ``key_file = "/path"`` (``file``).

    Example::

        to_toml({"agents.default": {"backend": "thinnest", "agent_id": "ag_1",
                                    "api_key": SecretRef(env="THINNEST_API_KEY")}})
    """

    env: str | None = None
    file: str | None = None


#: Sections for `to_toml`: ``{"agents.default": {"backend": "echo"}, ...}``.
Sections = Mapping[str, Mapping[str, Any]]


def to_toml(sections: Sections, *, header: str = "") -> str:
    """A config file's text: one ``[section]`` per entry, in order."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, values in sections.items():
        if lines:
            lines.append("")
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, SecretRef):
                if value.file is not None:
                    lines.append(f"{key}_file = {_toml_value(value.file)}")
                else:
                    lines.append(f'{key} = "${{{value.env}}}"')
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string: same quotes, same escapes.
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def check_sections(sections: Sections, *, base_dir: Path) -> None:
    """Validate sections before they are written, every `SecretRef` taken as set
    (the variables and files may not exist yet); `ConfigError` names the keys."""
    raw: dict[str, Any] = {}
    for name, values in sections.items():
        node = raw
        for part in name.split("."):
            node = node.setdefault(part, {})
        for key, value in values.items():
            # Any value passes for a secret, except webhook_secret's character rule.
            node[key] = "placeholder" if isinstance(value, SecretRef) else value
    parse_config(raw, base_dir=base_dir, environ={})
