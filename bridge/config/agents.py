"""``[agents.NAME]``: one model per backend, told apart by ``backend``."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import (
    Field,
    SecretStr,
)

from bridge.config.agent_http import HttpAgentConfig
from bridge.config.agent_openai import OpenAIAgentConfig
from bridge.config.fields import PEAKA_ZONES, AgentBase, HttpUrl


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
    OpenAIAgentConfig,
    HttpAgentConfig,
    EchoAgentConfig,
)
#: The values of ``backend``.
BACKENDS: tuple[str, ...] = tuple(
    get_args(m.model_fields["backend"].annotation)[0] for m in AGENT_MODELS
)

AgentConfig = Annotated[
    ThinnestAgentConfig | PeakaAgentConfig | OpenAIAgentConfig | HttpAgentConfig | EchoAgentConfig,
    Field(discriminator="backend"),
]
