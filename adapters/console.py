"""The terminal adapter behind ``agent-bridge chat``.

It goes through the same dispatcher and store as Slack and Telegram, so a
conversation here is a real conversation: it is kept in the store, keeps its
agent session across runs, and shows the same friendly texts on agent errors.

Two ways of reading lines:

- On a terminal, prompt_toolkit: line editing, Up/Down recall the lines typed
  in this chat (kept in memory only: the store erases message text after
  ``retention_days``, a history file would keep it for ever), and log records
  are printed above the prompt instead of inside the line being typed
  (``patch_stdout``, and the root logger's console handlers pointed at it).
- From a pipe or a file (scripts, tests), plain ``readline()`` in a daemon
  thread: a blocking ``readline()`` in the default executor would keep the
  process alive after Ctrl-C until Enter is pressed.

Ctrl-C while an answer is awaited cancels that message for good (the store
keeps it as failed, ``cancelled``, so the next start does not ask the agent
again); at the prompt, it clears the line, and on an empty line leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import getpass
import logging
import signal
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from prompt_toolkit import PromptSession, print_formatted_text
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout

from adapters.base import AdapterState, ChatAdapter
from bridge.model import Conversation, ConversationKey, InboxMessage, IncomingMessage, Reply

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

log = logging.getLogger("adapters.console")

HELP = (
    "Type a message for the agent. /reset starts a new conversation, /status shows usage, "
    "/quit leaves (or Ctrl-D). Ctrl-C while the agent answers cancels that message."
)
PROMPT = "you> "


@dataclass(frozen=True, slots=True)
class _Mark:
    """The conversation's totals at the last /reset: /status counts from here."""

    epoch: int
    turns: int
    input_tokens: int
    output_tokens: int


