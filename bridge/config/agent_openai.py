"""``backend = "openai"``: any OpenAI-compatible API (Responses or Chat Completions).

Example::

    [agents.default]
    backend = "openai"
    api_key = "${OPENAI_API_KEY}"
    model = "gpt-5-mini"
    system_prompt = "You answer in the user's language."
    # api = "responses"            # or "chat" (Ollama, vLLM, LiteLLM, OpenRouter...)
    # memory = "conversation"      # or "previous_response_id" (responses only)
    # history_chars = 24000        # chat only: the thread's turns resent each time
    extra = { reasoning = { effort = "low" } }

Validation errors name the key: ``agents.default.memory: applies to api =
"responses" only ...``, ``agents.default.extra.model: set by the bridge (from
model); remove it from extra``.
"""

from __future__ import annotations

import datetime
import math
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from bridge.config.fields import AgentBase, HttpUrl

#: Request fields the bridge sets itself, each with the key that controls it:
#: an ``extra`` entry may not override them.
RESERVED_EXTRA = {
    "model": "model",
    "input": "the chat message",
    "messages": "the chat message and history_chars",
    "conversation": "memory",
    "previous_response_id": "memory",
    "instructions": "system_prompt",
    # The bridge streams when the agent's own `stream` key says so.
    "stream": "stream",
    "stream_options": "stream",
}


class OpenAIAgentConfig(AgentBase):
    """One OpenAI-compatible agent. ``api_key`` is optional: Ollama and vLLM need none
    (no ``Authorization`` header is sent then)."""

    backend: Literal["openai"]
    base_url: HttpUrl = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    model: str = Field(min_length=1)
    #: Sent on every turn (Responses ``instructions`` are not carried over by
    #: ``previous_response_id``; Chat Completions has no memory at all).
    system_prompt: str | None = Field(None, min_length=1)
    api: Literal["responses", "chat"] = "responses"
    #: Responses only: one Conversations API conversation per chat thread, or a
    #: chain of ``previous_response_id`` (servers without the Conversations API).
    memory: Literal["conversation", "previous_response_id"] = "conversation"
    #: Chat only: characters of the thread's earlier turns resent with each message.
    history_chars: int = Field(24_000, gt=0)
    #: Extra request fields passed through as they are (temperature, reasoning...).
    extra: dict[str, Any] = Field(default_factory=dict)

    # The validators below run only on keys the user wrote (pydantic does not
    # validate defaults), which is what "this key does not apply here" means.

    @field_validator("memory")
    @classmethod
    def _memory_is_for_responses(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("api") == "chat":
            raise ValueError('applies to api = "responses" only (api = "chat" keeps no memory)')
        return value

    @field_validator("history_chars")
    @classmethod
    def _history_is_for_chat(cls, value: int, info: ValidationInfo) -> int:
        if info.data.get("api") == "responses":
            raise ValueError('applies to api = "chat" only (with "responses" the server remembers)')
        return value

    @field_validator("extra")
    @classmethod
    def _extra_is_plain_json(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        problems: list[InitErrorDetails] = []
        for key, item in value.items():
            if key in RESERVED_EXTRA:
                reason = f"set by the bridge (from {RESERVED_EXTRA[key]}); remove it from extra"
                problems.append(_problem((key,), reason, item))
            else:
                _check_json(item, (key,), problems)
        if value.get("store") is False and info.data.get("memory") == "previous_response_id":
            reason = 'memory = "previous_response_id" needs the server to store each response'
            problems.append(_problem(("store",), reason, False))
        if problems:
            # Raised as a ValidationError, pydantic puts each problem under its own
            # key (agents.NAME.extra.model), so the message names what to change.
            raise ValidationError.from_exception_data(cls.__name__, problems)
        return value


def _problem(loc: tuple[str | int, ...], reason: str, value: object) -> InitErrorDetails:
    error = PydanticCustomError("value_error", "{reason}", {"reason": reason})
    return InitErrorDetails(type=error, loc=loc, input=value)


def _check_json(
    value: object, loc: tuple[str | int, ...], problems: list[InitErrorDetails]
) -> None:
    """TOML has dates and times, JSON does not: refuse them here rather than at the
    first message."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_json(item, (*loc, key), problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, (*loc, index), problems)
    elif isinstance(value, datetime.date | datetime.time):
        reason = "a TOML date or time cannot be sent as JSON; quote it"
        problems.append(_problem(loc, reason, value))
    elif isinstance(value, float) and not math.isfinite(value):
        problems.append(_problem(loc, f"{value} cannot be sent as JSON", value))
