"""Slack's HTTP mode: the Events API endpoint in front of bolt.

Order matters: the raw body's signature is verified first (``X-Slack-Signature``,
``X-Slack-Request-Timestamp``, slack_sdk's `SignatureVerifier`), and nothing of an
unsigned, stale (more than 5 minutes off) or badly signed request is parsed: it gets
401. Only then is the body parsed, by building bolt's request; a signed body that does
not parse gets 400. Refusals are counted in
``agent_bridge_rejected_requests{endpoint="slack", reason=...}`` and logged at most
once a minute per reason (`ThrottledLog`), never with the body: a scanner or a
misconfigured proxy must not flood the journal, and a body holds message text.

bolt's own verification middleware is turned off (``request_verification_enabled=False``
in `SlackAdapter`): this endpoint is the one way into the app over HTTP, and bolt's
middleware would log the whole body at INFO when it refuses a request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import Clock, SignatureVerifier

from bridge.logs import ThrottledLog
from bridge.metrics import Metrics

log = logging.getLogger("adapters.slack")

#: Slack's replay window: a request signed longer ago than this is refused.
MAX_AGE = 5 * 60

#: reason label (for the metric) -> what the log line says
REASONS = {
    "unsigned": "no X-Slack-Signature or X-Slack-Request-Timestamp",
    "stale": "timestamp more than 5 minutes off (or not a number)",
    "bad_signature": "bad signature",
    "unparsable": "signed body that does not parse as an Events API request",
}


class SlackHttpEndpoint:
    """The aiohttp handler for ``slack.path``: verify, parse, then let bolt dispatch."""

    def __init__(
        self,
        app: AsyncApp,
        signing_secret: str,
        metrics: Metrics,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._app = app
        self._verifier = SignatureVerifier(signing_secret, clock or Clock())
        self._metrics = metrics
        self._refused = ThrottledLog(log, "Slack request refused")

    def verify(self, raw: bytes, headers: Mapping[str, str]) -> str | None:
        """Why this request is refused (a `REASONS` key), or None when Slack signed
        this very body less than 5 minutes ago."""
        timestamp = headers.get("X-Slack-Request-Timestamp")
        signature = headers.get("X-Slack-Signature")
        if not timestamp or not signature:
            return "unsigned"
        try:
            sent = int(timestamp)
        except ValueError:
            return "stale"
        if abs(self._verifier.clock.now() - sent) > MAX_AGE:
            return "stale"
        try:
            # Slack signs UTF-8 JSON or form bodies; the verifier decodes bytes as UTF-8.
            body = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "bad_signature"
        if not self._verifier.is_valid(body, timestamp, signature):
            return "bad_signature"
        return None

    def _refuse(self, reason: str, request: web.Request, status: int) -> web.Response:
        self._metrics.rejected_requests.labels(endpoint="slack", reason=reason).inc()
        self._refused.note(REASONS[reason], remote=request.remote)
        return web.json_response({"error": "invalid request"}, status=status)

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        reason = self.verify(raw, request.headers)
        if reason is not None:
            return self._refuse(reason, request, 401)

        retry = request.headers.get("X-Slack-Retry-Num")
        if retry is not None:
            # A redelivery: the store dedupes it; worth a line when diagnosing slowness.
            log.info(
                "Slack redelivers an event (attempt %s, reason %s)",
                retry,
                request.headers.get("X-Slack-Retry-Reason", "?"),
            )
        try:
            # Building bolt's request parses the body (JSON, or a form with a JSON
            # ``payload``) and reads team and user ids out of it.
            bolt_request = AsyncBoltRequest(
                body=raw.decode("utf-8"),
                query=request.query_string,
                headers={k.lower(): v for k, v in request.headers.items()},
            )
            parsed = isinstance(bolt_request.body, dict) and bool(bolt_request.body)
        except Exception:  # any shape of junk: refused below, never a traceback
            parsed = False
        if not parsed:
            return self._refuse("unparsable", request, 400)

        try:
            bolt_response = await self._app.async_dispatch(bolt_request)
        except Exception as exc:
            # bolt catches its listeners' errors (our error handler decides the ack);
            # what escapes comes from a body bolt could not make sense of. Answering
            # 200 skips it: Slack would redeliver the same junk.
            log.warning("Slack request skipped: bolt failed on it (%s)", type(exc).__name__)
            return web.Response(status=200)
        if bolt_response.status == 404:
            # No listener takes it: acknowledged and dropped, or Slack sends it again.
            return web.Response(status=200)
        return await to_aiohttp_response(bolt_response)
