"""The Slack app manifest asks for what the adapter uses: a drift between the two shows
up in Slack as silently missing events or ``missing_scope`` errors."""

from __future__ import annotations

import re
from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[2] / "slack-app-manifest.yaml"


def _list_under(text: str, key: str) -> list[str]:
    """The ``- item`` entries of the YAML list under ``key:`` (comments dropped)."""
    match = re.search(rf"^(\s*){re.escape(key)}:\s*\n((?:\1\s+- .*\n)+)", text, re.M)
    assert match, f"{key} not found in the manifest"
    return [line.split("#")[0].strip()[2:].strip() for line in match.group(2).splitlines()]


def test_manifest_subscribes_to_the_events_and_scopes_the_adapter_needs() -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    assert set(_list_under(text, "bot_events")) == {
        "app_mention",
        "message.channels",
        "message.groups",
        "message.im",
    }
    scopes = set(_list_under(text, "bot"))
    assert {
        "app_mentions:read",
        "channels:history",
        "groups:history",
        "im:history",
        "chat:write",
        "reactions:write",
        "commands",
    } <= scopes
    assert re.search(r"^\s*- command: /agent$", text, re.M)
    assert re.search(r"^\s*socket_mode_enabled: true$", text, re.M)
    assert re.search(r"^\s*messages_tab_read_only_enabled: false$", text, re.M)
