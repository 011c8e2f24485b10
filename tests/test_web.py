import socket

import httpx
import pytest
from aiohttp import web

from bridge.web import ListenError, serve


async def pong(request: web.Request) -> web.Response:
    return web.Response(text="pong")


async def test_serves_the_app_on_the_address() -> None:
    app = web.Application()
    app.router.add_get("/ping", pong)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runner = await serve(app, f"127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"http://127.0.0.1:{port}/ping")
        assert response.text == "pong"
    finally:
        await runner.cleanup()


async def test_a_taken_port_is_one_line_naming_the_address() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenError) as info:
            await serve(web.Application(), f"127.0.0.1:{port}")
    assert str(info.value).startswith(f"cannot listen on 127.0.0.1:{port}: ")
    assert "\n" not in str(info.value)
