"""Files shared with the bot on Slack: the real slack-bolt and slack_sdk stack and the
adapter's downloads against `FakeSlack` (files.info and url_private_download with the
bot token), the real dispatcher, store and thinnest backend against `FakeAgentServer`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.slack_files import on_slack
from tests.adapters.test_slack import make_config, running
from tests.fakes import documents
from tests.fakes.agents import FakeAgentServer
from tests.fakes.slack import FakeSlack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as server:
        yield server


@pytest.fixture
async def agents() -> AsyncIterator[FakeAgentServer]:
    async with FakeAgentServer() as server:
        yield server


async def test_a_shared_pdf_reaches_the_agent_as_text_downloaded_with_the_bot_token(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    file = slack.add_file(documents.pdf("Churn fell to 2%."), "kpis.pdf", "application/pdf")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        event = slack.message(
            "what changed?", channel="D1", channel_type="im", subtype="file_share", files=[file]
        )
        await bridge.deliver(event)
    assert agents.chat_calls[-1].json["message"] == (
        'File "kpis.pdf":\n<<<\n## Page 1\n\nChurn fell to 2%.\n>>>\n\nwhat changed?'
    )
    assert [c.args["file"] for c in slack.calls_to("files.info")] == [file["id"]]
    assert slack.downloads == [
        (f"/files-pri/{slack.team_id}-{file['id']}/download/kpis.pdf", slack.bot_token)
    ]
    [reply] = bridge.replies()
    assert reply.startswith('echo: File "kpis.pdf"')


@pytest.mark.parametrize("inline", [False, True], ids=["302 to sign-in", "sign-in page 200"])
async def test_a_refused_download_is_told_not_read_as_the_file(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer, inline: bool
) -> None:
    slack.download_token = "xoxb-a-token-with-files-read"
    slack.signin_inline = inline
    file = slack.add_file(b"name,score\nada,10\n", "scores.csv", "text/csv")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        event = slack.message(
            "", channel="D1", channel_type="im", subtype="file_share", files=[file]
        )
        await bridge.deliver(event)
    [reply] = bridge.replies()
    assert "could not download scores.csv" in reply and "files:read" in reply
    assert agents.chat_calls == []  # the sign-in page never reached the agent as the file
    assert [path for path, _ in slack.downloads] == [
        f"/files-pri/{slack.team_id}-{file['id']}/download/scores.csv"
    ]  # the redirect was not followed


async def test_a_slack_connect_stub_is_described_by_files_info(
    tmp_path: Path, slack: FakeSlack, agents: FakeAgentServer
) -> None:
    file = slack.add_file(b"# Notes\n\nship it", "notes.md", "text/markdown")
    async with running(make_config(tmp_path, slack, agents), slack) as bridge:
        event = slack.message(
            "thoughts?",
            channel="D1",
            channel_type="im",
            subtype="file_share",
            files=[slack.file_stub(file)],
        )
        await bridge.deliver(event)
    assert agents.chat_calls[-1].json["message"] == (
        'File "notes.md":\n<<<\n# Notes\n\nship it\n>>>\n\nthoughts?'
    )
    assert bridge.replies()[0].startswith('echo: File "notes.md"')


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://files.slack.com/files-pri/T1-F1/download/a.pdf", True),
        ("https://slack.com/files-pri/T1-F1/a.pdf", True),
        ("https://files.slack.com.evil.example/x", False),
        ("https://evil.example/files.slack.com/x", False),
        ("http://[::1", False),
    ],
)
def test_the_bot_token_goes_only_to_slacks_own_domain(url: str, ok: bool) -> None:
    assert on_slack(url, "https://slack.com/api/") is ok
