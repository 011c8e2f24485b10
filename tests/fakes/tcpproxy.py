"""`TcpProxy`: a TCP forwarder on 127.0.0.1 that a test can cut, to stage an outage.

It listens on a free port and pipes every connection to ``target_host:target_port``.
Point a client at it instead of the real server (e.g. a bridge's ``storage.url`` at
PostgreSQL) and the test controls the network between them:

- `cut()` closes every open connection at once (abortively, as a server that went away
  does) and, until `restore()`, closes each new one as soon as it is accepted. To the
  client, this is PostgreSQL restarting: queries in flight fail, and so does every
  attempt to reconnect, until the server is back. The real server never notices
  anything but clients that left, so a shared server can be used.
- `restore()` lets new connections through again (the closed ones stay closed, as
  after a real restart: the client must reconnect).

Usage::

    async with TcpProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxy.port}/db"
        ...
        await proxy.cut()        # the database is gone
        ...
        proxy.restore()          # and back

``proxy.accepted`` counts every connection accepted, ``proxy.refused`` those closed at
once because the proxy was cut, and ``proxy.open`` is how many pipes are open now.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

_CHUNK = 65536


class _Pipe:
    """One client connection and its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None

    def abort(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.transport.abort()


class TcpProxy:
    """Forwards 127.0.0.1:`port` to the target; `cut()` and `restore()` it (see the
    module docstring). An async context manager."""

    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self.port = 0
        self.accepted = 0
        self.refused = 0
        self._cut = False
        self._pipes: set[_Pipe] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        state = "cut" if self._cut else "open"
        return (
            f"TcpProxy({self.host}:{self.port} -> {self.target_host}:{self.target_port}, "
            f"{state}, {len(self._pipes)} pipe(s))"
        )

    # --- lifecycle --------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("the proxy is already started")
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and close every connection."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._abort_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    # --- control ----------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` to give a client instead of the target's."""
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def open(self) -> int:
        """Connections piped through right now."""
        return len(self._pipes)

    async def cut(self) -> None:
        """Close every open connection now; refuse new ones until `restore()`."""
        self._cut = True
        self._abort_all()
        # Let the aborted transports' connection_lost callbacks run before the
        # caller goes on, so that "cut" means cut when this returns.
        await asyncio.sleep(0)

    def restore(self) -> None:
        """Let new connections through again."""
        self._cut = False

    # --- piping -----------------------------------------------------------------------

    def _abort_all(self) -> None:
        for pipe in list(self._pipes):
            pipe.abort()
        self._pipes.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._pipe(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        if self._cut:
            self.refused += 1
            writer.transport.abort()
            return
        pipe = _Pipe(writer)
        self._pipes.add(pipe)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return  # the target is down: the client sees its connection closed
            pipe.upstream = up_writer
            if pipe not in self._pipes:  # cut while connecting
                return
            await asyncio.gather(
                _copy(reader, up_writer),
                _copy(up_reader, writer),
            )
        finally:
            self._pipes.discard(pipe)
            pipe.abort()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until either side closes; then close the sink so the peer sees it."""
    try:
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()
