"""What one Telegram update means to the bridge: Telegram's model -> the core's.

`TelegramEvents.route()` takes a parsed `Update` and returns one action, without
any I/O: `Submit` (an `IncomingMessage` for the dispatcher), `Answer` (a fixed
text: /start, /help, a usage hint), `Reset` or `Status` (a command on the
conversation), `UsageQuery` (/usage: the sender's budget), `Refuse` (access control
or content we cannot read), `Stranger` (someone the config's allowlist refuses: the
store's is asked next, see `adapters.telegram_access`), `Approve` (an admin's
``/approve CODE``), or None (nothing to do). `adapters.telegram` carries the action out.

The rules, as Telegram delivers messages:

- Private chats: every text message. Groups: commands, mentions of the bot,
  replies to the bot, or everything with ``group_trigger = "all"``.
- ``/cmd@other_bot`` belongs to another bot; an unknown ``/word`` is plain text.
- Edits, channel posts and messages of bots never reach the agent.
- Entity offsets count UTF-16 code units, not Python characters.
- A message that replies to someone else's message (a mention or /ask under a
  colleague's question) carries that message, ``sender: text`` (only the part the
  user quoted, if they quoted), as ``meta["context"]``: the agent receives it before
  the question (`bridge.model.agent_input`). A reply to the bot carries none: the
  agent's session has the bot's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from telegram import BotCommand, Message, MessageEntity, Update
from telegram.constants import ChatType, MessageEntityType

from adapters.telegram_files import attachments
from bridge.attachments import ATTACHMENTS
from bridge.config import TelegramConfig
from bridge.model import Conversation, ConversationKey, IncomingMessage, clean_text

log = logging.getLogger("adapters.telegram")

PLATFORM = "telegram"

COMMANDS = (
    BotCommand("start", "What this bot does"),
    BotCommand("help", "How to talk to the agent"),
    BotCommand("new", "Start a new conversation"),
    BotCommand("reset", "Start a new conversation"),
    BotCommand("status", "Agent, turns and tokens of this conversation"),
    BotCommand("ask", "Ask the agent (in groups): /ask your question"),
    BotCommand("usage", "What you have used today and this month, and what is left"),
)
#: Not in the menu (`COMMANDS`): only the admins (``telegram.admins``) may use them.
ADMIN_COMMANDS = frozenset({"approve"})
_OURS = frozenset(c.command for c in COMMANDS) | ADMIN_COMMANDS

HELLO_PRIVATE = (
    "Hi! I pass your messages to an AI agent and bring back its answers. Just write to me.\n\n"
    "/new (or /reset) starts a new conversation, /status shows what this one has used, "
    "/usage what you have used today and what is left, /help shows this text."
)
HELLO_GROUP = (
    "Hi! In this group, mention me (@{username}), reply to one of my messages, or write "
    "/ask followed by your question, and the AI agent answers. Each chat (and each forum "
    "topic) is its own conversation.\n\n"
    "/new (or /reset) starts a new conversation, /status shows what this one has used, "
    "/usage what you have used today and what is left."
)
TEXT_ONLY = (
    "Sorry, I can only read text, files, photos and voice messages. Please write your "
    "question (a sticker or video with a caption works too: I read the caption)."
)
REFUSED = (
    "Sorry, this bot is private. If you should be able to use it, ask its administrator to "
    "add your Telegram user id ({user_id}) to the bridge's allowed users."
)
REFUSED_CODE = (
    "Sorry, this bot is private. If you should be able to use it, send its administrator "
    "this code: {code}\nIt is valid for an hour. (Your Telegram user id is {user_id}.)"
)
NOT_ADMIN = "Sorry, only the bot's administrators can approve people."
APPROVE_USAGE = "Write the code after the command, e.g. /approve ABCD2345"

RESET_DONE = "Started a new conversation: the agent won't remember what was said before."
ASK_USAGE = "Write your question after the command, e.g. /ask What can you do?"
EMPTY_MENTION = "Yes? Write your question along with the mention."
STATUS = "Agent: {agent}\nTurns: {turns}\nTokens: {input_tokens} in, {output_tokens} out"
STATUS_EMPTY = "Agent: {agent}\nNo messages in this conversation yet."


@dataclass(frozen=True, slots=True)
class Submit:
    """Hand this message to the agent (`Dispatcher.submit`)."""

    incoming: IncomingMessage


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer ``message`` with a fixed text."""

    message: Message
    text: str


