"""The building blocks of the config models: the strict base section, URL, address and id types."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
)

SECRET_KEYS = frozenset({"api_key", "bot_token", "app_token", "signing_secret", "webhook_secret"})
PEAKA_ZONES = {
    "us": "https://partner.peaka.studio/api/v1",
    "eu": "https://partner.eu.peaka.studio/api/v1",
}
DEFAULT_CONFIG_NAME = "agent-bridge.toml"
ENV_CONFIG = "AGENT_BRIDGE_CONFIG"
DEFAULT_STORAGE_URL = "sqlite+aiosqlite:///agent-bridge.db"
TELEGRAM_API_URL = "https://api.telegram.org/bot"


def telegram_file_url(api_url: str) -> str:
    """Where the Bot API serves files for ``api_url`` (``telegram.api_url``): a file is
    ``{file_url}<token>/<file_path>``. The Bot API (Telegram's and the local server)
    serves methods at ``<root>/bot<token>/<method>`` and files at
    ``<root>/file/bot<token>/<path>``, so the root is ``api_url`` without its ``bot``;
    an address that does not end in ``bot`` (a proxy's own prefix) gets ``/file/bot``
    under it. Derived for every address: python-telegram-bot's default is Telegram's
    own host whatever ``base_url`` says, and a download would take the token there.

    >>> telegram_file_url("https://api.telegram.org/bot")
    'https://api.telegram.org/file/bot'
    >>> telegram_file_url("http://127.0.0.1:8081/tg/")
    'http://127.0.0.1:8081/tg/file/bot'
    """
    root = api_url[: -len("bot")] if api_url.endswith("bot") else api_url
    return f"{root.rstrip('/')}/file/bot"


class Section(BaseModel):
    # strict: a wrong type is an error, not a silent coercion ("60" is not 60).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def parse_listen(value: str) -> str:
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


def id_check(
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
    AfterValidator(id_check("channel", r"[CGD][A-Z0-9]+", "C..., G... or D...", also=("*", "im"))),
]
SlackUser = Annotated[
    str, AfterValidator(id_check("user", r"[UW][A-Z0-9]+", "U... or W...", also=("*",)))
]
SlackTeam = Annotated[str, AfterValidator(id_check("team", r"[TE][A-Z0-9]+", "T... or E..."))]


def _telegram_user(value: int | str) -> int | str:
    if isinstance(value, str) and value != "*" and not re.fullmatch(r"@\w{1,64}", value):
        raise ValueError(
            f'{json.dumps(value)[:40]}: expected a numeric user id, "@username" or "*"'
        )
    return value


TelegramUser = Annotated[int | str, AfterValidator(_telegram_user)]


def _no_star(value: object) -> object:
    # An admin approves people: "*" would let anyone approve anyone.
    if value == "*":
        raise ValueError('"*" is not allowed here: list the administrators\' user ids')
    return value


def _telegram_admin(value: object) -> object:
    _no_star(value)
    if isinstance(value, str):
        raise ValueError(f"{json.dumps(value)[:40]}: expected a numeric user id")
    return value


# Admins are ids only: a @username can change hands.
TelegramAdmin = Annotated[int, BeforeValidator(_telegram_admin)]
SlackAdmin = Annotated[
    str,
    AfterValidator(_no_star),
    AfterValidator(id_check("user", r"[UW][A-Z0-9]+", "U... or W...")),
]


class AgentBase(Section):
    #: Seconds for one agent call (connect + read).
    timeout: float = Field(120, gt=0)
    #: Upper bound, in seconds, of the time spent waiting between retries of
    #: one call (429 and 5xx/connection errors).
    max_retry_wait: float = Field(60, ge=0)
    #: Stream the answer as it is written, where the agent's API can (thinnest,
    #: Peaka, OpenAI, Dify); elsewhere the answer comes whole, as without it.
    stream: bool = False
