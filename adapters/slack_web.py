"""The Web API side of `SlackAdapter`: its clients and who the bot is.

Every client shares the adapter's aiohttp session and is built from the config alone
(``bot_token``, ``api_url``): slack_sdk and bolt would otherwise read ``SLACK_*``
environment variables. Each has its own retry policy, named where it is built.
"""

from __future__ import annotations

import logging

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from adapters.slack_events import PLATFORM, SlackIdentity
from adapters.slack_socket import TOKEN_ERRORS
from bridge.config import SlackConfig
from bridge.errors import AdapterError, CredentialsRejected

#: Web API errors that mean the token itself was refused: no retry can help.
_REFUSED_TOKEN_ERRORS = TOKEN_ERRORS | {"not_allowed_token_type"}


def api_url(config: SlackConfig) -> str:
    """``slack.api_url`` with the trailing slash slack_sdk joins method names to."""
    return config.api_url if config.api_url.endswith("/") else f"{config.api_url}/"


def default_retries() -> list[AsyncRetryHandler]:
    # slack_sdk installs only the connection-error handler by default; a 429 (with
    # Retry-After) or a 5xx would otherwise fail the call at once.
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=5),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


def web_client(
    config: SlackConfig,
    session: aiohttp.ClientSession | None,
    *,
    with_token: bool = True,
    retry_handlers: list[AsyncRetryHandler] | None = None,
    timeout: int = 30,
) -> AsyncWebClient:
    """A client on ``session`` (`default_retries` unless ``retry_handlers``)."""
    return AsyncWebClient(
        token=config.bot_token.get_secret_value() if with_token else None,
        base_url=api_url(config),
        session=session,
        timeout=timeout,
        retry_handlers=default_retries() if retry_handlers is None else retry_handlers,
        logger=logging.getLogger("adapters.slack.sdk"),
    )


def read_back_client(config: SlackConfig, session: aiohttp.ClientSession) -> AsyncWebClient:
    """For reading our own posts (and a thread's history) back: no rate-limit retries
    (a ratelimited read is skipped, not waited for) and a short timeout."""
    retries: list[AsyncRetryHandler] = [AsyncConnectionErrorRetryHandler(max_retry_count=1)]
    return web_client(config, session, retry_handlers=retries, timeout=10)


def posting_client(config: SlackConfig, session: aiohttp.ClientSession) -> AsyncWebClient:
    """For reply pieces: only 429s are retried in place (Slack posted nothing). A
    connection error or a 5xx may come after Slack posted the piece: a blind retry could
    post it twice, so the attempt fails and the dispatcher's next one reads back what is
    there (``delivery_attempts > 0``)."""
    retries: list[AsyncRetryHandler] = [AsyncRateLimitErrorRetryHandler(max_retry_count=5)]
    return web_client(config, session, retry_handlers=retries)


async def auth_test(client: AsyncWebClient) -> SlackIdentity:
    """Who the token belongs to; `CredentialsRejected` for a refused token,
    `AdapterError` when Slack cannot be reached."""
    try:
        resp = await client.auth_test()
    except SlackApiError as exc:
        error = str(exc.response.get("error", "unknown_error"))
        if error in _REFUSED_TOKEN_ERRORS:
            raise CredentialsRejected(PLATFORM, f"{error}: check slack.bot_token") from None
        raise AdapterError(PLATFORM, f"auth.test failed: {error}") from None
    except (aiohttp.ClientError, TimeoutError, SlackClientError) as exc:
        raise AdapterError(
            PLATFORM, f"cannot reach Slack at {client.base_url}: {type(exc).__name__}"
        ) from exc
    return SlackIdentity(
        team_id=str(resp.get("team_id", "")),
        team=str(resp.get("team", "")),
        bot_user_id=str(resp.get("user_id", "")),
        bot_id=resp.get("bot_id"),
        user=str(resp.get("user", "")),
    )