@dataclass(frozen=True, slots=True)
class Refuse:
    """Count a refused message; answer it with ``text`` unless None."""

    message: Message
    text: str | None


@dataclass(frozen=True, slots=True)
class Reset:
    message: Message
    key: ConversationKey
    agent: str


@dataclass(frozen=True, slots=True)
class Status:
    message: Message
    key: ConversationKey
    agent: str


@dataclass(frozen=True, slots=True)
class Stranger:
    """Someone the config's allowlist refuses: the store's allowlist decides."""

    message: Message
    private: bool


@dataclass(frozen=True, slots=True)
class Approve:
    """An admin's ``/approve CODE``."""

    message: Message
    code: str


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """/usage: the sender's use and what is left (`Dispatcher.usage_text`)."""

    message: Message
    user: str
    chat: str
    agent: str


Action = Submit | Answer | Refuse | Reset | Status | UsageQuery | Stranger | Approve | None


def status_text(agent: str, conversation: Conversation | None) -> str:
    if conversation is None:
        return STATUS_EMPTY.format(agent=agent)
    return STATUS.format(
        agent=conversation.agent,
        turns=conversation.turns,
        input_tokens=conversation.input_tokens,
        output_tokens=conversation.output_tokens,
    )


class TelegramEvents:
    """The bot's rules for updates. ``bot_id`` and ``username`` are set once getMe
    has named the bot."""

    def __init__(self, config: TelegramConfig) -> None:
        self.bot_id = 0
        self.username = ""
        #: User -> the code they were told in private that the bot is private with;
        #: later messages get silence until they have a new code.
        self._refused_users: dict[int, str | None] = {}
        self.reload(config)

    def reload(self, config: TelegramConfig) -> None:
        """Take a new config (the allowlists re-read on SIGHUP) for the next update."""
        self.config = config
        users = config.allowed_users
        self._allow_anyone = "*" in users
        self._allowed_ids = {u for u in users if isinstance(u, int)}
        self._allowed_names = {
            u[1:].lower() for u in users if isinstance(u, str) and u.startswith("@")
        }
        self._allowed_chats = set(config.allowed_chats)
        self._admins = frozenset(config.admins)

    def route(self, update: Update) -> Action:
        if update.my_chat_member is not None:
            member = update.my_chat_member
            chat = member.chat
            log.info(
                "bot status in %s chat %d (%s) changed from %s to %s by user %d (@%s)",
                chat.type,
                chat.id,
                chat.title or chat.username or "",
                member.old_chat_member.status,
                member.new_chat_member.status,
                member.from_user.id,
                member.from_user.username or "",
            )
            return None
        if update.edited_message is not None or update.edited_channel_post is not None:
            log.debug("edited message in update %d ignored", update.update_id)
            return None
        if update.message is None:
            log.debug("update %d ignored (no message)", update.update_id)
            return None
        return self.on_message(update.message)

    def on_message(self, message: Message, *, approved: bool = False) -> Action:
        """The action for one message; ``approved``: the store's allowlist has its
        sender (the config's does not)."""
        chat = message.chat
        user = message.from_user
        if chat.type == ChatType.CHANNEL or user is None or user.is_bot:
            return None
        if message.is_automatic_forward:  # a channel post mirrored into its discussion group
            return None
        private = chat.type == ChatType.PRIVATE
        found, args = self.command(message)
        if found is False:
            return None  # /cmd@another_bot
        # an unknown /word is plain text
        command = found if isinstance(found, str) and found in _OURS else None
        text = message.text if message.text is not None else message.caption
        mentioned = self.mentions_bot(message)
        triggered = (
            private
            or command is not None
            or mentioned
            or self.replies_to_bot(message)
            or self.config.group_trigger == "all"
        )
        if not triggered:
            return None
        if command == "approve":
            if user.id in self._admins:
                return Approve(message, args) if args else Answer(message, APPROVE_USAGE)
            log.info(
                "refused /approve from Telegram user %d (@%s): not in telegram.admins",
                user.id,
                user.username or "-",
            )
            if approved or self.allowed(message):
                return Refuse(message, NOT_ADMIN)
        if not approved and not self.allowed(message):
            return Stranger(message, private)
        key = self.key(message)
        agent = self.config.chat_agents.get(str(chat.id), self.config.agent)
        if command == "ask":
            text = args
        elif command in ("start", "help"):
            hello = HELLO_PRIVATE if private else HELLO_GROUP.format(username=self.username)
            return Answer(message, hello)
        elif command in ("reset", "new"):
            return Reset(message, key, agent)
        elif command == "status":
            return Status(message, key, agent)
        elif command == "usage":
            return UsageQuery(message, str(user.id), str(chat.id), agent)
        # A file, photo or voice note goes to the agent with its caption, if any
        # (`bridge.files` fetches and reads it in the message's turn).
        files = attachments(message)
        if text is None:
            if files:
                text = ""
            elif message.effective_attachment is not None:
                return Refuse(message, TEXT_ONLY)
            else:
                # a service message (someone joined, a pinned message...): nothing to do
                return None
        if mentioned and command is None:
            text = self.strip_mentions(message)
        text = text.strip()
        if not text and not files:
            return Answer(message, ASK_USAGE if command == "ask" else EMPTY_MENTION)
        thread = message.message_thread_id if message.is_topic_message else None
        meta: dict[str, object] = {
            "chat_id": chat.id,
            "thread_id": thread,
            "chat_type": clean_text(str(chat.type)),
            "user_id": user.id,
            "username": None if user.username is None else clean_text(user.username),
        }
        context = self.reply_context(message)
        if context is not None:
            meta["context"] = context
        if files:
            meta[ATTACHMENTS] = [f.to_meta() for f in files]
        return Submit(
            IncomingMessage(
                key=key,
                event_id=f"{self.bot_id}:{chat.id}:{message.message_id}",
                sender=str(user.id),
                # U+0000 and lone surrogates reach us from Telegram's JSON as they are;
                # no database stores them.
                text=clean_text(text),
                agent=agent,
                reply_to=str(message.message_id),
                meta=meta,
            )
        )

    def key(self, message: Message) -> ConversationKey:
        # message_thread_id also appears on replies in non-forum groups: only a
        # topic message belongs to a forum topic (the General topic has none).
        thread = str(message.message_thread_id) if message.is_topic_message else None
        return ConversationKey(PLATFORM, str(self.bot_id), str(message.chat.id), thread)

    def command(self, message: Message) -> tuple[str | bool | None, str]:
        """(command, arguments) for ``/cmd[@bot] args``; command False when the command
        names another bot; (None, "") when there is no command."""
        text = message.text
        if not text or not message.entities:
            return None, ""
        first = message.entities[0]
        if first.type != MessageEntityType.BOT_COMMAND or first.offset != 0:
            return None, ""
        word = utf16_slice(text, 0, first.length)[1:]
        name, _, target = word.partition("@")
        if target and target.lower() != self.username.lower():
            return False, ""
        rest = utf16_slice(text, first.length, None)
        return name.lower(), rest.strip()

    def _mention_entities(self, message: Message) -> Iterable[MessageEntity]:
        entities = message.entities if message.text is not None else message.caption_entities
        source = message.text if message.text is not None else message.caption
        if not source:
            return
        for entity in entities:
            if entity.type == MessageEntityType.MENTION:
                mention = utf16_slice(source, entity.offset, entity.offset + entity.length)
                if mention[1:].lower() == self.username.lower():
                    yield entity
            elif (
                entity.type == MessageEntityType.TEXT_MENTION
                and entity.user is not None
                and entity.user.id == self.bot_id
            ):
                yield entity

    def mentions_bot(self, message: Message) -> bool:
        return any(True for _ in self._mention_entities(message))

    def strip_mentions(self, message: Message) -> str:
        source = (message.text if message.text is not None else message.caption) or ""
        data = source.encode("utf-16-le", "surrogatepass")
        for entity in sorted(self._mention_entities(message), key=lambda e: -e.offset):
            if entity.type == MessageEntityType.TEXT_MENTION:
                continue  # a name, part of the sentence
            data = data[: entity.offset * 2] + data[(entity.offset + entity.length) * 2 :]
        text = data.decode("utf-16-le", "surrogatepass")
        return " ".join(part for part in text.split(" ") if part) if "\n" not in text else text

    def replies_to_bot(self, message: Message) -> bool:
        original = message.reply_to_message
        if original is None or original.from_user is None or original.from_user.id != self.bot_id:
            return False
        # In a forum topic every message "replies" to the topic's creation message,
        # which is the bot's when the bot created the topic: that is not a reply.
        if original.forum_topic_created is not None:
            return False
        return not (message.is_topic_message and original.message_id == message.message_thread_id)

    def reply_context(self, message: Message) -> str | None:
        """``sender: text`` of the message ``message`` replies to, unless that is the
        bot's own (or a forum topic's creation message, which every topic message
        "replies" to); the quoted part only when the user quoted one."""
        original = message.reply_to_message
        if original is None or original.forum_topic_created is not None:
            return None
        if original.from_user is not None and original.from_user.id == self.bot_id:
            return None
        if message.is_topic_message and original.message_id == message.message_thread_id:
            return None
        quote = message.quote.text if message.quote is not None else None
        text = quote or original.text or original.caption
        if not text or not text.strip():
            return None
        if original.sender_chat is not None:
            sender = original.sender_chat.title or original.sender_chat.username or "a channel"
        elif original.from_user is not None:
            sender = original.from_user.full_name
        else:
            sender = "someone"
        return clean_text(f"{sender}: {text.strip()}")

    def allowed(self, message: Message) -> bool:
        user = message.from_user
        assert user is not None
        if message.chat.type != ChatType.PRIVATE and message.chat.id in self._allowed_chats:
            return True
        if self._allow_anyone or user.id in self._allowed_ids:
            return True
        return user.username is not None and user.username.lower() in self._allowed_names

    def refuse(self, message: Message, private: bool, code: str | None = None) -> Refuse:
        """The refusal of someone no allowlist has; in private it names ``code``,
        their pairing code, once per code."""
        user = message.from_user
        assert user is not None
        log.info(
            "refused Telegram user %d (@%s) in %s chat %d: not in telegram.allowed_users%s",
            user.id,
            user.username or "-",
            message.chat.type,
            message.chat.id,
            "" if private else " and the chat is not in telegram.allowed_chats",
        )
        if private and self._refused_users.get(user.id, "") != code:
            self._refused_users[user.id] = code
            if code is None:
                return Refuse(message, REFUSED.format(user_id=user.id))
            return Refuse(message, REFUSED_CODE.format(code=code, user_id=user.id))
        return Refuse(message, None)


def utf16_slice(text: str, start: int, end: int | None) -> str:
    """``text[start:end]`` in UTF-16 code units, as Telegram's entity offsets count."""
    data = text.encode("utf-16-le", "surrogatepass")
    return data[start * 2 : None if end is None else end * 2].decode("utf-16-le", "surrogatepass")
