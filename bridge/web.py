"""Serving an aiohttp application on a configured ``"host:port"``.

The health server, the Telegram webhook and Slack's HTTP mode all listen on an
address from the config; this is the one place that binds it and turns a
refused bind (port in use, no permission) into a one-line reason.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bridge.config import split_listen
from bridge.errors import BridgeError

if TYPE_CHECKING:
    from aiohttp import web


class ListenError(BridgeError):
    """The address could not be bound; ``str()`` is ``cannot listen on X: reason``.
    Callers re-raise it as their own error, prefixed with the config key."""


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Start serving ``app`` on ``listen``; the caller cleans up the returned runner.

    On failure nothing is left open."""
    # Imported here: aiohttp costs ~0.1 s at start, and a bridge that serves nothing
    # over HTTP (Telegram polling, no http_listen) never needs it.
    from aiohttp import web

    host, port = split_listen(listen)
    # handle_signals=False: the daemon owns SIGTERM and SIGINT.
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    return runner
