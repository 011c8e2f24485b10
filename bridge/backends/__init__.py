"""Agent backends: one `AgentBackend` per ``[agents.NAME]`` of the config.

Example::

    async with create_http_client() as client:
        backends = create_backends(config.agents, messages=config.messages, client=client)
        reply = await backends["default"].chat("hello", session_id=None)
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from bridge.backends.base import AgentBackend, AgentRequest, create_http_client
from bridge.backends.echo import EchoBackend
from bridge.backends.generic import GenericHttpBackend
from bridge.backends.http import HttpAgentBackend
from bridge.backends.openai_api import OpenAIBackend
from bridge.backends.peaka import PeakaBackend
from bridge.backends.thinnest import ThinnestBackend
from bridge.config import (
    AgentConfig,
    EchoAgentConfig,
    HttpAgentConfig,
    MessagesConfig,
    OpenAIAgentConfig,
    PeakaAgentConfig,
    ThinnestAgentConfig,
)
from bridge.history import ConversationHistory

__all__ = [
    "AgentBackend",
    "AgentRequest",
    "EchoBackend",
    "GenericHttpBackend",
    "HttpAgentBackend",
    "OpenAIBackend",
    "PeakaBackend",
    "ThinnestBackend",
    "create_backend",
    "create_backends",
    "create_http_client",
]


def create_backend(
    name: str,
    config: AgentConfig,
    *,
    messages: MessagesConfig,
    client: httpx.AsyncClient,
    history: ConversationHistory | None = None,
) -> AgentBackend:
    """The backend for one ``[agents.NAME]`` section. ``history`` (the store) keeps
    the turns of agents whose API remembers nothing (``api = "chat"``)."""
    if isinstance(config, ThinnestAgentConfig):
        return ThinnestBackend(name, config, messages=messages, client=client)
    if isinstance(config, PeakaAgentConfig):
        return PeakaBackend(name, config, messages=messages, client=client)
    if isinstance(config, OpenAIAgentConfig):
        return OpenAIBackend(name, config, messages=messages, client=client, history=history)
    if isinstance(config, HttpAgentConfig):
        return GenericHttpBackend(name, config, messages=messages, client=client)
    if isinstance(config, EchoAgentConfig):
        return EchoBackend(name, stream=config.stream)
    raise TypeError(f"agents.{name}: no backend for {type(config).__name__}")


def create_backends(
    agents: Mapping[str, AgentConfig],
    *,
    messages: MessagesConfig,
    client: httpx.AsyncClient,
    history: ConversationHistory | None = None,
) -> dict[str, AgentBackend]:
    """One backend per configured agent, all on the one shared ``client`` (and
    ``history``, see `create_backend`)."""
    return {
        name: create_backend(name, config, messages=messages, client=client, history=history)
        for name, config in agents.items()
    }
