"""``[agents.NAME]``: one model per backend, told apart by ``backend``."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    SecretStr,
)

from bridge.config.fields import PEAKA_ZONES, HttpUrl, Section


class AgentBase(Section):
    #: Seconds for one agent call (connect + read).
    timeout: float = Field(120, gt=0)
    #: Upper bound, in seconds, of the time spent waiting between retries of
    #: one call (429 and 5xx/connection errors).
    max_retry_wait: float = Field(60, ge=0)


class ThinnestAgentConfig(AgentBase):
    backend: Literal["thinnest"]
    agent_id: str = Field(min_length=1)
    api_key: SecretStr
    base_url: HttpUrl = "https://api.thinnest.ai"


class PeakaAgentConfig(AgentBase):
    backend: Literal["peaka"]
    project_id: str = Field(min_length=1)
    api_key: SecretStr
    zone: Literal["us", "eu"] = "us"
    base_url: HttpUrl | None = None
    no_execute: bool = False

    @property
    def effective_base_url(self) -> str:
        return self.base_url or PEAKA_ZONES[self.zone]


class EchoAgentConfig(AgentBase):
    backend: Literal["echo"]


#: Every backend's model, in the order `check` and error messages list them.
AGENT_MODELS: tuple[type[AgentBase], ...] = (
    ThinnestAgentConfig,
    PeakaAgentConfig,
    EchoAgentConfig,
)
#: The values of ``backend``.
BACKENDS: tuple[str, ...] = tuple(
    get_args(m.model_fields["backend"].annotation)[0] for m in AGENT_MODELS
)

AgentConfig = Annotated[
    ThinnestAgentConfig | PeakaAgentConfig | EchoAgentConfig,
    Field(discriminator="backend"),
]
