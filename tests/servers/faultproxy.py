"""A small TCP proxy for fault injection between a client and a server (there is no toxiproxy here).

The proxy runs an asyncio loop in a background thread and forwards bytes both ways. Its mode can
be switched at any time from the test thread:

- ``pass``: forward everything as is;
- ``latency``: hold each chunk ``latency`` seconds before forwarding it (order is kept);
- ``blackhole``: accept connections and read from both sides, but forward nothing and close
  nothing, like a network partition where packets are silently dropped;
- ``reset``: abort every open connection with a TCP reset and reset each new one at once, like a
  broker that went away.

Point the server's advertised address at the proxy (tansu: ``--advertised-listener-url``) so
that every connection a client makes, not just the bootstrap one, goes through it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal

Mode = Literal["pass", "latency", "blackhole", "reset"]
MODES: tuple[Mode, ...] = ("pass", "latency", "blackhole", "reset")
_CHUNK = 65536


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP RST rather than a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    """One proxied connection: the client side and the server side."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.tasks: list[asyncio.Task[None]] = []

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                mode = self.proxy.mode
                if mode == "blackhole":
                    continue  # dropped on the floor; the connection stays open
                if mode == "reset":
                    break
                if mode == "latency":
                    await asyncio.sleep(self.proxy.latency)
                    if self.proxy.mode in {"blackhole", "reset"}:
                        continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if self.proxy.mode == "reset":
                self.abort()
            else:
                with contextlib.suppress(Exception):
                    writer.close()

    def start(self) -> None:
        self.tasks = [
            asyncio.ensure_future(self._pump(self.client[0], self.server[1])),
            asyncio.ensure_future(self._pump(self.server[0], self.client[1])),
        ]

    def abort(self) -> None:
        _abort(self.client[1])
        _abort(self.server[1])


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream``, with a switchable fault mode."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode: Mode = "pass"
        self.latency = 0.0
        self.connections_total = 0
        self._requested_port = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 5.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self) -> int:
        """Listen on loopback and return the port."""
        self._thread.start()

        async def serve() -> int:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._requested_port)
            return int(self._server.sockets[0].getsockname()[1])

        self.port = self._call(serve())
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        if self.mode == "reset":
            _abort(writer)
            return
        try:
            server = await asyncio.open_connection(*self.upstream)
        except OSError:
            _abort(writer)
            return
        link = _Link(self, (reader, writer), server)
        self._links.add(link)
        link.start()
        try:
            await asyncio.gather(*link.tasks, return_exceptions=True)
        finally:
            self._links.discard(link)

    def set_mode(self, mode: Mode, latency: float = 0.0) -> None:
        """Switch mode; ``reset`` also aborts every open connection at once."""
        if mode not in MODES:
            msg = f"unknown fault mode {mode!r}; expected one of {MODES}"
            raise ValueError(msg)

        async def switch() -> None:
            self.latency = latency
            self.mode = mode
            if mode == "reset":
                for link in list(self._links):
                    link.abort()

        self._call(switch())

    @property
    def open_connections(self) -> int:
        """How many proxied connections are open."""
        return len(self._links)

    def close(self) -> None:
        """Stop listening, abort every connection and stop the loop thread; safe to call twice."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for link in list(self._links):
                link.abort()
            await asyncio.sleep(0)

        with contextlib.suppress(Exception):
            self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    def __enter__(self) -> FaultProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
