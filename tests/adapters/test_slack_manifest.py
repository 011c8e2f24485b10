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
        "assistant_thread_started",
        "assistant_thread_context_changed",
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
        "assistant:write",
    } <= scopes
    # Nothing the bridge never uses: an admin approving the app sees only what it needs.
    assert not scopes & {"im:read", "im:write"}
    assert re.search(r"^\s*- command: /agent$", text, re.M)
    assert re.search(r"^\s*socket_mode_enabled: true$", text, re.M)
    assert re.search(r"^\s*messages_tab_read_only_enabled: false$", text, re.M)
    # The feedback buttons are block actions: interactivity must be on.
    assert re.search(r"^  interactivity:\n    is_enabled: true$", text, re.M)


def test_manifest_has_the_ai_app_view_with_a_description_and_prompts() -> None:
    text = MANIFEST.read_text(encoding="utf-8")
    view = re.search(r"^features:\n(?:  .*\n)*?  assistant_view:\n((?:    .*\n)+)", text, re.M)
    assert view, "features.assistant_view not found in the manifest"
    body = view.group(1)
    assert re.search(r"^    assistant_description: \S", body, re.M)
    prompts = re.findall(r"^      - title: (.+)\n        message: (.+)$", body, re.M)
    assert 1 <= len(prompts) <= 4 and all(t.strip() and m.strip() for t, m in prompts)


#: The bot scopes each Web API method needs, from its method page on docs.slack.dev
#: (for conversations.*: the scopes of the conversation types the bridge answers in).
#: apps.connections.open takes the app-level token (connections:write, not a bot scope)
#: and auth.test none.
METHOD_SCOPES = {
    "apps_connections_open": set(),
    "auth_test": set(),
    "chat_postMessage": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "chat_update": {"chat:write"},
    # Streamed answers (chat.startStream / appendStream / stopStream) post as the bot.
    "chat_startStream": {"chat:write"},
    "chat_appendStream": {"chat:write"},
    "chat_stopStream": {"chat:write"},
    "conversations_replies": {"channels:history", "groups:history", "im:history"},
    "conversations_history": {"channels:history", "groups:history", "im:history"},
    "reactions_add": {"reactions:write"},
    "reactions_remove": {"reactions:write"},
    # setStatus takes chat:write (assistant:write "for the time being" too).
    "assistant_threads_setStatus": {"chat:write"},
    "assistant_threads_setSuggestedPrompts": {"assistant:write"},
    "assistant_threads_setTitle": {"assistant:write"},
    # Files shared with the bot: files.info, then url_private_download (files:read too).
    "files_info": {"files:read"},
}


def test_every_web_api_method_the_adapter_calls_has_its_scopes() -> None:
    adapters = MANIFEST.parent / "adapters"
    source = "\n".join(p.read_text(encoding="utf-8") for p in adapters.glob("slack*.py"))
    called = set(
        re.findall(
            r"\.((?:apps|assistant|auth|chat|conversations|reactions|users|files)_\w+)\(", source
        )
    )
    # reactions.add/remove are passed as bound methods to the indicator helper.
    called |= set(re.findall(r"client\.(reactions_\w+)\b", source))
    assert called >= {
        "chat_postMessage",
        "conversations_replies",
        "conversations_history",
        "assistant_threads_setStatus",
        "assistant_threads_setSuggestedPrompts",
        "assistant_threads_setTitle",
    }
    unknown = called - METHOD_SCOPES.keys()
    assert not unknown, f"add the scopes of {unknown} to METHOD_SCOPES and the manifest"
    scopes = set(_list_under(MANIFEST.read_text(encoding="utf-8"), "bot"))
    for method in called:
        assert METHOD_SCOPES[method] <= scopes, method
