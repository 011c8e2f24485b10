"""PeakaBackend: the wire format against the fake Peaka API, and the reading of
every body shape the untyped 200 answer takes (pure parsing, called directly)."""

from __future__ import annotations

import uuid

import pytest

from bridge.backends.base import ReplyFormatError
from bridge.backends.peaka import MAX_ROWS, extract_reply, format_rows
from bridge.errors import AgentBadReply, AgentNotFound, AgentUnauthorized
from bridge.model import Usage
from tests.backends.conftest import MakeBackend
from tests.fakes.agents import FAKE_API_KEY, FAKE_PROJECT_ID, FakeAgentServer, FakeResponse


def lc(kind: str, content, **extra) -> dict:
    cls = {"ai": "AIMessage", "human": "HumanMessage", "tool": "ToolMessage"}[kind]
    return {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain_core", "messages", cls],
        "kwargs": {"content": content, "type": kind, **extra},
    }


def text_of(body) -> str:
    return extract_reply(body)[0]


# --- over HTTP -----------------------------------------------------------------------------


async def test_chat_sends_the_peaka_body(agents: FakeAgentServer, make_peaka: MakeBackend):
    backend = make_peaka()
    thread = backend.new_session_id()

    reply = await backend.chat("how many users?", thread)

    assert reply.text == "echo: how many users?"
    assert reply.session_id == thread
    [call] = agents.chat_calls
    assert (call.method, call.path) == ("POST", f"/ai-agent/{FAKE_PROJECT_ID}/chat")
    assert call.headers["Authorization"] == f"Bearer {FAKE_API_KEY}"
    assert call.json == {"message": "how many users?", "threadId": thread, "noExecute": False}


async def test_no_execute_is_sent(agents: FakeAgentServer, make_peaka: MakeBackend):
    await make_peaka(no_execute=True).chat("hi", "t1")

    assert agents.chat_calls[0].json["noExecute"] is True


def test_new_session_id_is_a_fresh_uuid(make_peaka: MakeBackend):
    backend = make_peaka()
    first, second = backend.new_session_id(), backend.new_session_id()

    assert first != second
    assert uuid.UUID(first).version == 4


async def test_multi_turn_keeps_the_thread_and_reads_the_last_answer(
    agents: FakeAgentServer, make_peaka: MakeBackend
):
    backend = make_peaka()
    thread = backend.new_session_id()

    one = await backend.chat("one", thread)
    two = await backend.chat("two", one.session_id)
    three = await backend.chat("three", two.session_id)

    # The fake's state grows with every turn: the reply is the LAST AI message.
    assert [one.text, two.text, three.text] == ["echo: one", "echo: two", "echo: three"]
    assert {c.json["threadId"] for c in agents.chat_calls} == {thread}
    assert agents.sessions == {thread: ["one", "two", "three"]}


async def test_a_thread_id_named_by_the_answer_wins(
    agents: FakeAgentServer, make_peaka: MakeBackend
):
    agents.script(FakeResponse(json={"threadId": "server-made", "message": "hi"}))

    reply = await make_peaka().chat("hello", "bridge-made")

    assert reply.session_id == "server-made"


async def test_without_a_thread_id_in_the_answer_the_sent_one_is_kept(
    agents: FakeAgentServer, make_peaka: MakeBackend
):
    agents.script(FakeResponse(json={"answer": "hi"}))

    reply = await make_peaka().chat("hello", "bridge-made")

    assert reply.session_id == "bridge-made"


async def test_no_session_still_sends_a_thread(agents: FakeAgentServer, make_peaka: MakeBackend):
    agents.script(FakeResponse(json={"answer": "hi"}))

    reply = await make_peaka().chat("hello", None)

    sent = agents.chat_calls[0].json["threadId"]
    assert uuid.UUID(sent)
    assert reply.session_id == sent


async def test_unreadable_state_is_bad_reply(agents: FakeAgentServer, make_peaka: MakeBackend):
    agents.script(FakeResponse(json={"threadId": "t1", "messages": [lc("human", "hi")]}))

    with pytest.raises(AgentBadReply):
        await make_peaka().chat("hi", "t1")
    assert len(agents.chat_calls) == 1


