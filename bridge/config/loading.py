"""Reading the config: ``${VAR}`` and ``X_file`` resolved, every problem named at once."""

from __future__ import annotations

import difflib
import functools
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
)

from bridge.config.agents import AGENT_MODELS, BACKENDS
from bridge.config.alerts import alerts_problems
from bridge.config.fields import (
    DEFAULT_CONFIG_NAME,
    ENV_CONFIG,
    SECRET_KEYS,
    TELEGRAM_API_URL,
    Section,
    id_check,
)
from bridge.config.sections import Config, SlackConfig, TelegramConfig
from bridge.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


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
    for line in [*_cross_check(names, telegram, slack), *alerts_problems(resolved)]:
        # A key whose own value is wrong is not also wrong with its neighbours.
        if not _reported(problems, line.partition(":")[0]):
            problems.append(line)
    if config is not None:  # budgets: an agent's own cap must name an agent
        problems += [
            f'budgets.agents.{name}: no agent named "{name}" (define [agents.{name}])'
            for name in config.budgets.agents
            if name not in names
        ]
    if problems or config is None:
        raise ConfigError(_unique(problems))
    return config.model_copy(
        update={
            "storage": config.storage.model_copy(
                update={"url": _resolve_sqlite_path(config.storage.url, base_dir)}
            )
        }
    )


_Part = TypeVar("_Part", bound=Section)


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
def _field_adapter(model: type[Section], key: str) -> TypeAdapter[Any]:
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
            {f for m in AGENT_MODELS for f in m.model_fields} | {f"{k}_file" for k in SECRET_KEYS}
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
        check_channel = id_check("channel", r"[CGD][A-Z0-9]+", "C..., G... or D...")
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
