import socket

import httpx
import pytest

from tests.conftest import NetworkBlocked


async def test_outside_addresses_are_blocked() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(BaseException) as info:
            await client.get("http://203.0.113.7:9/")
    # anyio may wrap it in an ExceptionGroup
    assert isinstance(info.value, NetworkBlocked) or info.group_contains(NetworkBlocked)


def test_dns_for_outside_names_is_blocked() -> None:
    with pytest.raises(NetworkBlocked):
        socket.getaddrinfo("api.telegram.org", 443)
