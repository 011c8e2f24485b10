"""The sections of the config file and the whole `Config`."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
)

from bridge.config.agents import AgentConfig
from bridge.config.alerts import AlertsConfig
from bridge.config.budgets import BudgetsConfig
from bridge.config.fields import (
    DEFAULT_STORAGE_URL,
    TELEGRAM_API_URL,
    HttpUrl,
    Section,
    SlackAdmin,
    SlackChannel,
    SlackTeam,
    SlackUser,
    TelegramAdmin,
    TelegramUser,
    parse_listen,
    telegram_file_url,
)


class StorageConfig(Section):
    #: SQLAlchemy URL; a relative SQLite path is resolved against the config
    #: file's folder. Hidden from repr: a PostgreSQL URL may hold a password.
    url: str = Field(DEFAULT_STORAGE_URL, repr=False)
    #: Days after which the text of finished messages is erased.
    retention_days: float = Field(7, gt=0)
    #: Seconds without a heartbeat after which an instance counts as dead and
    #: its conversations (and its Telegram polling) are taken over by another.
    #: Shorter: faster takeover after a crash; longer: rides out longer
    #: database outages without a second instance stepping in.
    lease_timeout: float = Field(30, ge=1)
    #: Seconds between looks for claimable work when no notification came
    #: (PostgreSQL LISTEN/NOTIFY wakes instances at once; this is the fallback).
    poll_interval: float = Field(2, gt=0)

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for logs and `check`."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.url).render_as_string(hide_password=True)
        except Exception:
            return "<unparsable url>"


class MessagesConfig(Section):
    """What users see when the agent cannot answer. Placeholders in braces."""

    insufficient_balance: str = (
        "Sorry, I can't answer right now: the agent's account is out of credit. "
        "An administrator needs to top it up."
    )
    rate_limited: str = (
        "The agent is busy right now. Please try again in about {retry_after} seconds."
    )
    unauthorized: str = (
        "Sorry, I can't reach the agent: the bridge is not authorized to use it. "
        "An administrator needs to check its API key."
    )
    not_found: str = (
        "Sorry, I can't reach the agent: it was not found. "
        "An administrator needs to check the bridge's configuration."
    )
    unavailable: str = "The agent is unavailable right now. Please try again in a few minutes."
    timeout: str = (
        "The agent took too long to answer. Please try again, perhaps with a shorter question."
    )
    bad_reply: str = "The agent sent a reply I could not read. Please try again."
    session_restarted: str = "_(The previous conversation had expired, so this one started over.)_"
    input_too_long: str = (
        "Your message is too long for the agent ({length} characters; the limit is "
        "{max_chars}). Please shorten it and send it again."
    )
    reply_truncated: str = "_(The answer was cut here: it was longer than {max_chars} characters.)_"
    internal_error: str = (
        "Something went wrong on my side while handling your message. "
        "An administrator can find the details in the bridge's logs."
    )

    @field_validator("*")
    @classmethod
    def _placeholders(cls, value: str, info: ValidationInfo) -> str:
        allowed = _MESSAGE_PLACEHOLDERS.get(info.field_name or "", frozenset())
        used = re.findall(r"\{([^{}]*)\}", value)
        if used and not allowed:
            raise ValueError("takes no placeholders (write {{ and }} for braces)")
        for name in used:
            if name not in allowed:
                names = ", ".join("{" + a + "}" for a in sorted(allowed))
                raise ValueError(f"unknown placeholder {{{name}}} (use {names})")
        return value

    def render(self, kind: str, **values: object) -> str:
        """The text for ``kind`` with its placeholders filled in."""
        template: str = getattr(self, kind, self.internal_error)
        try:
            return template.format(**values)
        except (KeyError, IndexError, ValueError):
            return template


#: The placeholders each message may use; anything else is a config error.
_MESSAGE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "rate_limited": frozenset({"retry_after"}),
    "input_too_long": frozenset({"length", "max_chars"}),
    "reply_truncated": frozenset({"max_chars"}),
}


class DispatcherConfig(Section):
    #: Agent calls in flight across all conversations.
    max_concurrency: int = Field(64, ge=1)
    #: Longer input gets a clear message instead of an agent call.
    max_input_chars: int = Field(16000, ge=1)
    #: A longer agent reply is cut there, with a note saying so.
    max_reply_chars: int = Field(40000, ge=100)
    #: Seconds, at most, between attempts to post a reply the platform refuses
    #: (the wait grows 1, 3, 10, 30 s... up to this), for as long as the bridge runs.
    delivery_retry_max: float = Field(300, ge=1)
    #: Seconds the agent may take before the user is shown that it works on the
    #: message (typing action, reaction): an answer that comes sooner needs none,
    #: and each indicator is one more platform request. 0: show it at once.
    working_after: float = Field(1.0, ge=0)


class TelegramConfig(Section):
    bot_token: SecretStr
    agent: str = "default"
    allowed_users: list[TelegramUser] = Field(min_length=1)
    allowed_chats: list[int] = Field(default_factory=list)
    group_trigger: Literal["mention", "all"] = "mention"
    chat_agents: dict[str, str] = Field(default_factory=dict)
    mode: Literal["polling", "webhook"] = "polling"
    webhook_url: HttpUrl | None = None
    webhook_secret: SecretStr | None = None
    listen: str = "127.0.0.1:8443"
    api_url: HttpUrl = TELEGRAM_API_URL
    #: Where files are downloaded from (``{file_url}<token>/<path>``); unset: derived
    #: from ``api_url`` (`telegram_file_url`), for a proxy that maps files elsewhere.
    file_url: HttpUrl | None = None
    #: Messages the bot sends per second across all chats: Telegram's bulk limit
    #: is 30 (paid broadcasts allow up to 1000). 0: no overall limit (a local Bot
    #: API server). The per-chat limits (1 a second, 20 a minute in groups) stay.
    max_messages_per_second: float = Field(30, ge=0)
    #: User ids who may approve people with ``/approve CODE`` (`bridge.access`).
    admins: list[TelegramAdmin] = Field(default_factory=list)

    @property
    def effective_file_url(self) -> str:
        """The file download base, always on the configured Bot API's host."""
        return self.file_url or telegram_file_url(self.api_url)

    @field_validator("webhook_secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram's rule for secret_token (https://core.telegram.org/bots/api#setwebhook).
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("use 1-256 characters A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return parse_listen(value)


class SuggestedPrompt(Section):
    """One prompt offered in a new assistant thread of Slack's AI-app view:
    ``title`` is the button's label, ``message`` what clicking it sends."""

    title: str = Field(min_length=1)
    message: str = Field(min_length=1)


class SlackConfig(Section):
    bot_token: SecretStr
    app_token: SecretStr | None = None
    agent: str = "default"
    allowed_channels: list[SlackChannel] = Field(default_factory=lambda: ["*"])
    allowed_users: list[SlackUser] = Field(default_factory=lambda: ["*"])
    allowed_teams: list[SlackTeam] = Field(default_factory=list)
    # Keys checked in _cross_check, so that a bad one does not hide the agent names.
    channel_agents: dict[str, str] = Field(default_factory=dict)
    thread_followups: bool = True
    mode: Literal["socket", "http"] = "socket"
    signing_secret: SecretStr | None = None
    listen: str = "127.0.0.1:3000"
    path: str = "/slack/events"
    api_url: HttpUrl = "https://slack.com/api/"
    #: Replies posted per second into one channel (Slack allows about 1, with
    #: short bursts, and answers 429 beyond). 0: no limit of our own.
    channel_messages_per_second: float = Field(1, ge=0)
    #: AI-app view: the prompts a new assistant thread offers (Slack shows at most 4).
    suggested_prompts: list[SuggestedPrompt] = Field(default_factory=list, max_length=4)
    #: AI-app view: the status shown under the thread while the agent works (after
    #: the app's name: "Agent is thinking…"), and the loading messages Slack rotates.
    status_text: str = Field("is thinking…", min_length=1)
    loading_messages: list[str] = Field(
        default_factory=lambda: ["Thinking…", "Asking the agent…", "Putting the answer together…"],
        max_length=10,
    )
    #: Characters of a thread's earlier messages given to the agent when the bot
    #: is first mentioned in it (the newest are kept). 0: none.
    context_chars: int = Field(8000, ge=0)
    #: Feedback buttons (thumbs up / down) under every agent answer.
    feedback: bool = True
    #: User ids who may approve people with ``/agent approve CODE`` (`bridge.access`).
    admins: list[SlackAdmin] = Field(default_factory=list)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        return parse_listen(value)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError('expected a path starting with "/"')
        return value


class DaemonConfig(Section):
    #: host:port for /healthz and /metrics; off when unset.
    http_listen: str | None = None
    #: Seconds to let agent calls in flight finish on SIGTERM.
    shutdown_grace: float = Field(30, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    #: /healthz turns 503 when the oldest unfinished message has waited longer.
    stuck_after: float = Field(300, gt=0)

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        return None if value is None else parse_listen(value)


class FilesConfig(Section):
    """Files, voice notes and images sent to the agent (`bridge.files`)."""

    #: Bytes a file may have; a larger one is refused before it is downloaded whole
    #: (Telegram's Bot API serves files up to 20 MB).
    max_bytes: int = Field(10 * 1024 * 1024, ge=1)
    #: Characters of one document's text sent to the agent; the rest is cut, with a
    #: note saying so (``dispatcher.max_input_chars`` applies to the typed text only).
    max_chars: int = Field(40000, ge=100)
    #: Files one user may send per minute; 0: no limit.
    max_per_minute: int = Field(10, ge=0)
    #: Bytes of files one user may send per day (UTC); 0: no limit.
    max_bytes_per_day: int = Field(100 * 1024 * 1024, ge=0)


class TranscriptionConfig(Section):
    """An OpenAI-compatible transcription endpoint for voice notes and audio
    (``POST {base_url}/audio/transcriptions``: OpenAI, Groq, a local Whisper server)."""

    base_url: HttpUrl
    api_key: SecretStr | None = None
    model: str = Field("whisper-1", min_length=1)
    timeout: float = Field(60, gt=0)
    #: What the user sees before the answer; {text} is the transcript. Empty: nothing.
    heard: str = "> 🎤 {text}"

    @field_validator("heard")
    @classmethod
    def _heard(cls, value: str) -> str:
        for name in re.findall(r"\{([^{}]*)\}", value):
            if name != "text":
                raise ValueError(f"unknown placeholder {{{name}}} (use {{text}})")
        return value


class Config(Section):
    storage: StorageConfig = StorageConfig()
    agents: dict[str, AgentConfig] = Field(min_length=1)
    messages: MessagesConfig = MessagesConfig()
    dispatcher: DispatcherConfig = DispatcherConfig()
    telegram: TelegramConfig | None = None
    slack: SlackConfig | None = None
    daemon: DaemonConfig = DaemonConfig()
    alerts: AlertsConfig | None = None
    budgets: BudgetsConfig = BudgetsConfig()
    files: FilesConfig = FilesConfig()
    transcription: TranscriptionConfig | None = None
