"""The terminal adapter behind ``agent-bridge chat``.

It goes through the same dispatcher and store as Slack and Telegram, so a
conversation here is a real conversation: it is kept in the store, keeps its
agent session across runs, and shows the same friendly texts on agent errors.

Lines are read by a daemon thread: a blocking ``readline()`` in the default
executor would keep the process alive after Ctrl-C until Enter is pressed.
"""

from __future__ import annotations

import asyncio
import getpass
import threading
import uuid
from typing import TYPE_CHECKING, TextIO

from adapters.base import AdapterState, ChatAdapter
from bridge.model import ConversationKey, InboxMessage, IncomingMessage, Reply

if TYPE_CHECKING:
    from bridge.dispatcher import Dispatcher

HELP = (
    "Type a message for the agent. /reset starts a new conversation, /status shows usage, "
    "/quit leaves (or Ctrl-D)."
)


class ConsoleAdapter(ChatAdapter):
    platform = "console"

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        agent: str,
        user: str | None = None,
        stdin: TextIO,
        stdout: TextIO,
    ) -> None:
        super().__init__(dispatcher)
        self.agent = agent
        self.user = user or _login_name()
        # One conversation per user and agent: `chat --agent other` must not
        # continue the default agent's session.
        self.key = ConversationKey("console", "console", f"{self.user}/{agent}")
        self._stdin = stdin
        self._stdout = stdout
        self._waiting: dict[str, asyncio.Future[Reply]] = {}
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: threading.Thread | None = None

    async def start(self) -> None:
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
        self.state = AdapterState.CONNECTED

    async def stop(self) -> None:
        self.state = AdapterState.STOPPED
        for future in self._waiting.values():
            future.cancel()

    async def send_reply(self, message: InboxMessage, reply: Reply) -> None:
        self._print(f"{self.agent}> {reply.text}")
        future = self._waiting.pop(message.event_id, None)
        if future is not None and not future.done():
            future.set_result(reply)

    def _print(self, text: str) -> None:
        self._stdout.write(text + "\n")
        self._stdout.flush()

    def _prompt(self) -> None:
        if self._stdin.isatty():
            self._stdout.write("you> ")
            self._stdout.flush()

    async def converse(self) -> None:
        """Read lines until /quit or end of input, answering each in turn."""
        conversation = await self.dispatcher.conversation(self.key)
        if conversation is not None and conversation.turns:
            self._print(
                f"(continuing your conversation with {conversation.agent!r}: "
                f"{conversation.turns} turn(s); /reset starts over)"
            )
        self._print(HELP)
        while True:
            self._prompt()
            line = await self._lines.get()
            if line is None:
                self._print("")
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
                await self.dispatcher.reset(self.key, self.agent)
                self._print("(started a new conversation)")
            elif command == "/status":
                await self._status()
            else:
                await self._ask(text)

    async def _ask(self, text: str) -> None:
        event_id = uuid.uuid4().hex
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = future
        await self.dispatcher.submit(
            IncomingMessage(
                key=self.key, event_id=event_id, sender=self.user, text=text, agent=self.agent
            )
        )
        await future

    async def _status(self) -> None:
        conversation = await self.dispatcher.conversation(self.key)
        if conversation is None:
            self._print("(no conversation yet)")
            return
        self._print(
            f"(agent {conversation.agent!r}, session {conversation.session_id or 'none yet'}, "
            f"{conversation.turns} turn(s), {conversation.input_tokens} input and "
            f"{conversation.output_tokens} output tokens)"
        )


def _login_name() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "console"
