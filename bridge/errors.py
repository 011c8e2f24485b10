"""The one exception tree of agent-bridge.

Every error the bridge raises on purpose is a `BridgeError`; a dependency's
exceptions (httpx, SQLAlchemy, the platform SDKs) are translated where they
enter, with ``raise ... from exc``, so none travels through the core.

    BridgeError
    ├── ConfigError            the config file is wrong; carries one line per problem
    ├── StorageError           the database failed or is unreachable
    │   └── MissingDriverError a database driver is not installed (names the extra)
    ├── AdapterError           a chat platform refused or failed (bad token, network)
    │   ├── CredentialsRejected the platform refused a token: no retry can help
    │   ├── PollingConflict    another process polls the Telegram bot (409 at start)
    │   └── ReplyUndeliverable a reply can never be posted (bot blocked, chat gone)
    ├── AccessError            an access change that cannot be made (`bridge.access`)
    │   └── CodeRefused        a pairing code unknown, used, expired or of another platform
    ├── AttachmentError        a file could not be fetched or read; carries `user_message`
    └── AgentError             the agent could not answer; carries `user_message`
        ├── AgentInsufficientBalance   402
        ├── AgentRateLimited           429, carries `retry_after`
        ├── AgentUnauthorized          401 / 403
        ├── AgentNotFound              404 (the agent, not the session)
        ├── AgentSessionExpired        the session or thread is unknown or expired
        ├── AgentUnavailable           5xx, connection refused, DNS failure
        ├── AgentTimeout               read timeout (the turn may have run: no blind retry)
        └── AgentBadReply              unreadable body or no reply text

Agent errors carry two texts, as mautrix's ``DatabaseException.explanation``
carries an operator hint: ``str(exc)`` is for the log, ``exc.user_message`` is
what the person in the chat sees. The user's text never contains exception
text, URLs, keys or tracebacks.

Example::

    try:
        reply = await backend.chat("hello", session_id=None)
    except AgentError as exc:
        log.warning("agent failed: %s", exc)        # operator detail
        await adapter.send(exc.user_message)         # friendly text
"""

from __future__ import annotations

from collections.abc import Sequence


class BridgeError(Exception):
    """Root of every error agent-bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is invalid. ``problems`` holds one line per problem,
    each naming the key (``agents.default.backend: expected one of ...``)."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class StorageError(BridgeError):
    """The database failed, or could not be reached."""


class MissingDriverError(StorageError):
    """A database driver is missing; the message names the extra to install."""


class AdapterError(BridgeError):
    """A chat platform failed or refused (bad token, network, API error)."""

    def __init__(self, platform: str, reason: str) -> None:
        self.platform = platform
        self.reason = reason
        super().__init__(f"{platform}: {reason}")


class CredentialsRejected(AdapterError):
    """The platform refused a token (Telegram's 401, Slack's ``invalid_auth``...);
    the reason names the config key to check, never the token. `agent-bridge run`
    exits on it (code 3) instead of retrying: any other `AdapterError` at start
    may pass (network, 5xx) and is retried."""


class PollingConflict(AdapterError):
    """Another process polls the same Telegram bot token without sharing our
    database (Telegram's 409 on the first poll): `agent-bridge run` exits on it
    (code 3) with what to do, instead of flapping between the two pollers."""


class ReplyUndeliverable(AdapterError):
    """The platform refused the reply for good (bot blocked, chat or topic
    gone): the dispatcher stops trying and marks the message failed. Any other
    `AdapterError` from ``send_reply`` is retried with backoff."""


class AttachmentError(BridgeError):
    """A file, voice note or image of a message could not be fetched, read or
    transcribed (too big, unreadable, the platform refused the download...).

    ``kind`` is a short stable name (logs, tests); ``user_message`` says why, for the
    chat. ``str(exc)`` is for the log: names and sizes, never the content. The rest
    of the message is still answered.
    """

    def __init__(self, kind: str, detail: str, *, user_message: str) -> None:
        self.kind = kind
        self.detail = detail
        self.user_message = user_message
        super().__init__(detail)


class AgentError(BridgeError):
    """The agent could not answer.

    ``kind`` is a stable short name used in metrics, logs and the store;
    ``user_message`` is the friendly text the user sees.
    """

    kind = "error"
    #: Whether the base class may retry the call after this error.
    retryable = False

    def __init__(self, detail: str, *, user_message: str, agent: str = "") -> None:
        self.detail = detail
        self.user_message = user_message
        self.agent = agent
        super().__init__(f"agent {agent!r}: {detail}" if agent else detail)


class AgentInsufficientBalance(AgentError):
    kind = "insufficient_balance"


class AgentRateLimited(AgentError):
    kind = "rate_limited"
    retryable = True

    def __init__(
        self,
        detail: str,
        *,
        user_message: str,
        agent: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail, user_message=user_message, agent=agent)
        #: Seconds until the agent accepts calls again, when the API said so.
        self.retry_after = retry_after


class AgentUnauthorized(AgentError):
    kind = "unauthorized"


class AgentNotFound(AgentError):
    kind = "not_found"


class AgentSessionExpired(AgentError):
    kind = "session_expired"


class AgentUnavailable(AgentError):
    kind = "unavailable"
    retryable = True


class AgentTimeout(AgentError):
    kind = "timeout"


class AgentBadReply(AgentError):
    kind = "bad_reply"
