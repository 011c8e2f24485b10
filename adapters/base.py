"""The chat adapter port lives in the core (`bridge.chat`), which calls it; this
module keeps the adapters' historical import path."""

from bridge.chat import AdapterState, ChatAdapter

__all__ = ["AdapterState", "ChatAdapter"]