async def test_probe_lists_threads(agents: FakeAgentServer, make_peaka: MakeBackend):
    text = await make_peaka().probe()

    assert "key accepted" in text
    [call] = agents.calls
    assert (call.method, call.path) == ("GET", f"/ai-agent/{FAKE_PROJECT_ID}/threads")
    assert agents.chat_calls == []


@pytest.mark.parametrize(
    ("status", "error"), [(401, AgentUnauthorized), (403, AgentUnauthorized), (404, AgentNotFound)]
)
async def test_probe_maps_refusals(
    agents: FakeAgentServer, make_peaka: MakeBackend, status: int, error: type[Exception]
):
    agents.script_probe(FakeResponse(status=status, json={"message": "Project not found"}))

    with pytest.raises(error):
        await make_peaka().probe()


# --- body shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"message": "the answer"},
        {"response": "the answer"},
        {"answer": "the answer"},
        {"text": "the answer"},
        {"output": {"text": "the answer"}},
        {"output": "the answer"},
        {"result": "the answer"},
        {"result": {"answer": "the answer"}},
        {"message": {"type": "ai", "content": "the answer"}},
    ],
    ids=lambda b: "/".join(b),
)
def test_plain_text_fields(body):
    assert text_of(body) == "the answer"


def test_langchain_serialized_state():
    body = {"messages": [lc("human", "hi"), lc("ai", "the answer")], "threadId": "t"}

    assert text_of(body) == "the answer"


def test_plain_langchain_dicts():
    body = {"messages": [{"type": "human", "content": "hi"}, {"type": "ai", "content": "yes"}]}

    assert text_of(body) == "yes"


def test_state_under_result():
    body = {"result": {"messages": [lc("human", "hi"), lc("ai", "nested answer")]}}

    assert text_of(body) == "nested answer"


def test_a_bare_list_of_messages():
    assert text_of([lc("human", "q"), lc("ai", "a")]) == "a"


def test_the_last_ai_message_not_a_fixed_index():
    body = {
        "messages": [
            lc("human", "first question"),
            lc("ai", "first answer"),
            lc("human", "second question"),
            lc("ai", "", tool_calls=[{"name": "run_sql", "args": {}, "id": "c1"}]),
            lc("tool", '[{"n": 3}]'),
            lc("ai", "second answer"),
            lc("human", "trailing echo of the question"),
        ]
    }

    # Not messages[1], not messages[-1]: the last AI message that has text.
    assert text_of(body) == "second answer"


def test_class_name_alone_identifies_an_ai_message():
    message = {
        "lc": 1,
        "type": "constructor",
        "id": ["x", "AIMessageChunk"],
        "kwargs": {"content": "hey"},
    }

    assert text_of({"messages": [message]}) == "hey"


def test_content_parts_are_joined():
    content = [
        {"type": "text", "text": "Part one. "},
        {"type": "tool_use", "id": "t", "name": "sql", "input": {}},
        {"type": "text", "text": "Part two."},
    ]

    assert text_of({"messages": [lc("ai", content)]}) == "Part one. Part two."


def test_messages_are_preferred_over_a_plain_field():
    body = {"message": "status: ok", "messages": [lc("ai", "the real answer")]}

    assert text_of(body) == "the real answer"


def test_usage_from_the_last_ai_message():
    usage = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}
    body = {
        "messages": [
            lc("ai", "old", usage_metadata={"input_tokens": 1}),
            lc("ai", "new", usage_metadata=usage),
        ]
    }

    assert extract_reply(body)[1] == Usage(120, 30, 150)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": [lc("human", "only the question")]},
        {"messages": [lc("ai", "   ")]},
        {"message": ""},
        {"output": {"text": None}},
        {"currentQueryResult": []},  # an empty slot, no query: nothing to say
        "just a string",
        42,
    ],
)
def test_bodies_without_a_reply(body):
    with pytest.raises(ReplyFormatError):
        extract_reply(body)


# --- SQL and rows --------------------------------------------------------------------------


def test_generated_query_and_rows_are_shown():
    body = {
        "messages": [lc("human", "top customers?"), lc("ai", "Here are the top customers.")],
        "currentGeneratedQuery": "SELECT name, total FROM customers ORDER BY total DESC LIMIT 2",
        "currentQueryResult": [
            {"name": "Acme", "total": 1200.5},
            {"name": "Globex", "total": None},
        ],
    }

    text = text_of(body)

    assert text.startswith("Here are the top customers.")
    assert "```sql\nSELECT name, total FROM customers ORDER BY total DESC LIMIT 2\n```" in text
    table = text.split("```sql")[1].split("```\n\n```\n")[1]
    lines = table.splitlines()
    assert lines[0].split(" | ") == ["name  ", "total"]
    assert lines[2].split(" | ") == ["Acme  ", "1200.5"]
    assert lines[3].split(" | ") == ["Globex", "NULL"]
    assert "not shown" not in text


