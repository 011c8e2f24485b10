"""``backend = "http"``: an agent described by data (URL, body template, JMESPath).

One generic backend (`bridge.backends.generic`) reads this model; a ``preset``
(``bridge.backends.presets``) is a table of defaults for it, merged under the
user's keys before validation, so a preset is checked by the same validator as
a hand-written agent and any of its keys can be overridden.

Example (a custom agent; docs/bridging-http.md has one per preset)::

    [agents.helper]
    backend = "http"
    url = "https://agents.example.com/v1/chat/{agent}"
    params = { agent = "support" }
    api_key = "${HELPER_KEY}"              # Authorization: Bearer ...
    body = { text = "{message}", thread = "{session_id}" }
    answer_path = "reply.text"
    errors = { "402" = "balance", "*:quota" = "balance" }

Placeholders:

- ``url`` and ``probe_url``: ``{base_url}`` (the ``base_url`` key, with ``base_path``
  appended when it is missing), any key of ``params``, and the turn's placeholders.
- ``body`` strings: the turn's placeholders ``{message}``, ``{session_id}``,
  ``{user_id}``, ``{user_name}``, ``{conversation}``. ``{{`` and ``}}`` are literal
  braces. Only strings are templates; numbers, booleans and tables pass as they are.

JMESPath expressions (``answer_path``, ``session_path``, ``usage_path``,
``error_code_path``) are compiled here, at load: a bad one is a config error
naming its key, never a failed turn.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.parser import ParsedResult
from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.config.fields import AgentBase, HttpUrl

#: What a body string (and the URL) may name for each turn.
TURN_PLACEHOLDERS = ("message", "session_id", "user_id", "user_name", "conversation")
#: The names ``preset`` accepts; the data is in ``bridge.backends.presets``.
PRESET_NAMES = ("dify", "flowise", "langflow", "n8n")
#: What an ``errors`` row may map to (bridge.errors kinds; session_gone retries fresh).
ErrorKind = Literal["balance", "rate_limit", "auth", "not_found", "unavailable", "session_gone"]

# "{name}" is a placeholder, "{{" and "}}" are literal braces (as in str.format).
_TEMPLATE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
# RFC 9110 token characters: what a header name may hold.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# An errors key: "404", "400:provider_quota_exceeded" or "*:insufficient_quota".
_ERROR_KEY = re.compile(r"^(?:[1-5]\d\d|\*)(?::.+)?$")


def placeholders(template: str) -> Iterator[str]:
    """The placeholder names of one template string, in order."""
    for match in _TEMPLATE.finditer(template):
        if match.group(1) is not None:
            yield match.group(1)


def render(template: str, values: Mapping[str, str]) -> str:
    """``template`` with each ``{name}`` replaced (names checked at load)."""

    def sub(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]  # "{{" -> "{", "}}" -> "}"
        return values[name]

    return _TEMPLATE.sub(sub, template)


def _unknown(name: str, known: list[str]) -> str:
    hint = difflib.get_close_matches(name, known, n=1)
    extra = f'; did you mean "{{{hint[0]}}}"?' if hint else ""
    listed = ", ".join(f"{{{k}}}" for k in known)
    return f"unknown placeholder {{{name}}} (known: {listed}){extra}"


def _check_jmespath(value: str) -> str:
    try:
        jmespath.compile(value)
    except JMESPathError as exc:
        # The parser's message spans lines (a caret under the expression): keep one.
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"not a valid JMESPath expression ({first})") from None
    return value


#: A JMESPath expression, checked when the config is read.
JmesPath = Annotated[str, Field(min_length=1), AfterValidator(_check_jmespath)]


def _body_strings(node: Any, path: str) -> Iterator[tuple[str, str]]:
    """Every string of the body template with its dotted path."""
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _body_strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _body_strings(value, f"{path}[{i}]")


def _merge(defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` over ``defaults``; tables merge key by key (so ``body.inputs.x``
    can be added to a preset's body without restating it)."""
    out = dict(defaults)
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class HttpAgentConfig(AgentBase):
    """``[agents.NAME]`` with ``backend = "http"``. Keys are checked in this order,
    each validator seeing the keys above it."""

    backend: Literal["http"]
    #: A table of defaults for a known platform (see ``bridge.backends.presets``).
    preset: Literal["dify", "flowise", "langflow", "n8n"] | None = None
    #: ``{base_url}`` in ``url``: where the platform runs.
    base_url: HttpUrl | None = None
    #: A path ``base_url`` must end with, appended when missing (Dify: "/v1", so that
    #: both the host and the API base users copy from Dify work).
    base_path: str = ""
    #: Values for the other placeholders of ``url`` and ``probe_url`` (ids).
    params: dict[str, str] = Field(default_factory=dict)
    url: str = Field(min_length=1)
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    #: Sent as ``auth`` says; absent: no credentials (a public webhook).
    api_key: SecretStr | None = None
    #: bearer: ``Authorization: Bearer KEY``; basic: ``api_key = "user:password"`` sent
    #: as HTTP Basic; header: the key as it is, in the header ``auth_header``
    #: (``x-api-key`` by default; ``Authorization`` sends a raw Authorization value).
    auth: Literal["bearer", "basic", "header"] = "bearer"
    auth_header: str = "x-api-key"
    #: More headers. Every value is a secret: never shown by ``check`` or in logs.
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    #: The JSON body: a template whose strings may hold the turn's placeholders.
    body: dict[str, Any] = Field(default_factory=dict)
    #: json: the reply is one JSON document; sse: a stream of ``data:`` JSON lines,
    #: given to the paths as ``{"events": [...]}`` (read whole, or passed on event by
    #: event with ``stream = true``: see `bridge.backends.generic`).
    reply_format: Literal["json", "sse"] = "json"
    #: client: the bridge makes one id per chat thread and sends it every turn;
    #: server: the agent names it (``session_path``), ``first_session`` starts one.
    session: Literal["client", "server"] = "client"
    session_path: JmesPath | None = Field(None, validate_default=True)
    first_session: str = ""
    answer_path: JmesPath
    usage_path: JmesPath | None = None
    #: Where an error body (or a 2xx body that is really an error) names its code.
    error_code_path: JmesPath | None = None
    #: "STATUS", "STATUS:CODE" or "*:CODE" (any status) -> our kind of error.
    errors: dict[str, ErrorKind] = Field(default_factory=dict)
    #: A GET that costs no turn (template like ``url``); absent: the chat URL.
    probe_url: str | None = None
    #: Whether a 2xx from ``probe_url`` proves the key (else: reachability only).
    probe_checks_key: bool = False

    _compiled: dict[str, ParsedResult] = PrivateAttr(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or "preset" not in data:
            return data
        # Imported here: the presets are backend knowledge, and bridge.backends
        # imports bridge.config (a top-level import would be circular).
        from bridge.backends.presets import PRESETS

        preset = data["preset"]
        if not isinstance(preset, str) or preset not in PRESETS:
            # The preset's own error says it all; without its defaults, url and
            # answer_path would also be reported missing.
            return {"url": "-", "answer_path": "@", **data}
        return _merge(PRESETS[preset], data)

    @field_validator("base_path")
    @classmethod
    def _check_base_path(cls, value: str) -> str:
        if value and (not value.startswith("/") or value.endswith("/")):
            raise ValueError('expected a path like "/v1" (a leading /, no trailing /)')
        return value

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(set(value) & {*TURN_PLACEHOLDERS, "base_url"})
        if clash:
            raise ValueError(f"{clash[0]!r} is a placeholder of its own; name the param otherwise")
        return value

    @field_validator("url", "probe_url")
    @classmethod
    def _check_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if value == "-" and "preset" not in info.data:
            return value  # the stand-in of an unknown preset (see _apply_preset)
        known = ["base_url", *sorted(info.data.get("params", {})), *TURN_PLACEHOLDERS]
        for name in placeholders(value):
            if name not in known:
                if re.fullmatch(r"\w+", name):
                    # Any other name is an id the URL needs: its value goes in params.
                    hint = difflib.get_close_matches(name, known, n=1)
                    extra = f'; or did you mean "{{{hint[0]}}}"?' if hint else ""
                    raise ValueError(f"{{{name}}} has no value: set params.{name}{extra}")
                raise ValueError(_unknown(name, known))
        if "base_url" in placeholders(value) and info.data.get("base_url") is None:
            raise ValueError("uses {base_url}: set base_url")
        example = expand_url(
            value,
            base_url=info.data.get("base_url"),
            base_path=info.data.get("base_path", ""),
            params=info.data.get("params", {}),
            turn=dict.fromkeys(TURN_PLACEHOLDERS, "x"),
        )
        parts = urlsplit(example)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL once filled in, got {example!r}")
        return value

    @field_validator("auth_header")
    @classmethod
    def _check_header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid header name")
        return value

    @field_validator("headers")
    @classmethod
    def _check_headers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        for name, secret in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if any(c in secret.get_secret_value() for c in "\r\n"):
                # Never the value itself: it is a secret.
                raise ValueError(f"{name}: the value holds a line break")
        return value

    @field_validator("body")
    @classmethod
    def _check_body(cls, value: dict[str, Any]) -> dict[str, Any]:
        for path, text in _body_strings(value, ""):
            for name in placeholders(text):
                if name not in TURN_PLACEHOLDERS:
                    where = path.removeprefix(".")
                    raise ValueError(f"in {where}: {_unknown(name, list(TURN_PLACEHOLDERS))}")
        return value

    @field_validator("session_path")
    @classmethod
    def _check_session_path(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and info.data.get("session") == "server":
            raise ValueError('required when session = "server" (where the reply names it)')
        return value

    @field_validator("errors")
    @classmethod
    def _check_errors(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not _ERROR_KEY.match(key):
                raise ValueError(
                    f'{key!r}: expected "STATUS", "STATUS:CODE" or "*:CODE", e.g. "404" '
                    'or "400:provider_quota_exceeded"'
                )
        return value

    def model_post_init(self, context: Any, /) -> None:
        # Compiled once here, not on every turn (validated above, so this cannot fail).
        for key in ("answer_path", "session_path", "usage_path", "error_code_path"):
            expression = getattr(self, key)
            if expression is not None:
                self._compiled[key] = jmespath.compile(expression)

    def expression(self, key: str) -> ParsedResult | None:
        """The compiled ``answer_path``, ``session_path``, ``usage_path`` or
        ``error_code_path`` (None when unset)."""
        return self._compiled.get(key)

    @property
    def effective_base_url(self) -> str | None:
        return _effective_base(self.base_url, self.base_path)

    def body_placeholders(self) -> set[str]:
        """The turn placeholders the body and URL use."""
        used = set(placeholders(self.url))
        for _, text in _body_strings(self.body, "body"):
            used.update(placeholders(text))
        return used & set(TURN_PLACEHOLDERS)


def _effective_base(base_url: str | None, base_path: str) -> str | None:
    if base_url is None:
        return None
    base = base_url.rstrip("/")
    if base_path and not base.endswith(base_path):
        base += base_path
    return base


def expand_url(
    template: str,
    *,
    base_url: str | None,
    base_path: str,
    params: Mapping[str, str],
    turn: Mapping[str, str],
) -> str:
    """``url`` or ``probe_url`` filled in. ``{base_url}`` goes in as it is; params
    and turn values are path segments, so they are percent-encoded (an id with a
    "/" cannot change the path)."""
    values = {name: quote(v, safe="") for name, v in {**params, **turn}.items()}
    values["base_url"] = _effective_base(base_url, base_path) or ""
    return render(template, values)
