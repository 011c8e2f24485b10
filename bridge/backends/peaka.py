"""`PeakaBackend`: the Peaka AI agent API.

``POST {base}/ai-agent/{projectId}/chat`` with ``{"message", "threadId",
"noExecute"}``. The OpenAPI document types the 200 body only as ``object``
(peakacom/docs, api-reference/peaka-openapi.json), so `extract_reply()` reads
every shape seen in the wild:

- a plain text field: ``message``, ``response``, ``answer``, ``text``, ``output.text``;
- the LangGraph state of the agent, possibly under ``result``, whose ``messages``
  list holds LangChain-serialized messages (``{"type": "ai", "content": ...}`` or
  ``{"lc": 1, "id": [..., "AIMessage"], "kwargs": {"content": ..., "type": "ai"}}``,
  content a string or a list of parts): the reply is the last AI message with text;
- the generated SQL and its rows (``currentGeneratedQuery``/``currentQueryResult``,
  or the older V1 ``output.query``/``output.data``), added to the text as Markdown.

There is no create-thread endpoint: threads come into being through ``chat``,
so the bridge makes a UUID for a new conversation, and keeps the ``threadId``
the answer names if it names one.

Streaming (``stream = true``): ``POST {base}/ai-agent/{projectId}/chat/stream``,
the chat body plus ``"streamModes": ["messages"]``, answers Server-Sent Events in
LangGraph's ``messages`` mode: each event's data is a message chunk, or a
``[chunk, metadata]`` pair, LangChain-serialized or plain (``{"type":
"AIMessageChunk", "content": ...}``). The text of the AI chunks is the answer;
human and tool messages, tool-call chunks and the other stream modes' events
are skipped. ``messages/partial`` events (the message so far, not a delta) are
turned into deltas. An ``error`` event is `AgentUnavailable` (or
`AgentInsufficientBalance` when it speaks of credit). The stream has no final
event: it is complete when the body ends. Unlike `chat()`, a streamed answer
carries no generated SQL or rows (the ``messages`` mode streams only messages).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from bridge.backends.base import (
    AgentRequest,
    ReplyFormatError,
    StreamEnd,
    StreamItem,
)
from bridge.backends.http import HttpAgentBackend
from bridge.backends.sse import SseEvent
from bridge.config import PeakaAgentConfig
from bridge.errors import AgentInsufficientBalance, AgentUnavailable
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, TextDelta

#: Rows and columns shown of a query result, and characters per cell.
MAX_ROWS = 20
MAX_COLUMNS = 12
MAX_CELL = 40

_TEXT_FIELDS = ("message", "response", "answer", "text")
_AI_TYPES = frozenset({"ai", "aimessage", "aimessagechunk", "assistant"})
_BALANCE_WORDS = re.compile(r"balance|credit|quota|payment", re.IGNORECASE)


class PeakaBackend(HttpAgentBackend[PeakaAgentConfig]):
    kind = "peaka"

    @property
    def project_id(self) -> str:
        return self.config.project_id

    @property
    def _project_url(self) -> str:
        base = self.config.effective_base_url.rstrip("/")
        return f"{base}/ai-agent/{quote(self.config.project_id, safe='')}"

    def __repr__(self) -> str:
        return f"PeakaBackend(name={self.name!r}, project_id={self.project_id!r})"

    def new_session_id(self) -> str:
        return str(uuid.uuid4())

    def build_request(self, message: str, session_id: str | None) -> AgentRequest:
        thread_id = session_id if session_id is not None else self.new_session_id()
        body = {"message": message, "threadId": thread_id, "noExecute": self.config.no_execute}
        return AgentRequest(f"{self._project_url}/chat", body)

    def parse_reply(self, data: Any, sent_session_id: str | None) -> AgentReply:
        text, usage = extract_reply(data)
        thread_id = _thread_id(data) or sent_session_id
        return AgentReply(text=text, session_id=thread_id, usage=usage)

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        # Peaka needs a threadId on every call: make one here (not in build_request) so
        # that the reply names the thread even when the answer does not.
        return await super().chat(message, session_id or self.new_session_id(), context=context)

    # --- streaming ----------------------------------------------------------------------

    can_stream = True
    stream_needs_end = False

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        # As in chat(): the thread is named by the bridge when the turn starts one.
        thread = session_id or self.new_session_id()
        if not self.streams:
            async for event in super().stream(message, thread, context=context):
                yield event
            return
        partials: dict[str, str] = {}  # this stream's partial messages so far, by id
        events = self.stream_call(
            self.stream_request(message, thread),
            sent_session_id=thread,
            parse=lambda event: self._parse_event(event, partials),
        )
        async for event in self.with_fallback(events, message, thread, context):
            yield event

    def stream_request(self, message: str, session_id: str | None) -> AgentRequest:
        request = self.build_request(message, session_id)
        body = {**(request.json or {}), "streamModes": ["messages"]}
        return AgentRequest(f"{self._project_url}/chat/stream", body)

    def parse_event(self, event: SseEvent, sent_session_id: str | None) -> Sequence[StreamItem]:
        return self._parse_event(event, {})

    def _parse_event(self, event: SseEvent, partials: dict[str, str]) -> list[StreamItem]:
        data = event.json()
        name = event.event
        if name == "error" or (isinstance(data, dict) and name == "message" and "error" in data):
            raise self._stream_error(data)
        if name not in ("message", "messages", "messages/partial", "messages/complete"):
            return []  # metadata, values, updates, end...
        if isinstance(data, list) and len(data) == 2 and _is_metadata(data[1]):
            data = data[0]  # LangGraph's (chunk, metadata) pair
        chunks = data if isinstance(data, list) else [data]
        items: list[StreamItem] = []
        for chunk in chunks:
            if not isinstance(chunk, dict):
                continue
            found = _as_message(chunk)
            if found is None or found[0] not in _AI_TYPES:
                continue
            text = found[1]
            if name != "messages" and name != "message":
                # messages/partial and /complete carry the whole message so far.
                key = _message_id(chunk)
                seen = partials.get(key, "")
                if not text.startswith(seen):
                    continue  # a rewritten message: nothing safe to add
                partials[key] = text
                text = text[len(seen) :]
            if text:
                items.append(TextDelta(text))
        return items

    def finish_stream(
        self, text: str, end: StreamEnd | None, sent_session_id: str | None
    ) -> AgentReply:
        # chat() strips the text of the answer: so does the streamed one.
        return super().finish_stream(text.strip(), end, sent_session_id)

    def _stream_error(self, data: object) -> Exception:
        if isinstance(data, dict):
            value = data.get("message") or data.get("error") or data.get("detail") or data
            if isinstance(value, dict):
                value = value.get("message") or value
        else:
            value = data
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if _BALANCE_WORDS.search(text):
            return self._error(AgentInsufficientBalance, f"error event: {text}")
        return self._error(AgentUnavailable, f"error event: {text}")

    # --- probe ---------------------------------------------------------------------------

    def probe_request(self) -> AgentRequest:
        return AgentRequest(f"{self._project_url}/threads", method="GET")

    def describe_probe(self, response: httpx.Response) -> str:
        return f"peaka project {self.project_id}: reachable, key accepted"


# --- reading the body ---------------------------------------------------------------------


def extract_reply(data: Any) -> tuple[str, Usage]:
    """The reply text (Markdown) and token usage of a chat answer; `ReplyFormatError`
    when the body holds neither text nor a query."""
    if not isinstance(data, dict):
        if isinstance(data, list):
            data = {"messages": data}
        else:
            raise ReplyFormatError(f"expected a JSON object, got {type(data).__name__}")
    layers = _layers(data)
    text, usage = "", Usage()
    for layer in layers:
        found = _last_ai_message(layer.get("messages"))
        if found is not None:
            text, usage = found
            break
    else:
        text = _plain_text(layers)
    parts = [text.strip()] if text.strip() else []
    v1 = _v1_output(data)
    query = _first(layers, _query_of)
    if query is None and isinstance(v1.get("query"), str) and v1["query"].strip():
        query = v1["query"]
    if query and query.strip() not in text:
        parts.append(f"```sql\n{query.strip()}\n```")
    rows = _first(layers, _rows_of)
    if rows is None and v1.get("data") not in (None, ""):
        rows = v1["data"]
    # A state may carry an empty result slot on a turn that ran no query: say
    # "no rows" only when there was a query.
    if rows is not None and (query or not _is_empty(rows)):
        parts.append(format_rows(rows))
    if not parts:
        raise ReplyFormatError("no reply text, query or rows in the body")
    return "\n\n".join(parts), usage


def _layers(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    # The state may be the body itself or sit under "result" (one client reads
    # result.messages); the V1 answer nests text, query and rows under "output".
    layers: list[Mapping[str, Any]] = [data]
    for key in ("result", "output", "values", "state"):
        inner = data.get(key)
        if isinstance(inner, dict):
            layers.append(inner)
    return layers


def _first(layers: Sequence[Mapping[str, Any]], read: Any) -> Any:
    for layer in layers:
        value = read(layer)
        if value is not None:
            return value
    return None


def _thread_id(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    for layer in _layers(data):
        for key in ("threadId", "thread_id"):
            value = layer.get(key)
            if isinstance(value, str) and value:
                return value
    return None


def _plain_text(layers: Sequence[Mapping[str, Any]]) -> str:
    for layer in layers:
        for key in _TEXT_FIELDS:
            value = layer.get(key)
            if isinstance(value, str) and value.strip():
                return value
            if isinstance(value, dict):
                # A single message object instead of a string.
                message = _as_message(value)
                if message is not None and message[1].strip():
                    return message[1]
        for key in ("output", "result"):
            value = layer.get(key)
            if isinstance(value, str) and value.strip():
                return value
    return ""


def _last_ai_message(messages: Any) -> tuple[str, Usage] | None:
    """The text of the last AI message that has any (an AI message that only calls a
    tool has empty content), and its usage; None when there is no such message."""
    if not isinstance(messages, list):
        return None
    for item in reversed(messages):
        if not isinstance(item, dict):
            continue
        message = _as_message(item)
        if message is None:
            continue
        kind, text, usage = message
        if kind in _AI_TYPES and text.strip():
            return text, usage
    return None


def _as_message(item: Mapping[str, Any]) -> tuple[str, str, Usage] | None:
    """(type, text, usage) of a LangChain message, serialized or plain."""
    fields: Mapping[str, Any] = item
    kind = item.get("type") or item.get("role")
    kwargs = item.get("kwargs")
    if isinstance(kwargs, dict):
        # {"lc": 1, "type": "constructor", "id": [..., "AIMessage"], "kwargs": {...}}
        fields = kwargs
        ids = item.get("id")
        class_name = ids[-1] if isinstance(ids, list) and ids else None
        kind = kwargs.get("type") or class_name
    if not isinstance(kind, str) or "content" not in fields:
        return None
    return kind.lower(), _content_text(fields["content"]), _message_usage(fields)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        # Content blocks: keep the text ones, as LangChain's BaseMessage.text does.
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                value = part.get("text")
                if isinstance(value, str):
                    texts.append(value)
        return "".join(texts)
    return ""


def _message_usage(fields: Mapping[str, Any]) -> Usage:
    meta = fields.get("usage_metadata")
    if not isinstance(meta, dict):
        return Usage()
    counts = [meta.get(k) for k in ("input_tokens", "output_tokens", "total_tokens")]
    tokens_in, tokens_out, total = (c if isinstance(c, int) and c >= 0 else 0 for c in counts)
    return Usage(tokens_in, tokens_out, total or tokens_in + tokens_out)


def _is_metadata(value: Any) -> bool:
    # The second half of a (chunk, metadata) pair: a dict that is no message.
    return isinstance(value, dict) and "content" not in value and "kwargs" not in value


def _message_id(chunk: Mapping[str, Any]) -> str:
    kwargs = chunk.get("kwargs")
    fields = kwargs if isinstance(kwargs, dict) else chunk
    value = fields.get("id")
    return value if isinstance(value, str) else ""


def _query_of(layer: Mapping[str, Any]) -> str | None:
    for key in ("currentGeneratedQuery", "generatedQuery", "sql"):
        value = layer.get(key)
        if isinstance(value, dict):
            value = value.get("query") or value.get("sql")
        if isinstance(value, str) and value.strip():
            return value
    return None


def _rows_of(layer: Mapping[str, Any]) -> Any:
    for key in ("currentQueryResult", "queryResult"):
        value = layer.get(key)
        if value is not None and value != "":
            return value
    return None


def _v1_output(data: Mapping[str, Any]) -> Mapping[str, Any]:
    # The older V1 endpoint answered {"output": {"query", "data", "text"}, "threadId"}.
    output = data.get("output")
    return output if isinstance(output, dict) else {}


def _is_empty(rows: Any) -> bool:
    return rows in ([], {}, None) or (isinstance(rows, dict) and not rows.get("rows", True))


# --- formatting rows -----------------------------------------------------------------------


def format_rows(result: Any, *, max_rows: int = MAX_ROWS) -> str:
    """A query result as a compact table in a code block (Markdown), cut after
    ``max_rows`` rows with a note of how many were left out."""
    columns, rows, total = _table(result, max_rows)
    if columns is None:
        # Not tabular: show it as it came, shortened.
        raw = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
        if len(raw) > 2000:
            raw = raw[:2000] + "..."
        return f"```\n{raw}\n```"
    if total == 0 or not rows:
        return "_The query returned no rows._"
    shown = rows[:max_rows]
    hidden_columns = max(0, len(columns) - MAX_COLUMNS)
    columns = columns[:MAX_COLUMNS]
    cells = [[_cell(value) for value in row[: len(columns)]] for row in shown]
    header = [_cell(c) for c in columns]
    widths = [
        max(len(header[i]), *(len(r[i]) for r in cells if i < len(r))) for i in range(len(header))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            values[i].ljust(widths[i]) if i < len(values) else " " * widths[i]
            for i in range(len(widths))
        ]
        return " | ".join(padded).rstrip()

    lines = [line(header), "-+-".join("-" * w for w in widths)]
    lines.extend(line(r) for r in cells)
    table = "```\n" + "\n".join(lines) + "\n```"
    notes = []
    if total > len(shown):
        left = total - len(shown)
        notes.append(f"{left} more row{'s' if left != 1 else ''} not shown ({total} in total)")
    if hidden_columns:
        notes.append(f"{hidden_columns} more column{'s' if hidden_columns != 1 else ''} not shown")
    if notes:
        table += "\n_" + "; ".join(notes) + "._"
    return table


def _table(result: Any, limit: int) -> tuple[list[str] | None, list[list[Any]], int]:
    """(columns, the first ``limit`` rows as lists, total row count) of the shapes a
    query result takes; columns None when the value is not a table."""
    if isinstance(result, str):
        stripped = result.strip()
        if stripped[:1] in ("[", "{"):
            try:
                return _table(json.loads(stripped), limit)
            except ValueError:
                pass
        return None, [], 0
    if isinstance(result, dict):
        declared = _columns(result.get("columns") or result.get("fields") or result.get("headers"))
        body = next(
            (result[k] for k in ("rows", "data", "values", "records", "result") if k in result),
            None,
        )
        if body is None:
            return None, [], 0
        columns, rows, total = (
            _table(body, limit) if not isinstance(body, list) else _rows(body, declared, limit)
        )
        count = result.get("rowCount", result.get("totalRows", result.get("total")))
        if isinstance(count, int) and not isinstance(count, bool) and count > total:
            total = count
        return columns, rows, total
    if isinstance(result, list):
        return _rows(result, None, limit)
    return None, [], 0


def _rows(
    items: list[Any], declared: list[str] | None, limit: int
) -> tuple[list[str], list[list[Any]], int]:
    # Only the rows shown are converted: a result may hold many thousands.
    shown = items[:limit]
    if shown and all(isinstance(item, dict) for item in shown):
        columns: list[str] = list(declared or [])
        for item in shown:
            for key in item:
                if key not in columns:
                    columns.append(str(key))
        return columns, [[item.get(c) for c in columns] for item in shown], len(items)
    rows = [list(item) if isinstance(item, list | tuple) else [item] for item in shown]
    width = max((len(r) for r in rows), default=0)
    if declared:
        columns = declared + [f"col{i + 1}" for i in range(len(declared), width)]
    else:
        columns = ["value"] if width <= 1 else [f"col{i + 1}" for i in range(width)]
    return columns, rows, len(items)


def _columns(value: Any) -> list[str] | None:
    if not isinstance(value, list) or not value:
        return None
    names = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("name") or item.get("label") or item.get("column") or ""
        names.append(str(item))
    return names


def _cell(value: Any) -> str:
    if value is None:
        text = "NULL"
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, dict | list):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    text = " ".join(text.split())
    # A ``` inside a cell would close the code block.
    text = text.replace("```", "'''")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