class ConsoleAdapter(ChatAdapter):
    """A console conversation.

    ``interactive`` (default: whether ``stdin`` is a terminal) reads lines with
    prompt_toolkit, in the prompt_toolkit app session current when `converse`
    runs: the terminal (sys.stdin, sys.stdout), or what a test made with
    ``create_app_session(input=create_pipe_input(), output=...)``. Otherwise
    lines come from ``stdin`` and answers go to ``stdout``.
    """

    platform = "console"

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        agent: str,
        user: str | None = None,
        stdin: TextIO,
        stdout: TextIO,
        interactive: bool | None = None,
    ) -> None:
        super().__init__(dispatcher)
        self.agent = agent
        self.user = user or _login_name()
        # One conversation per user and agent: `chat --agent other` must not
        # continue the default agent's session.
        self.key = ConversationKey("console", "console", f"{self.user}/{agent}")
        self._stdin = stdin
        self._stdout = stdout
        self.interactive = _isatty(stdin) if interactive is None else interactive
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: threading.Thread | None = None
        self._session: PromptSession[str] | None = None
        self._above: _AbovePrompt | None = None
        self._mark: _Mark | None = None

    async def start(self) -> None:
        if not self.interactive:
            self._start_reader()
        self.state = AdapterState.CONNECTED

    def _start_reader(self) -> None:
        loop = asyncio.get_running_loop()

        def read() -> None:
            while True:
                try:
                    line = self._stdin.readline()
                except (OSError, ValueError):
                    line = ""
                loop.call_soon_threadsafe(self._lines.put_nowait, line or None)
                if not line:
                    return

        self._reader = threading.Thread(target=read, name="console-stdin", daemon=True)
        self._reader.start()

    async def stop(self) -> None:
        self.state = AdapterState.STOPPED
        for future in self._waiting.values():
            future.cancel()

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        self._print(f"{self.agent}> {reply.text}")
        future = self._waiting.pop(message.event_id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    async def post_notice(self, chat: str, text: str) -> None:
        self._print(f"[notice to {chat}] {text}")

    def _print(self, text: str) -> None:
        if self._above is not None:
            self._above.write(text + "\n")
            return
        self._stdout.write(text + "\n")
        self._stdout.flush()

    # --- the conversation ------------------------------------------------------------

    async def converse(self) -> None:
        """Read lines until /quit, end of input or Ctrl-C at an empty prompt,
        answering each in turn."""
        if not self.interactive:
            await self._converse(self._read_piped)
            return
        streams = (sys.stderr, sys.stdout, self._stdout)
        self._above = _AbovePrompt(asyncio.get_running_loop())
        # patch_stdout for stray writes to sys.stdout and sys.stderr (warnings, a
        # library's print); log records go through `_AbovePrompt`, in order with ours.
        with patch_stdout(), _logs_to(self._above, streams):
            self._session = PromptSession(history=InMemoryHistory(), key_bindings=_key_bindings())
            try:
                await self._converse(self._read_prompt)
            finally:
                self._session = None
                self._above = None

    async def _converse(self, read: Callable[[], Awaitable[str | None]]) -> None:
        conversation = await self.dispatcher.conversation(self.key)
        if conversation is not None and conversation.turns:
            self._print(
                f"(continuing your conversation with {conversation.agent!r}: "
                f"{conversation.turns} turn(s); /reset starts over)"
            )
        self._print(HELP)
        while True:
            line = await read()
            if line is None:
                return
            text = line.strip()
            if not text:
                continue
            command = text.lower()
            if command in ("/quit", "/exit"):
                return
            if command == "/help":
                self._print(HELP)
            elif command in ("/reset", "/new"):
                await self._reset()
            elif command == "/status":
                await self._status()
            else:
                await self._ask(text)

    async def _read_piped(self) -> str | None:
        if _isatty(self._stdout) and _isatty(self._stdin):  # pragma: no cover - a terminal
            self._stdout.write(PROMPT)
            self._stdout.flush()
        line = await self._lines.get()
        if line is None:
            self._print("")
        return line

    async def _read_prompt(self) -> str | None:
        assert self._session is not None
        try:
            return await self._session.prompt_async(PROMPT)
        except (EOFError, KeyboardInterrupt):  # Ctrl-D, or Ctrl-C on an empty line
            return None

    # --- commands --------------------------------------------------------------------

    async def _ask(self, text: str) -> None:
        event_id = uuid.uuid4().hex
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        await self.dispatcher.submit(
            IncomingMessage(
                key=self.key, event_id=event_id, sender=self.user, text=text, agent=self.agent
            )
        )
        cancel: Callable[[ConversationKey, str], Awaitable[bool]] | None = getattr(
            self.dispatcher, "cancel", None
        )
        if cancel is None:
            # This dispatcher cannot cancel: Ctrl-C leaves as it always did, and
            # the message is answered at the next start.
            await future
            return
        interrupted = asyncio.Event()
        with _on_sigint(interrupted.set):
            stop: asyncio.Future[Any] = asyncio.ensure_future(interrupted.wait())
            waiters: set[asyncio.Future[Any]] = {future, stop}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stop.cancel()
        if future.done():
            return
        self._waiting.pop(event_id, None)
        future.cancel()
        if await cancel(self.key, event_id):
            self._print("(cancelled: the agent will not be asked this again)")
        else:
            # Its answer was stored an instant ago: it is shown when it comes.
            self._print("(too late to cancel: the answer is on its way)")

    async def _reset(self) -> None:
        await self.dispatcher.reset(self.key, self.agent)
        # The store keeps a conversation's turns and tokens for good (they are
        # its usage, as `sessions list` shows); /status counts from here.
        conversation = await self.dispatcher.conversation(self.key)
        if conversation is not None:
            self._mark = _Mark(
                conversation.epoch,
                conversation.turns,
                conversation.input_tokens,
                conversation.output_tokens,
            )
        self._print("(started a new conversation)")

    async def _status(self) -> None:
        conversation = await self.dispatcher.conversation(self.key)
        if conversation is None:
            self._print("(no conversation yet)")
            return
        turns, tokens_in, tokens_out, since = self._since_reset(conversation)
        self._print(
            f"(agent {conversation.agent!r}, session {conversation.session_id or 'none yet'}, "
            f"{turns} turn(s), {tokens_in} input and {tokens_out} output tokens{since})"
        )

    def _since_reset(self, conversation: Conversation) -> tuple[int, int, int, str]:
        mark = self._mark
        # Another reset since ours (`agent-bridge sessions reset`) moved the epoch on.
        if mark is None or mark.epoch != conversation.epoch:
            return conversation.turns, conversation.input_tokens, conversation.output_tokens, ""
        return (
            conversation.turns - mark.turns,
            conversation.input_tokens - mark.input_tokens,
            conversation.output_tokens - mark.output_tokens,
            " since /reset",
        )


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        # As a shell does: Ctrl-C drops the line being typed; on an empty line, it leaves.
        buffer = event.app.current_buffer
        if buffer.text:
            buffer.reset()
        else:
            event.app.exit(exception=KeyboardInterrupt, style="class:aborting")

    return bindings


class _AbovePrompt:
    """A text stream that prints whole lines above the prompt, for the log
    handlers and the console's own lines: each line is printed in the loop, in
    the context (prompt_toolkit app session) where it was made, whichever
    thread or task writes it, so a line never lands inside the one being typed.
    prompt_toolkit's output escapes control characters: an agent's text
    cannot drive the terminal."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._context = contextvars.copy_context()
        self._lock = threading.Lock()
        self._partial = ""

    def write(self, data: str) -> int:
        with self._lock:
            text, newline, self._partial = (self._partial + data).rpartition("\n")
        if newline:
            self._loop.call_soon_threadsafe(self._show, text, context=self._context)
        return len(data)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    @staticmethod
    def _show(text: str) -> None:
        print_formatted_text(text)


@contextlib.contextmanager
def _logs_to(stream: _AbovePrompt, streams: tuple[Any, ...]) -> Iterator[None]:
    """Point the root logger's handlers that write to one of ``streams`` (the
    terminal's, before patch_stdout) at ``stream`` while open:
    ``logging.basicConfig`` handlers hold the stream they were given."""
    terminal = {id(s) for s in (*streams, sys.__stderr__, sys.__stdout__) if s is not None}
    moved: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and id(handler.stream) in terminal:
            moved.append((handler, handler.setStream(stream)))
    try:
        yield
    finally:
        for handler, previous in moved:
            handler.setStream(previous)


@contextlib.contextmanager
def _on_sigint(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` in the loop on SIGINT (Ctrl-C) while open, instead of
    interrupting the program; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()

    def handler(signum: int, frame: object) -> None:
        loop.call_soon_threadsafe(callback)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "console"