def test_query_already_in_the_text_is_not_repeated():
    query = "SELECT 1"
    body = {"messages": [lc("ai", f"I ran:\n```sql\n{query}\n```")], "currentGeneratedQuery": query}

    assert text_of(body).count(query) == 1


def test_no_execute_answer_with_only_a_query():
    body = {"threadId": "t", "currentGeneratedQuery": "SELECT count(*) FROM users"}

    assert text_of(body) == "```sql\nSELECT count(*) FROM users\n```"


def test_query_with_no_rows_says_so():
    body = {
        "messages": [lc("ai", "Done.")],
        "currentGeneratedQuery": "SELECT 1 WHERE false",
        "currentQueryResult": [],
    }

    assert "returned no rows" in text_of(body)


def test_older_v1_output():
    body = {
        "output": {"query": "SELECT id FROM t", "data": [{"id": 1}, {"id": 2}], "text": "Two ids."},
        "threadId": "t-1",
    }

    text = text_of(body)

    assert text.startswith("Two ids.")
    assert "```sql\nSELECT id FROM t\n```" in text
    assert "id\n--\n1\n2" in text


def test_rows_are_cut_with_a_note():
    rows = [{"n": i, "word": f"w{i}"} for i in range(55)]

    table = format_rows(rows)

    assert f"w{MAX_ROWS - 1}" in table
    assert f"w{MAX_ROWS}" not in table
    assert "35 more rows not shown (55 in total)" in table


def test_a_declared_total_counts_rows_not_sent():
    table = format_rows({"columns": ["n"], "rows": [[1], [2]], "rowCount": 500})

    assert "498 more rows not shown (500 in total)" in table


def test_long_cells_are_truncated_and_flattened():
    table = format_rows([{"note": "line one\nline two " + "x" * 200}])

    row = table.splitlines()[3]
    assert "line one line two" in row
    assert row.endswith("…")
    assert len(row) <= 40


def test_backticks_in_a_cell_do_not_close_the_block():
    table = format_rows([{"code": "```rm -rf```"}])

    assert table.count("```") == 2


@pytest.mark.parametrize(
    "result",
    [
        {"columns": ["id", "name"], "rows": [[1, "a"], [2, "b"]]},
        {"fields": [{"name": "id"}, {"name": "name"}], "data": [[1, "a"], [2, "b"]]},
        {"headers": ["id", "name"], "values": [[1, "a"], [2, "b"]]},
        {"rows": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]},
        '[{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]',
        {"result": {"columns": ["id", "name"], "rows": [[1, "a"], [2, "b"]]}},
    ],
    ids=["columns-rows", "fields-data", "headers-values", "rows-of-dicts", "json-string", "nested"],
)
def test_tabular_shapes(result):
    lines = format_rows(result).splitlines()

    assert lines[0] == "```"
    assert lines[1].split(" | ") == ["id", "name"]
    assert lines[3].split(" | ") == ["1 ", "a"]
    assert lines[4].split(" | ") == ["2 ", "b"]


def test_many_columns_are_cut_with_a_note():
    table = format_rows([{f"c{i}": i for i in range(15)}])

    assert "c11" in table
    assert "c12" not in table
    assert "3 more columns not shown" in table


def test_rows_without_columns_get_positional_names():
    assert format_rows([[1, "a"]]).splitlines()[1].split(" | ") == ["col1", "col2"]
    assert format_rows([5, 6]).splitlines()[1] == "value"


def test_a_non_tabular_result_is_shown_as_is():
    assert format_rows({"status": "ok"}) == '```\n{"status": "ok"}\n```'
    assert format_rows("Query executed successfully") == "```\nQuery executed successfully\n```"


def test_positional_rows_are_cut_too():
    table = format_rows({"columns": ["n"], "rows": [[i] for i in range(30)]})

    assert "10 more rows not shown (30 in total)" in table
