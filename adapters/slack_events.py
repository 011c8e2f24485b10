"""Slack events -> the bridge's model: pure functions, no I/O.

`read_event` turns one Events API ``message`` / ``app_mention`` event into a decision:
`Skip` it, `Refuse` the user, post a `Note` (files, an empty mention), `Reset` the
conversation, or `Accept` an `IncomingMessage`. The transport (`adapters.slack`) acts
on the decision. Every field of an event is checked for its type here, since one event
with junk in it (a number for ``channel``, a list for ``subtype``) must be skipped
without disturbing the events that follow it.

Conversations: ``ConversationKey("slack", team_id, channel_id, thread)``, where
``thread`` is the thread root ts in channels (a top-level mention starts a thread under
itself) and in DM threads, and ``None`` for top-level DM messages (one conversation per
DM, answered top-level).

Exactly one answer per user message: the inbox event id is ``team:channel:ts``, so the
same message delivered as ``app_mention`` and as ``message``, or redelivered minutes
later, is accepted once by the store.
"""

from __future__ import annotations

import functools
import html
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from adapters.slack_files import attachments
from bridge.attachments import ATTACHMENTS
from bridge.config import SlackConfig
from bridge.model import ConversationKey, IncomingMessage

PLATFORM = "slack"
#: Message subtypes that a person wrote; every other subtype (edits, deletions, joins,
#: bot posts...) is not answered.
USER_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
RESET_WORDS = frozenset({"reset", "/reset", "!reset"})

TEXT_REFUSED = "Sorry, you are not allowed to use me here. An administrator can give you access."
#: The refusal of someone only the user allowlist refuses: a pairing code can let them in.
TEXT_REFUSED_CODE = (
    "Sorry, you are not allowed to use me here. To ask for access, send an administrator "
    "this code: `{code}` (valid for an hour)."
)
#: `refusal`'s reason when only ``slack.allowed_users`` refuses: the store's
#: allowlist (`bridge.access`) may let the user in.
USER_NOT_ALLOWED = "user not in slack.allowed_users"
TEXT_FILES = "I couldn't read the files of that message. Please write your question as text."
TEXT_EMPTY = "Hi! Ask me something after the mention, e.g. <@{bot}> what can you do?"
TEXT_RESET = "OK, I started a new conversation: the agent won't remember what was said before."
TEXT_STORAGE = "Sorry, something went wrong on my side. Please try again in a minute."
#: A Slack message timestamp, e.g. ``1700000000.000100``: it names a message, so
#: anything else in ``ts`` or ``thread_ts`` is junk.
_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")


@dataclass(frozen=True, slots=True)
class SlackIdentity:
    """Who the bot is, from ``auth.test``."""

    team_id: str
    team: str
    bot_user_id: str
    bot_id: str | None
    user: str


