"""Presets of ``backend = "http"``: each platform's wire facts as data.

A preset is a table of `HttpAgentConfig` keys, merged under the user's own keys
when the config is read (tables key by key), then validated like any agent. A
new platform is a few lines here and a fake in ``tests/fakes/agent_platforms.py``,
not a new module. The user writes only what is theirs: the address, the flow
id, the key. Sources: each platform's API docs, as gathered in issue 14 (see
docs/bridging-http.md for what was checked).

- **dify** ``POST {base}/chat-messages`` (the base may end in ``/v1`` or not),
  Bearer app key. Agent apps refuse ``response_mode: "blocking"``, so the reply
  is always streamed (SSE): read whole, or with ``stream = true`` passed on as it
  comes (`GenericHttpBackend.stream`). ``message``/``agent_message`` events carry
  ``answer`` chunks, ``message_end`` the usage, ``error`` a code (``ping``s carry no
  data). The conversation id is the server's (empty starts one). A conversation
  belongs to the ``user`` that started it, so ``user`` is the thread (``{conversation}``),
  not the speaker, or a group thread breaks when the speaker changes. 404
  "Conversation Not Exists" is a gone conversation; ``provider_quota_exceeded``
  (400, or an ``error`` event) is out of credit. Probe: ``GET /parameters``
  with the key, which costs nothing.
- **flowise** ``POST {base}/api/v1/prediction/{chatflow_id}``, Bearer (when the
  flow has a key): ``{question, overrideConfig: {sessionId}}``, answer ``text``.
  With override config off, Flowise ignores the sessionId and starts a new
  session each call; the reply's ``sessionId`` then differs from ours and the
  backend warns once, naming the setting (`SESSION_HINTS`). Probe: ``GET
  /api/v1/ping``, reachability only (no free call checks a flow's key).
- **langflow** ``POST {base}/api/v1/run/{flow_id}``, header ``x-api-key``:
  ``{input_value, session_id, input_type, output_type}``. Without ``session_id``
  every chat shares the flow's one session, so it is always sent. Answer
  ``outputs[0].outputs[0].results.message.text``. Probe: ``GET
  /api/v1/flows/{flow_id}`` with the key.
- **n8n** the Chat Trigger's webhook URL (no auth, or Basic: ``api_key =
  "user:password"``): ``{action: "sendMessage", chatInput, sessionId}``, the
  session id made by the client; answer ``output``, else ``text`` (also from a
  one-item list, as "Respond to Webhook" nodes send). Probe: ``GET`` of the
  webhook, reachability only (the trigger answers POST).
"""

from __future__ import annotations

from typing import Any

#: Each preset's defaults, keyed by the ``preset`` value.
PRESETS: dict[str, dict[str, Any]] = {
    "dify": {
        "base_path": "/v1",
        "url": "{base_url}/chat-messages",
        "body": {
            "query": "{message}",
            "inputs": {},
            "user": "{conversation}",
            "conversation_id": "{session_id}",
            "response_mode": "streaming",
        },
        "reply_format": "sse",
        "session": "server",
        "answer_path": "join('', events[?event=='message' || event=='agent_message'].answer)",
        "session_path": "events[?conversation_id] | [0].conversation_id",
        "usage_path": "events[?event=='message_end'] | [0].metadata.usage",
        # An error answer is {"code", "message", "status"}; in a stream, an error event.
        "error_code_path": "code || (events[?event=='error'] | [0].code)",
        "errors": {"404": "session_gone", "*:provider_quota_exceeded": "balance"},
        "probe_url": "{base_url}/parameters",
        "probe_checks_key": True,
    },
    "flowise": {
        "url": "{base_url}/api/v1/prediction/{chatflow_id}",
        "body": {"question": "{message}", "overrideConfig": {"sessionId": "{session_id}"}},
        "answer_path": "text",
        # Client mode: read only to notice that Flowise ignored our id.
        "session_path": "sessionId",
        "probe_url": "{base_url}/api/v1/ping",
    },
    "langflow": {
        "url": "{base_url}/api/v1/run/{flow_id}",
        "auth": "header",
        "auth_header": "x-api-key",
        "body": {
            "input_value": "{message}",
            "session_id": "{session_id}",
            "input_type": "chat",
            "output_type": "chat",
        },
        "answer_path": "outputs[0].outputs[0].results.message.text",
        "session_path": "session_id",
        "probe_url": "{base_url}/api/v1/flows/{flow_id}",
        "probe_checks_key": True,
    },
    "n8n": {
        "auth": "basic",
        "body": {"action": "sendMessage", "chatInput": "{message}", "sessionId": "{session_id}"},
        "answer_path": "output || text || [0].output || [0].text",
    },
}

#: What to tell the operator when a client-made session comes back changed.
SESSION_HINTS: dict[str, str] = {
    "flowise": (
        "in Flowise, open the chatflow's Configuration > Security > Override "
        "Configuration, enable it and allow sessionId (overrideConfig.sessionId)"
    ),
}
