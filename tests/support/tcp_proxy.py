"""A TCP proxy the test controls, between one replica and PostgreSQL: forward, black-hole, reset.

- `forward()`: bytes flow both ways (and whatever a black-hole held back flows on, as after a healed
  partition: TCP would retransmit it).
- `blackhole()`: nothing flows and nothing is refused: open connections stay open but silent, new
  ones are accepted and then hear nothing (a cut cable, a frozen peer). Keepalives cannot see this:
  the proxy's own kernel answers them.
- `reset()`: every open connection is aborted with a TCP reset on both sides (what was in flight is
  lost); new connections are served according to the current mode.

It runs its own asyncio loop in a daemon thread, so synchronous tests can drive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter | None]] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.connections = 0
        """How many client connections the proxy accepted so far."""
        self._accepted = threading.Condition()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def wait_for_connections(self, count: int, timeout: float) -> None:
        """Blocks until `count` connections were accepted in all (AssertionError after `timeout`)."""
        with self._accepted:
            if not self._accepted.wait_for(lambda: self.connections >= count, timeout):
                raise AssertionError(f"{self.connections} connection(s), expected {count}")

    def forward(self) -> None:
        self._call(self._set(True))

    def blackhole(self) -> None:
        self._call(self._set(False))

    async def _set(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    def reset(self) -> None:
        self._call(self._reset())

    async def _reset(self) -> None:
        pairs, self._pairs = self._pairs, set()
        for client, upstream in pairs:
            for writer in (client, upstream):
                if writer is not None:
                    _abort(writer)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        me = asyncio.current_task()
        if me is not None:
            self._tasks.add(me)
            me.add_done_callback(self._tasks.discard)
        with self._accepted:
            self.connections += 1
            self._accepted.notify_all()
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None] = (writer, None)
        self._pairs.add(pair)
        try:
            await self._flowing.wait()  # a black-holed connect is accepted, then hears nothing
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            _abort(writer)
            self._pairs.discard(pair)
            return
        if pair not in self._pairs:  # reset while connecting
            _abort(up_writer)
            return
        self._pairs.discard(pair)
        pair = (writer, up_writer)
        self._pairs.add(pair)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter | None],
    ) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await source.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # read during a black-hole: held back, not lost
                sink.write(data)
                await sink.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            if pair in self._pairs:
                self._pairs.discard(pair)
                for writer in pair:
                    if writer is not None:
                        with contextlib.suppress(OSError):
                            writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP reset (SO_LINGER 0), not an orderly FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