class _Recent:
    """A bounded set of recently seen keys (Slack event ids, message ids): a fast first
    filter for redeliveries. The store's inbox is the real dedupe."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._items: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def add(self, key: str) -> bool:
        """Remember ``key``; False if it was already there."""
        if key in self._items:
            self._items.move_to_end(key)
            return False
        self._items[key] = None
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return True


_LINK = re.compile(r"<([^<>|]+)(?:\|([^<>]*))?>")


def slack_to_text(text: str) -> str:
    """Slack's message markup -> plain text for the agent.

    ``<https://x|label>`` -> ``label (https://x)``, ``<#C1|general>`` -> ``#general``,
    ``<@U1>`` -> ``@U1``, ``<!here>`` -> ``@here``; then ``&amp;``/``&lt;``/``&gt;``
    are unescaped (Slack escapes exactly these three)."""

    def sub(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        if target.startswith(("@", "#")):
            return f"{target[0]}{label}" if label else target
        if target.startswith("!"):
            name = target[1:].split("^", 1)[0]
            return label or f"@{name}"
        if label and label != target:
            return f"{label} ({target})"
        return target

    return html.unescape(_LINK.sub(sub, text)) if "<" in text or "&" in text else text


@functools.lru_cache(maxsize=8)
def mention_pattern(bot_user_id: str) -> re.Pattern[str]:
    """``<@UBOT>`` or ``<@UBOT|name>``: the bot's mention in a message's text."""
    return re.compile(rf"<@{re.escape(bot_user_id)}(?:\|[^>]*)?>")


def refusal(
    config: SlackConfig,
    identity: SlackIdentity,
    *,
    team: str,
    channel: str,
    user: str,
    is_dm: bool,
    approved: bool = False,
) -> str | None:
    """Why this user may not talk to the agent here, or None if they may.
    ``approved``: the store's allowlist has the user (it stands in for
    ``allowed_users``, not for the channel or team rules)."""
    if (
        team != identity.team_id
        and "*" not in config.allowed_teams
        and team not in config.allowed_teams
    ):
        return "user from another team (Slack Connect) not in slack.allowed_teams"
    channels = config.allowed_channels
    if not ("*" in channels or channel in channels or (is_dm and "im" in channels)):
        return "channel not in slack.allowed_channels"
    if not approved and "*" not in config.allowed_users and user not in config.allowed_users:
        return USER_NOT_ALLOWED
    return None


# --- decisions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    """Not for the bridge (a bot's post, an edit, junk): acknowledged and dropped."""

    why: str


@dataclass(frozen=True, slots=True)
class Answer:
    """A person's message that gets an answer of some kind."""

    key: ConversationKey
    #: ``team:channel:ts``: the inbox dedupe key, and the key of the notes already sent.
    message_id: str
    #: A thread message without a mention: answered only in a thread the bot is part
    #: of, which the transport checks in the store (a conversation exists for ``key``).
    followup: bool


@dataclass(frozen=True, slots=True)
class Refuse(Answer):
    why: str
    user: str
    channel: str
    team: str


@dataclass(frozen=True, slots=True)
class Note(Answer):
    text: str


@dataclass(frozen=True, slots=True)
class Reset(Answer):
    agent: str
    user: str


@dataclass(frozen=True, slots=True)
class Accept(Answer):
    message: IncomingMessage


Decision = Skip | Refuse | Note | Reset | Accept


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def read_event(
    event: object,
    *,
    team: str,
    identity: SlackIdentity,
    config: SlackConfig,
    approved: bool = False,
) -> Decision:
    """Decide what to do with a ``message`` or ``app_mention`` event from ``team``
    (the event's ``team_id``); ``approved``: the store's allowlist has the sender.
    Never raises, whatever the event holds."""
    if not isinstance(event, Mapping):
        return Skip("the event is not an object")
    kind = event.get("type")
    subtype = event.get("subtype")
    channel, ts, user = _str(event.get("channel")), _str(event.get("ts")), _str(event.get("user"))
    if channel is None or ts is None or not _TS.fullmatch(ts):
        return Skip("no channel or ts")
    if not (subtype is None or isinstance(subtype, str)) or subtype not in USER_SUBTYPES:
        return Skip(f"message subtype {subtype!r}")
    if event.get("bot_id") or user is None or user == identity.bot_user_id:
        return Skip("a bot's post")  # ours included: never answered, or bots loop
    raw = event.get("text")
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        return Skip("text is not a string")
    is_dm = event.get("channel_type") == "im" or channel.startswith("D")
    thread_ts = _str(event.get("thread_ts"))
    thread_ts = thread_ts if thread_ts is not None and _TS.fullmatch(thread_ts) else None
    mention = mention_pattern(identity.bot_user_id)
    followup = False

    if is_dm:
        key = ConversationKey(PLATFORM, team, channel, thread_ts)
    elif kind == "app_mention":
        key = ConversationKey(PLATFORM, team, channel, thread_ts or ts)
    else:
        # A channel message. Slack delivers a mention twice (as app_mention and as
        # message): the app_mention answers it.
        if mention.search(raw) is not None:
            return Skip("a mention, answered as app_mention")
        if thread_ts is None or not config.thread_followups:
            return Skip("a channel message outside a thread")
        key = ConversationKey(PLATFORM, team, channel, thread_ts)
        followup = True
    message_id = f"{team}:{channel}:{ts}"

    user_team = _str(event.get("user_team")) or _str(event.get("source_team")) or team
    why = refusal(
        config, identity, team=user_team, channel=channel, user=user, is_dm=is_dm, approved=approved
    )
    if why is not None:
        return Refuse(key, message_id, followup, why, user, channel, user_team)

    text = slack_to_text(mention.sub("", raw)).strip()
    agent = config.channel_agents.get(channel, config.agent)
    if text.lower() in RESET_WORDS:
        return Reset(key, message_id, followup, agent, user)
    # Files go to the agent with the text, if any (`bridge.files` reads them in the turn).
    files = attachments(event)
    if not text and not files:
        has_files = subtype == "file_share" or bool(event.get("files"))
        note = TEXT_FILES if has_files else TEXT_EMPTY.format(bot=identity.bot_user_id)
        return Note(key, message_id, followup, note)
    meta: dict[str, object] = {"channel": channel, "ts": ts, "thread_ts": thread_ts, "dm": is_dm}
    if files:
        meta[ATTACHMENTS] = [f.to_meta() for f in files]
    message = IncomingMessage(
        key=key,
        event_id=message_id,
        sender=user,
        text=text,
        agent=agent,
        reply_to=ts,
        meta=meta,
    )
    return Accept(key, message_id, followup, message)


def event_team(body: object, default: str) -> str:
    """The team an Events API body comes from (its ``team_id``), else ``default``."""
    team = body.get("team_id") if isinstance(body, Mapping) else None
    return team if isinstance(team, str) and team else default
