"""Checks for ``agent-bridge check``: warnings about a config that is valid but
risky (`config_warnings`), then the live checks (`live_checks`): is every
credential accepted, is every service reachable, without sending a message or
spending an agent turn.

- storage: the database answers (``Store.ping``);
- agents.NAME: the backend's ``probe()`` (URL reachable, key accepted where the
  API allows that without a turn);
- telegram: ``getMe`` with the bot token;
- slack: ``auth.test`` with the bot token, and in Socket Mode
  ``apps.connections.open`` with the app token (it only hands out a WebSocket
  URL, which we do not open, so it costs nothing).

``check --probe AGENT`` is apart (`probe_agent`): it sends one real message to
one agent and reports what came back. It is the only check that spends a turn
(and tokens), so it runs only when asked for.

The platform calls are plain HTTPS requests against the configured ``api_url``
(the same base the adapters use), so the core imports no platform SDK.
Reasons never contain a secret: the Bot API puts the token in the URL, so
every detail goes through `bridge.logs.redact` as a safety net.

Example::

    for warning in config_warnings(config):
        print("!", warning)
    for result in await live_checks(config):
        print("✓" if result.ok else "✗", result.item, result.detail)
"""

from __future__ import annotations

import asyncio
import difflib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.config import TELEGRAM_API_URL, Config, SlackConfig, TelegramConfig
from bridge.errors import BridgeError, ConfigError
from bridge.logs import redact
from bridge.model import Usage

#: Bytes the Bot API's getFile serves at most (a local Bot API server: any).
TELEGRAM_FILE_LIMIT = 20 * 1024 * 1024

#: Seconds for one platform call.
CHECK_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    item: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ProbeReport:
    """What one real turn of `probe_agent` brought back."""

    agent: str
    answer: str
    session_id: str | None
    usage: Usage
    seconds: float


#: What ``check --probe`` sends unless told otherwise.
PROBE_TEXT = "ping"


def config_warnings(config: Config) -> list[str]:
    """What a valid config allows that its operator may not mean, one line each,
    naming the key. Warnings never change ``check``'s exit code.

    - ``telegram.allowed_users = ["*"]``: anyone who finds the bot uses the agent
      (and its credit). In Slack ``"*"`` means the workspace's members (other
      teams need ``allowed_teams``), so it is no warning there.
    - ``"@username"`` entries: a username can be changed, or given up and taken by
      someone else; the numeric id stays with the person.
    - ``files.max_bytes`` above 20 MB with Telegram's own Bot API: its ``getFile``
      refuses larger files whatever the bridge allows.

    A webhook without a secret is not a warning but an error (see
    `bridge.config`): ``telegram.webhook_secret`` and ``slack.signing_secret``
    are required in the modes that receive requests.
    """
    warnings: list[str] = []
    tg = config.telegram
    if tg is not None:
        if "*" in tg.allowed_users:
            warnings.append(
                'telegram.allowed_users: "*" lets anyone on Telegram talk to the bot '
                "(and spend the agent's credit); list user ids to close it"
            )
        names = [u for u in tg.allowed_users if isinstance(u, str) and u.startswith("@")]
        if names:
            listed = ", ".join(names)
            warnings.append(
                f"telegram.allowed_users: {listed} "
                f"{'is a username' if len(names) == 1 else 'are usernames'}, which can change "
                "hands; prefer numeric user ids (the bot's refusal tells each person theirs)"
            )
        if config.files.max_bytes > TELEGRAM_FILE_LIMIT and tg.api_url == TELEGRAM_API_URL:
            warnings.append(
                f"files.max_bytes: {config.files.max_bytes} is above the 20 MB Telegram's "
                "Bot API lets bots download (getFile); larger files are refused anyway "
                "unless telegram.api_url is a local Bot API server"
            )
    return warnings


async def live_checks(config: Config) -> list[CheckResult]:
    """Every check, run concurrently, reported in a stable order."""
    from bridge.backends import create_backends, create_http_client

    async with create_http_client() as client:
        jobs: list[Awaitable[list[CheckResult]]] = [_check_storage(config)]
        backends = create_backends(config.agents, messages=config.messages, client=client)
        try:
            for name, backend in backends.items():
                jobs.append(_guard(f"agents.{name}", backend.probe))
            if config.telegram is not None:
                jobs.append(_check_telegram(config.telegram, client))
            if config.slack is not None:
                jobs.append(_check_slack(config.slack, client))
            groups = await asyncio.gather(*jobs)
        finally:
            for backend in backends.values():
                await backend.aclose()
    return [result for group in groups for result in group]


async def _guard(item: str, probe: Callable[[], Awaitable[str]]) -> list[CheckResult]:
    try:
        detail = await probe()
    except BridgeError as exc:
        return [CheckResult(item, False, redact(str(exc)))]
    return [CheckResult(item, True, redact(detail))]


