"""`HttpAgentBackend`: an agent reached over HTTP.

`HttpAgentBackend` does the shared work once, as python-telegram-bot's
``BaseRequest.post()`` does: the HTTP call on the shared client, timing,
logging, retries and the mapping of statuses and transport errors to the
`AgentError` tree. A backend fills in two steps: `build_request()` (what to
send) and `parse_reply()` (how to read a 2xx body).

What each failure becomes (the user's text comes from ``[messages]``):

======================================  ==================  ============================
agent answer                            retried?            error
======================================  ==================  ============================
402                                     no                  `AgentInsufficientBalance`
429                                     after the server's  `AgentRateLimited`
                                        delay, or backoff
401 / 403                               no (ERROR log)      `AgentUnauthorized`
404                                     no                  `AgentNotFound`
404 / 410 / 400 about the session       no                  `AgentSessionExpired`
5xx (not 504), connection refused, DNS  yes, 3 attempts     `AgentUnavailable`
read/write/pool timeout, 504            no (may have run)   `AgentTimeout`
unreadable body, no reply text          no (WARNING log)    `AgentBadReply`
======================================  ==================  ============================

All waits between attempts of one call add up to at most the agent's
``max_retry_wait``: when the next wait would go beyond it, the call gives up
at once.

Example::

    class MyBackend(HttpAgentBackend):
        def build_request(self, message, session_id):
            return AgentRequest(f"{self.base_url}/chat", {"q": message})

        def parse_reply(self, data, sent_session_id):
            return AgentReply(text=require_text(data.get("a")), session_id=sent_session_id)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import time
from abc import abstractmethod
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Any, Generic, NoReturn, TypeVar

import httpx
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from bridge.backends.base import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    CONNECT_TIMEOUT,
    RATE_LIMITED_ATTEMPTS,
    UNAVAILABLE_ATTEMPTS,
    AgentBackend,
    AgentRequest,
    ReplyFormatError,
    Sleep,
    StreamEnd,
    StreamItem,
    StreamUnsupported,
    body_excerpt,
    require_text,
    retry_delay,
)
from bridge.backends.sse import SseEvent, SseParser
from bridge.config import AgentBase, MessagesConfig
from bridge.errors import (
    AgentBadReply,
    AgentError,
    AgentInsufficientBalance,
    AgentNotFound,
    AgentRateLimited,
    AgentSessionExpired,
    AgentTimeout,
    AgentUnauthorized,
    AgentUnavailable,
)
from bridge.model import AgentReply, TurnContext, Usage
from bridge.stream import AgentEvent, StatusLine, TextDelta

log = logging.getLogger("bridge.backends")


class _Retry(Exception):
    """An attempt failed in a way that may be retried. ``delay`` is the wait the
    server asked for (None: use backoff)."""

    def __init__(self, error: AgentError, delay: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.delay = delay


# Words that say a 404/400/410 is about the session or thread, not the agent.
_SESSION_WORDS = re.compile(r"\b(session|thread)", re.IGNORECASE)
_EXPIRED_WORDS = re.compile(
    r"not found|expired|unknown|invalid|does not exist|doesn't exist|no such", re.IGNORECASE
)
_AGENT_WORDS = re.compile(r"\b(agent|project)", re.IGNORECASE)


#: The config of an agent reached over HTTP: each backend class takes its own.
C = TypeVar("C", bound=AgentBase)
#: What `HttpAgentBackend.call()` reads from a 2xx body.
R = TypeVar("R")


class HttpAgentBackend(AgentBackend, Generic[C]):
    """An agent reached over HTTP, on the shared client.

    Subclasses implement `build_request()`, `parse_reply()` and `probe_request()`,
    and may override `describe_probe()`, `auth_headers()` (default: a Bearer
    ``api_key`` when the config has one), `parse_body()` (default: JSON) and
    `classify_error()` (an API's own error codes, before the status table). A turn
    that takes another request first (creating a conversation) sends it through
    `call()`, under the same retries and error table.
    ``sleep`` is injectable so tests need not wait for real backoff.
    """

    #: The backend's name in logs and `probe()` text, e.g. "thinnest".
    kind: str = "http"

    def __init__(
        self,
        name: str,
        config: C,
        *,
        messages: MessagesConfig,
        client: httpx.AsyncClient,
        sleep: Sleep = asyncio.sleep,
        backoff_base: float = BACKOFF_BASE,
    ) -> None:
        self.name = name
        self.config = config
        api_key = getattr(config, "api_key", None)
        self._api_key: SecretStr | None = api_key if isinstance(api_key, SecretStr) else None
        self.timeout = config.timeout
        self.max_retry_wait = config.max_retry_wait
        self.messages = messages
        self._client = client
        self._sleep = sleep
        self._backoff_base = backoff_base
        # Set when the streaming endpoint turned out missing or unreadable: from then
        # on this agent answers through chat() (see `stream()`).
        self._stream_fallback = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"

    # --- the steps a backend fills in ---------------------------------------------------

    @abstractmethod
    def build_request(self, message: str, session_id: str | None) -> AgentRequest:
        """The chat request for one turn (the key is added by the base class)."""

    @abstractmethod
    def parse_reply(self, data: Any, sent_session_id: str | None) -> AgentReply:
        """Read a 2xx JSON body; raise `ReplyFormatError` when it holds no reply."""

    @abstractmethod
    def probe_request(self) -> AgentRequest:
        """A cheap authenticated GET that spends no turn."""

    def describe_probe(self, response: httpx.Response) -> str:
        """The text `probe()` returns for a 2xx answer."""
        return f"{self.kind} agent reachable, key accepted"

    def auth_headers(self) -> dict[str, str]:
        """The headers that carry the credentials of every request."""
        if self._api_key is None:
            return {}
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}

    def parse_body(self, response: httpx.Response) -> Any:
        """A 2xx body as data for `parse_reply()`; `ValueError` when unreadable."""
        return response.json()

    def classify_error(
        self, response: httpx.Response, sent_session_id: str | None
    ) -> AgentError | None:
        """The error a non-2xx answer means in this API's own terms (e.g. a 429 whose
        body says the account is out of credit), or None for the status table. An
        error returned here is never retried."""
        return None

    # --- streaming (the steps a streaming backend fills in) ------------------------------

    #: True when the backend speaks its API's streaming endpoint (`stream_request()`
    #: and `parse_event()` are implemented).
    can_stream: bool = False
    #: Whether a stream that ends without a `StreamEnd` event was cut (most APIs send
    #: a final event; a stream that simply ends is complete for the others).
    stream_needs_end: bool = True

    @property
    def streams(self) -> bool:
        return self.config.stream and self.can_stream and not self._stream_fallback

    def stream_request(self, message: str, session_id: str | None) -> AgentRequest:
        """The streaming request for one turn (the key is added by the base class)."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def parse_event(self, event: SseEvent, sent_session_id: str | None) -> Sequence[StreamItem]:
        """What one server-sent event means: deltas, status lines, or the `StreamEnd`
        (after which nothing more is read); ``[]`` for events of no interest (pings,
        metadata). Raise an `AgentError` for an error event, and `ValueError` (or
        `ReplyFormatError`) for data that cannot be read."""
        raise NotImplementedError(f"{type(self).__name__} does not stream")

    def finish_stream(
        self, text: str, end: StreamEnd | None, sent_session_id: str | None
    ) -> AgentReply:
        """The final reply of a stream: ``text`` is the deltas joined, ``end`` the final
        event (None when the stream ended without one). Raise `ReplyFormatError` when
        it holds no reply."""
        if end is None:
            if self.stream_needs_end:
                raise self._error(AgentUnavailable, "the stream ended before its final event")
            end = StreamEnd()
        final = end.text if end.text else text
        return AgentReply(
            text=require_text(final, "streamed text"),
            session_id=end.session_id or sent_session_id,
            usage=end.usage or Usage(),
        )

    # --- stream -------------------------------------------------------------------------

    async def stream(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AsyncGenerator[AgentEvent, None]:
        if not self.streams:
            async for event in super().stream(message, session_id, context=context):
                yield event
            return
        log.debug("agent %s: streaming %r (session %s)", self.name, message, session_id)
        request = self.stream_request(message, session_id)
        events = self.stream_call(request, sent_session_id=session_id)
        async for event in self.with_fallback(events, message, session_id, context):
            yield event

    async def with_fallback(
        self,
        events: AsyncGenerator[AgentEvent, None],
        message: str,
        session_id: str | None,
        context: TurnContext | None,
    ) -> AsyncGenerator[AgentEvent, None]:
        """``events``, or, when they end in `StreamUnsupported` (always before the first
        event), the turn answered by `chat()`; streaming is then off for this agent
        from now on (one WARNING)."""
        try:
            async with contextlib.aclosing(events):
                async for event in events:
                    yield event
            return
        except StreamUnsupported as exc:
            refused = exc
        try:
            reply = await self.chat(message, session_id, context=context)
        except AgentSessionExpired:
            # A bare 404 on a turn that named a session: the plain endpoint's error
            # table decides, and if the session was what was missing, the stream
            # endpoint may well exist.
            if not refused.ambiguous:
                self._fall_back(refused)
            raise
        except AgentError:
            self._fall_back(refused)
            raise
        self._fall_back(refused)
        yield TextDelta(reply.text)
        yield reply

    def _fall_back(self, refused: StreamUnsupported) -> None:
        if self._stream_fallback:
            return
        self._stream_fallback = True
        log.warning(
            "agent %s: %s; falling back to the plain endpoint for this agent from now on "
            "(answers come whole; said once)",
            self.name,
            refused,
        )

    async def stream_call(
        self,
        request: AgentRequest,
        *,
        sent_session_id: str | None,
        parse: Callable[[SseEvent], Sequence[StreamItem]] | None = None,
        finish: Callable[[str, StreamEnd | None], AgentReply] | None = None,
    ) -> AsyncGenerator[TextDelta | StatusLine | AgentReply, None]:
        """Send ``request`` and yield its event stream as events, ending with the reply.

        Opening the stream runs under the retry policy and error table of `call()`
        (a 404/405 or a body that is no event stream raises `StreamUnsupported`
        instead, before any event). Nothing is retried once the body is read: the
        agent may have run and billed the turn. Mid-stream, a read timeout is
        `AgentTimeout` and a broken connection `AgentUnavailable`. ``parse`` and
        ``finish`` default to `parse_event()` and `finish_stream()`."""
        parse_one = parse or (lambda event: self.parse_event(event, sent_session_id))
        finish_one = finish or (lambda text, end: self.finish_stream(text, end, sent_session_id))
        response = await self._open_stream(request, sent_session_id)
        try:
            content_type = response.headers.get("Content-Type", "")
            if "json" in content_type and "event-stream" not in content_type:
                raise StreamUnsupported(f"the streaming endpoint answered {content_type}")
            texts: list[str] = []
            readable = False
            end: StreamEnd | None = None
            parser = SseParser()
            try:
                chunks = response.aiter_text()
                while end is None:
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        found = parser.close()
                        eof = True
                    else:
                        found = parser.feed(chunk)
                        eof = False
                    for sse in found:
                        try:
                            items = parse_one(sse)
                        except (ReplyFormatError, ValueError, KeyError, TypeError) as exc:
                            if not readable:
                                raise StreamUnsupported(
                                    f"the streaming endpoint's answer is unreadable ({exc})"
                                ) from exc
                            log.debug("agent %s: skipped an unreadable event: %s", self.name, exc)
                            continue
                        readable = True
                        for item in items:
                            if isinstance(item, StreamEnd):
                                end = item
                                break
                            if isinstance(item, TextDelta):
                                if not item.text:
                                    continue
                                texts.append(item.text)
                            yield item
                        if end is not None:
                            break
                    if eof:
                        break
            except httpx.TimeoutException as exc:
                raise self._error(
                    AgentTimeout, f"the stream stalled for {self.timeout:g}s ({type(exc).__name__})"
                ) from exc
            except httpx.HTTPError as exc:
                raise self._error(
                    AgentUnavailable, f"the stream broke ({type(exc).__name__}: {exc})"
                ) from exc
            if not readable:
                raise StreamUnsupported("the streaming endpoint's answer holds no event")
            try:
                reply = finish_one("".join(texts), end)
            except ReplyFormatError as exc:
                log.warning("agent %s: unreadable stream: %s", self.name, exc)
                raise self._error(AgentBadReply, f"unreadable stream: {exc}") from exc
        finally:
            await response.aclose()
        log.debug("agent %s: streamed %r (session %s)", self.name, reply.text, reply.session_id)
        yield reply

    async def _open_stream(
        self, request: AgentRequest, sent_session_id: str | None
    ) -> httpx.Response:
        async for attempt in self._retrying():
            with attempt:
                number = attempt.retry_state.attempt_number
                response = await self._stream_attempt(request, sent_session_id, number)
        return response

    async def _stream_attempt(
        self, request: AgentRequest, sent_session_id: str | None, attempt: int
    ) -> httpx.Response:
        started = time.monotonic()
        try:
            response = await self._send(request, self.timeout, stream=True)
        except httpx.HTTPError as exc:
            self._log_attempt(attempt, type(exc).__name__, started)
            raise self._transport_error(exc) from exc
        self._log_attempt(attempt, f"stream {response.status_code}", started)
        if response.is_success:
            return response
        try:
            await response.aread()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from exc
        finally:
            await response.aclose()
        if response.status_code in (404, 405):
            raise self._stream_refused(response, sent_session_id)
        raise self._status_error(response, sent_session_id)

    def _stream_refused(self, response: httpx.Response, sent_session_id: str | None) -> Exception:
        """A 404/405 from the streaming endpoint: the API's own error, a session that
        is gone, or no streaming here (`StreamUnsupported`)."""
        status = response.status_code
        own = self.classify_error(response, sent_session_id)
        if own is not None:
            return own
        if status == 404 and sent_session_id is not None:
            # Only a body that names the session says so for sure; a bare 404 may be
            # the endpoint, and the plain endpoint's error table then decides.
            if _SESSION_WORDS.search(response.text) and self._session_gone(status, response):
                detail = f"HTTP {status}: {body_excerpt(response)}"
                return self._error(AgentSessionExpired, f"session {sent_session_id}: {detail}")
            return StreamUnsupported(
                f"the streaming endpoint answered HTTP {status}", ambiguous=True
            )
        return StreamUnsupported(f"the streaming endpoint answered HTTP {status}")

    # --- chat ---------------------------------------------------------------------------

    async def chat(
        self, message: str, session_id: str | None, *, context: TurnContext | None = None
    ) -> AgentReply:
        request = self.build_request(message, session_id)
        log.debug("agent %s: sending %r (session %s)", self.name, message, session_id)
        reply = await self.call(
            request, lambda data: self.parse_reply(data, session_id), sent_session_id=session_id
        )
        log.debug("agent %s: reply %r (session %s)", self.name, reply.text, reply.session_id)
        return reply

    async def call(
        self, request: AgentRequest, parse: Callable[[Any], R], *, sent_session_id: str | None
    ) -> R:
        """Send ``request`` under the retry policy and the error table, and read its
        2xx body with ``parse`` (which raises `ReplyFormatError` when the body holds
        nothing usable). `chat()` is this with `build_request()` and `parse_reply()`;
        a backend whose turn takes another request first (e.g. creating the
        conversation it then talks in) sends that one through here too.
        ``sent_session_id`` is the session the request names, for the error table."""
        retrying = self._retrying()
        # Each attempt logs its status and duration at INFO; the error itself is logged
        # where it is handled (the dispatcher), plus ERROR for a refused key and
        # WARNING for an unreadable body here, where the details are known.
        async for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                result = await self._attempt(request, parse, sent_session_id, number)
        return result

    def _retrying(self) -> AsyncRetrying:
        return AsyncRetrying(
            retry=retry_if_exception_type(_Retry),
            wait=self._wait,
            stop=self._stop,
            sleep=self._sleep,
            before_sleep=self._log_retry,
            retry_error_callback=self._give_up,
        )

    async def _attempt(
        self,
        request: AgentRequest,
        parse: Callable[[Any], R],
        sent_session_id: str | None,
        attempt: int,
    ) -> R:
        started = time.monotonic()
        try:
            response = await self._send(request, self.timeout)
        except httpx.HTTPError as exc:
            self._log_attempt(attempt, type(exc).__name__, started)
            raise self._transport_error(exc) from exc
        self._log_attempt(attempt, str(response.status_code), started)
        if not response.is_success:
            raise self._status_error(response, sent_session_id)
        try:
            data = self.parse_body(response)
        except ValueError as exc:
            raise self._bad_reply(response, "the body is not JSON") from exc
        try:
            return parse(data)
        except (ReplyFormatError, KeyError, TypeError, AttributeError) as exc:
            raise self._bad_reply(response, str(exc) or type(exc).__name__) from exc

    async def _send(
        self, request: AgentRequest, seconds: float, *, stream: bool = False
    ) -> httpx.Response:
        accept = "text/event-stream" if stream else "application/json"
        headers = {"Accept": accept, **self.auth_headers(), **(request.headers or {})}
        try:
            built = self._client.build_request(
                request.method,
                request.url,
                json=request.json,
                headers=headers,
                timeout=httpx.Timeout(seconds, connect=min(seconds, CONNECT_TIMEOUT)),
            )
            return await self._client.send(built, stream=stream)
        except httpx.InvalidURL as exc:
            # Not an httpx.HTTPError; a wrong base_url in the config.
            raise httpx.UnsupportedProtocol(f"invalid URL: {exc}") from exc

    def _log_attempt(self, attempt: int, outcome: str, started: float) -> None:
        # A first attempt that succeeds is the usual case: DEBUG (the message's one
        # INFO line says it was answered); anything else is worth seeing at INFO.
        usual = attempt == 1 and outcome.startswith("2")
        log.log(
            logging.DEBUG if usual else logging.INFO,
            "agent %s: %s in %.2fs (attempt %d)",
            self.name,
            outcome,
            time.monotonic() - started,
            attempt,
        )

    # --- retry policy (tenacity hooks) ---------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        failure = _failure(state)
        if failure.delay is not None:
            return failure.delay
        ceiling = min(BACKOFF_CAP, self._backoff_base * 2.0 ** (state.attempt_number - 1))
        # "Equal jitter": half fixed, half random, so clients spread out but still back off.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _stop(self, state: RetryCallState) -> bool:
        failure = _failure(state)
        limit = (
            RATE_LIMITED_ATTEMPTS
            if isinstance(failure.error, AgentRateLimited)
            else UNAVAILABLE_ATTEMPTS
        )
        if state.attempt_number >= limit:
            return True
        return state.idle_for + state.upcoming_sleep > self.max_retry_wait

    def _log_retry(self, state: RetryCallState) -> None:
        failure = _failure(state)
        log.info(
            "agent %s: %s, retrying in %.1fs (attempt %d)",
            self.name,
            failure.error.detail,
            state.upcoming_sleep,
            state.attempt_number,
        )

    def _give_up(self, state: RetryCallState) -> NoReturn:
        failure = _failure(state)
        error = failure.error
        if isinstance(error, AgentRateLimited) and failure.delay is None:
            # The server named no delay: tell the user the wait we would have made.
            error = self._rate_limited(error.detail, state.upcoming_sleep)
        raise error from failure.__cause__

    # --- error mapping ----------------------------------------------------------------------

    def _error(self, cls: type[AgentError], detail: str) -> AgentError:
        return cls(detail, user_message=self.messages.render(cls.kind), agent=self.name)

    def _rate_limited(self, detail: str, delay: float) -> AgentRateLimited:
        seconds = max(1, math.ceil(delay))
        return AgentRateLimited(
            detail,
            user_message=self.messages.render("rate_limited", retry_after=seconds),
            agent=self.name,
            retry_after=seconds,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> Exception:
        reason = type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
            # Nothing reached the agent: safe to try again.
            return _Retry(self._error(AgentUnavailable, f"cannot connect ({reason})"), None)
        if isinstance(exc, httpx.TimeoutException):
            # Read, write or pool timeout: the agent may already have run (and billed)
            # the turn, and neither API has an idempotency key. No blind retry.
            return self._error(AgentTimeout, f"no answer within {self.timeout:g}s ({reason})")
        # The connection broke after the request went out (reset, protocol error): the
        # turn may have run, so this is not retried either.
        return self._error(AgentUnavailable, f"connection failed ({reason})")

    def _status_error(self, response: httpx.Response, sent_session_id: str | None) -> Exception:
        status = response.status_code
        detail = f"HTTP {status}: {body_excerpt(response)}"
        own = self.classify_error(response, sent_session_id)
        if own is not None:
            return own
        if status == 402:
            return self._error(AgentInsufficientBalance, detail)
        if status == 429:
            delay = retry_delay(response.headers)
            error = self._rate_limited(detail, delay if delay is not None else 1.0)
            return _Retry(error, delay)
        if status in (401, 403):
            log.error(
                "agent %s: the API refused the key (HTTP %d); check agents.%s.api_key "
                "and that it belongs to this agent",
                self.name,
                status,
                self.name,
            )
            return self._error(AgentUnauthorized, detail)
        gone = status in (400, 404, 410) and sent_session_id is not None
        if gone and self._session_gone(status, response):
            return self._error(AgentSessionExpired, f"session {sent_session_id}: {detail}")
        if status == 404:
            return self._error(AgentNotFound, detail)
        if status == 504:
            # The gateway gave up waiting; the agent may still be running the turn.
            return self._error(AgentTimeout, detail)
        if status >= 500:
            return _Retry(self._error(AgentUnavailable, detail), None)
        # Another 4xx (or a redirect): our request is wrong for this API. Retrying
        # would not help; the body excerpt in the log says why.
        return self._error(AgentUnavailable, detail)

    def _session_gone(self, status: int, response: httpx.Response) -> bool:
        text = response.text
        about_session = bool(_SESSION_WORDS.search(text))
        if status == 400:
            return about_session and bool(_EXPIRED_WORDS.search(text))
        if status == 410 or about_session:
            return True
        # A bare 404 while a session was sent: unless the body blames the agent, assume
        # the session. Mistaking a missing agent for an expired session costs one extra
        # call (the fresh retry then gets AgentNotFound); the reverse would break the
        # conversation for good.
        return not _AGENT_WORDS.search(text)

    def _bad_reply(self, response: httpx.Response, reason: str) -> AgentError:
        log.warning(
            "agent %s: unreadable reply (HTTP %d, %s): %s",
            self.name,
            response.status_code,
            reason,
            body_excerpt(response),
        )
        return self._error(AgentBadReply, f"unreadable reply: {reason}")

    # --- probe ------------------------------------------------------------------------------

    async def probe(self) -> str:
        request = self.probe_request()
        started = time.monotonic()
        try:
            response = await self._send(request, min(self.timeout, 15.0))
        except httpx.HTTPError as exc:
            error = self._transport_error(exc)
            raise (error.error if isinstance(error, _Retry) else error) from exc
        self._log_attempt(1, f"probe {response.status_code}", started)
        status = response.status_code
        if response.is_success:
            return self.describe_probe(response)
        if status in (401, 403, 404) or status >= 500:
            error = self._status_error(response, None)
            raise error.error if isinstance(error, _Retry) else error
        return f"{self.kind} API reachable; key not verified (probe answered HTTP {status})"


def _failure(state: RetryCallState) -> _Retry:
    assert state.outcome is not None
    exc = state.outcome.exception()
    assert isinstance(exc, _Retry)
    return exc
