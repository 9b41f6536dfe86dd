"""A TCP relay on loopback: put it between a client and a server to cut the
client's connection (and keep it cut) while the server stays up for others."""

from __future__ import annotations

import asyncio
import contextlib

from wrtci.services.stack.servers import LOOPBACK, free_port


class TcpRelay:
    """Forwards ``127.0.0.1:<port>`` to ``target_port``; :meth:`cut` closes every
    relayed connection and refuses new ones until :meth:`restore`."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    async def restore(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._relay, LOOPBACK, self.port)
        return self

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _relay(self, client_reader: asyncio.StreamReader,
                     client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(_pipe(client_reader, server_writer),
                             _pipe(server_reader, client_writer))

    async def __aenter__(self) -> TcpRelay:
        return await self.restore()

    async def __aexit__(self, *exc: object) -> None:
        await self.cut()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()
