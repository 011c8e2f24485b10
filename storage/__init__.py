"""Persistence: the message inbox and the conversations (SQLite or PostgreSQL)."""

from storage.store import Store

__all__ = ["Store"]
