"""The console chat through the real dispatcher and store: piped lines (the
plain path), and prompt_toolkit on a pipe input with a captured terminal
output (the terminal path)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.data_structures import Size
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output.vt100 import Vt100_Output

from adapters.console import ConsoleAdapter
from bridge.app import open_core
from bridge.config import Config, load_config
from bridge.dispatcher import Dispatcher
from storage.store import Store
from tests.fakes.agents import FakeAgentServer, thinnest_config_toml

ROOT = Path(__file__).resolve().parents[2]

needs_cancel = pytest.mark.skipif(
    not hasattr(Dispatcher, "cancel"),
    reason="Dispatcher.cancel(key, event_id) and Store.cancel(platform, event_id) "
    "are not in this tree yet (issue 9, item 7)",
)


def make_config(tmp_path: Path, agents: str = '[agents.default]\nbackend = "echo"\n') -> Config:
    path = tmp_path / "agent-bridge.toml"
    path.write_text(f'[storage]\nurl = "sqlite+aiosqlite:///{tmp_path}/bridge.db"\n\n{agents}')
    return load_config(path, {})


@contextlib.asynccontextmanager
async def console_chat(
    config: Config, stdin: io.StringIO | None = None, *, interactive: bool = False
) -> AsyncIterator[tuple[ConsoleAdapter, asyncio.Task[None], io.StringIO]]:
    """What `agent-bridge chat` runs (bridge.cli._chat), with the console's
    conversation as a task the test can watch."""
    stdout = io.StringIO()
    async with open_core(config) as core:
        console = ConsoleAdapter(
            core.dispatcher,
            agent="default",
            user="tester",
            stdin=stdin or io.StringIO(),
            stdout=stdout,
            interactive=interactive,
        )
        core.dispatcher.register(console)
        async with console:
            await core.dispatcher.resume()
            task = asyncio.create_task(console.converse())
            try:
                yield console, task, stdout
                await asyncio.wait_for(task, 10)
                await asyncio.wait_for(core.dispatcher.wait_idle(), 10)
            finally:
                task.cancel()


class Screen(io.StringIO):
    """What the terminal was sent; `changed` is set at every write."""

    def __init__(self) -> None:
        super().__init__()
        self._loop = asyncio.get_running_loop()
        self.changed = asyncio.Event()

    def write(self, text: str) -> int:
        self._loop.call_soon_threadsafe(self.changed.set)
        return super().write(text)


class Terminal:
    """A pipe for the keys and a captured VT100 screen stream."""

    def __init__(self, keys: PipeInput) -> None:
        self.keys = keys
        self.screen = Screen()
        self.output = Vt100_Output(self.screen, lambda: Size(rows=40, columns=120))

    def type(self, text: str) -> None:
        self.keys.send_text(text)

    async def shows(self, text: str, *, count: int = 1, within: float = 5.0) -> str:
        async with asyncio.timeout(within):
            while self.screen.getvalue().count(text) < count:
                self.screen.changed.clear()
                await self.screen.changed.wait()
        return self.screen.getvalue()


@pytest.fixture
async def terminal() -> AsyncIterator[Terminal]:
    with create_pipe_input() as keys:
        term = Terminal(keys)
        with create_app_session(input=keys, output=term.output):
            yield term


# --- the plain path (pipes, scripts) ---------------------------------------------------


async def test_piped_lines_are_answered_and_reset_counts_afresh(tmp_path: Path) -> None:
    lines = io.StringIO("hello\n/status\n/reset\n/status\nagain\n/status\n")
    async with console_chat(make_config(tmp_path), lines) as (_, _, stdout):
        pass
    out = stdout.getvalue()
    assert "default> hello" in out and "default> again" in out
    statuses = [line for line in out.splitlines() if line.startswith("(agent ")]
    assert [s.split(", ")[2] for s in statuses] == ["1 turn(s)", "0 turn(s)", "1 turn(s)"]
    assert statuses[1].endswith("since /reset)")
    assert "started a new conversation" in out


async def test_a_new_start_continues_the_stored_conversation(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with console_chat(config, io.StringIO("one\ntwo\n")):
        pass
    async with console_chat(config, io.StringIO("/status\n")) as (_, _, stdout):
        pass
    assert "continuing your conversation with 'default': 2 turn(s)" in stdout.getvalue()


# --- the terminal path (prompt_toolkit) --------------------------------------------------


async def test_up_arrow_recalls_the_previous_line(tmp_path: Path, terminal: Terminal) -> None:
    async with console_chat(make_config(tmp_path), interactive=True):
        await terminal.shows("you>")
        terminal.type("first line\r")
        await terminal.shows("default> first line")
        terminal.type("\x1b[A\r")  # Up, Enter
        screen = await terminal.shows("default> first line", count=2)
        terminal.type("/quit\r")
    assert "^[[A" not in screen


async def test_a_log_line_is_printed_above_the_prompt(tmp_path: Path, terminal: Terminal) -> None:
    handler = logging.StreamHandler(sys.stderr)  # as logging.basicConfig makes it
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        async with console_chat(make_config(tmp_path), interactive=True) as (_, _, stdout):
            await terminal.shows("you>")
            terminal.type("hel")
            await terminal.shows("hel")
            logging.getLogger("tests.console").warning("a log line")
            screen = await terminal.shows("a log line")
            terminal.type("lo\r")
            screen = await terminal.shows("default> hello")
            terminal.type("/quit\r")
    finally:
        root.removeHandler(handler)
    after = screen[screen.index("a log line") :]
    # The prompt and the half-typed line, drawn again below it.
    assert "you>" in after and "hel" in after.replace("hello", "")
    assert "hela log line" not in screen
    assert handler.stream is sys.stderr  # given back
    assert stdout.getvalue() == ""  # the terminal path writes to the terminal only


async def test_reset_then_status_shows_zero_turns(tmp_path: Path, terminal: Terminal) -> None:
    async with console_chat(make_config(tmp_path), interactive=True):
        await terminal.shows("you>")
        terminal.type("hi\r")
        await terminal.shows("default> hi")
        terminal.type("/status\r")
        await terminal.shows("1 turn(s)")
        terminal.type("/reset\r")
        await terminal.shows("started a new conversation")
        terminal.type("/status\r")
        await terminal.shows("0 turn(s), 0 input and 0 output tokens since /reset")
        terminal.type("/quit\r")


async def test_ctrl_c_clears_the_line_then_leaves(tmp_path: Path, terminal: Terminal) -> None:
    async with console_chat(make_config(tmp_path), interactive=True) as (_, task, _):
        await terminal.shows("you>")
        terminal.type("never sent\x03")
        terminal.type("sent\r")
        await terminal.shows("default> sent")
        terminal.type("\x03")  # on an empty line: leave
        await asyncio.wait_for(task, 5)
    assert "default> never sent" not in terminal.screen.getvalue()


async def test_ctrl_d_leaves(tmp_path: Path, terminal: Terminal) -> None:
    async with console_chat(make_config(tmp_path), interactive=True) as (_, task, _):
        await terminal.shows("you>")
        terminal.type("\x04")
        await asyncio.wait_for(task, 5)


# --- Ctrl-C during an answer -------------------------------------------------------------


async def _unfinished(config: Config) -> list[Any]:
    async with Store(config.storage.url) as store:
        return await store.unfinished()


@needs_cancel
@pytest.mark.parametrize("interactive", [False, True])
async def test_ctrl_c_during_an_answer_cancels_it_for_good(
    tmp_path: Path, terminal: Terminal, interactive: bool
) -> None:
    async with FakeAgentServer() as agents:
        config = make_config(tmp_path, thinnest_config_toml(agents.url))
        agents.hold()
        lines = io.StringIO("a slow question\n/status\n")
        async with console_chat(config, lines, interactive=interactive) as (_, _, stdout):
            if interactive:
                await terminal.shows("you>")
                terminal.type("a slow question\r")
            await agents.wait_for_calls(1)
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C: the console's handler takes it
            if interactive:
                await terminal.shows("(cancelled")
                terminal.type("/quit\r")
        out = terminal.screen.getvalue() if interactive else stdout.getvalue()
        assert "(cancelled: the agent will not be asked this again)" in out
        assert await _unfinished(config) == []
        agents.release()
        # The next start does not ask it again.
        async with console_chat(config, io.StringIO("")):
            pass
        assert [c.json["message"] for c in agents.chat_calls] == ["a slow question"]


@needs_cancel
async def test_ctrl_c_in_the_real_command(tmp_path: Path) -> None:
    """`agent-bridge chat` as a person runs it: Ctrl-C during the answer cancels
    it, Ctrl-C at the prompt then leaves, and a new start asks nothing."""
    async with FakeAgentServer() as agents:
        config = tmp_path / "agent-bridge.toml"
        config.write_text(
            '[storage]\nurl = "sqlite+aiosqlite:///bridge.db"\n\n'
            + thinnest_config_toml(agents.url)
        )
        agents.hold()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_BRIDGE")}
        env["PYTHONPATH"] = str(ROOT)
        args = (sys.executable, "-m", "bridge", "chat", "--config", str(config))
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env=env,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"a slow question\n")
        await proc.stdin.drain()
        await agents.wait_for_calls(1, within=20)
        proc.send_signal(signal.SIGINT)
        while b"(cancelled" not in (line := await asyncio.wait_for(proc.stdout.readline(), 20)):
            assert line, "the chat ended without saying the message was cancelled"
        proc.send_signal(signal.SIGINT)  # at the prompt now: leaves
        _, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 0, err
        assert b"Traceback" not in err
        agents.release()
        again = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=tmp_path,
            env=env,
        )
        out, err = await asyncio.wait_for(again.communicate(b""), 20)
        assert again.returncode == 0, err
        assert len(agents.chat_calls) == 1
        assert b"a slow question" not in out