async def _check_storage(config: Config) -> list[CheckResult]:
    from storage.store import Store

    item = "storage"
    store = Store(config.storage.url)
    try:
        await store.open(migrate=False)
        await store.ping()
    except BridgeError as exc:
        return [CheckResult(item, False, redact(str(exc)))]
    finally:
        await store.close()
    return [CheckResult(item, True, f"{config.storage.display_url} reachable")]


async def _check_telegram(config: TelegramConfig, client: httpx.AsyncClient) -> list[CheckResult]:
    token = config.bot_token.get_secret_value()
    body = await _post(client, f"{config.api_url}{token}/getMe", data={})
    if isinstance(body, str):
        return [CheckResult("telegram", False, body)]
    if body.get("ok") is True and isinstance(body.get("result"), dict):
        me = body["result"]
        who = f"@{me['username']}" if me.get("username") else str(me.get("first_name", "bot"))
        return [CheckResult("telegram", True, f"bot {who} (id {me.get('id')})")]
    reason = str(body.get("description") or f"error {body.get('error_code', '?')}")
    hint = ": check telegram.bot_token" if body.get("error_code") in (401, 404) else ""
    return [CheckResult("telegram", False, redact(reason + hint))]


async def _check_slack(config: SlackConfig, client: httpx.AsyncClient) -> list[CheckResult]:
    results: list[CheckResult] = []
    base = config.api_url if config.api_url.endswith("/") else config.api_url + "/"
    bot = await _post(
        client, f"{base}auth.test", token=config.bot_token.get_secret_value(), data={}
    )
    if isinstance(bot, str):
        results.append(CheckResult("slack", False, bot))
    elif bot.get("ok") is True:
        who = f"bot {bot.get('user', '?')} in workspace {bot.get('team', '?')}"
        results.append(CheckResult("slack", True, f"{who} ({bot.get('team_id', '?')})"))
    else:
        error = str(bot.get("error", "unknown error"))
        results.append(CheckResult("slack", False, f"{error}: check slack.bot_token"))
    if config.mode == "socket" and config.app_token is not None:
        app = await _post(
            client,
            f"{base}apps.connections.open",
            token=config.app_token.get_secret_value(),
            data={},
        )
        if isinstance(app, str):
            results.append(CheckResult("slack app token", False, app))
        elif app.get("ok") is True:
            results.append(CheckResult("slack app token", True, "Socket Mode connection allowed"))
        else:
            error = str(app.get("error", "unknown error"))
            results.append(CheckResult("slack app token", False, f"{error}: check slack.app_token"))
    return results


async def _post(
    client: httpx.AsyncClient,
    url: str,
    *,
    data: dict[str, str],
    token: str | None = None,
) -> dict[str, Any] | str:
    """POST a form; the JSON body, or a one-line reason (never with the URL)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    try:
        response = await client.post(url, data=data, headers=headers, timeout=CHECK_TIMEOUT)
    except httpx.TimeoutException:
        return f"no answer within {CHECK_TIMEOUT:g} s"
    except httpx.HTTPError as exc:
        return redact(f"cannot connect: {type(exc).__name__}: {exc}".rstrip(": "))
    try:
        body = response.json()
    except ValueError:
        return f"unreadable answer (HTTP {response.status_code})"
    if not isinstance(body, dict):
        return f"unreadable answer (HTTP {response.status_code})"
    return body


def probe_agent_name(config: Config, name: str) -> None:
    """`ConfigError` naming the configured agents unless ``name`` is one of them."""
    if name in config.agents:
        return
    names = ", ".join(sorted(config.agents))
    hint = difflib.get_close_matches(name, list(config.agents), n=1)
    extra = f'; did you mean "{hint[0]}"?' if hint else ""
    raise ConfigError([f"--probe: no agent named {name!r} (configured: {names}){extra}"])


async def probe_agent(config: Config, name: str, text: str = PROBE_TEXT) -> ProbeReport:
    """Send ``text`` to agent ``name`` as the first turn of a new session and
    return the answer; raises `AgentError` as a chat turn would. This spends a
    turn: the agent runs (and bills) it."""
    from bridge.backends import create_backend, create_http_client
    from bridge.history import MemoryHistory

    probe_agent_name(config, name)
    async with create_http_client() as client:
        # A history of its own (a chat-completions agent needs one): the probe is a
        # new thread, and nothing of it is kept.
        backend = create_backend(
            name,
            config.agents[name],
            messages=config.messages,
            client=client,
            history=MemoryHistory(),
        )
        try:
            started = time.monotonic()
            reply = await backend.chat(text, backend.new_session_id())
            seconds = time.monotonic() - started
        finally:
            await backend.aclose()
    return ProbeReport(name, reply.text, reply.session_id, reply.usage, seconds)
