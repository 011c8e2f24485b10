"""Starting a fake server: an aiohttp app on 127.0.0.1, on a free port."""

from __future__ import annotations

from aiohttp import web


async def serve_loopback(app: web.Application) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on 127.0.0.1 at a port the OS picks; returns the runner
    (clean it up to stop) and the port."""
    # shutdown_timeout: a held handler (a slow agent, a long poll) must not hold
    # up a test's teardown for aiohttp's default minute.
    runner = web.AppRunner(app, shutdown_timeout=1.0, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port: int = runner.addresses[0][1]
    return runner, port
