"""A simulated RS-485 line: serves a protocol responder over TCP (as a serial-to-Ethernet
converter would) or over a pseudo-terminal pair (a real serial path), pacing bytes at a
baud rate.

Pacing models the wire: a request of ``n`` bytes is complete ``n`` character times after its
first byte arrived; the meter answers ``reply_delay_s`` later; each reply byte leaves one
character time after the previous one. With ``baudrate=None`` nothing is paced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass
class LineTiming:
    baudrate: int | None = None
    bits_per_char: int = 11
    reply_delay_s: float = 0.0

    @property
    def char_s(self) -> float:
        return 0.0 if not self.baudrate else self.bits_per_char / self.baudrate


@dataclass
class Faults:
    """Injected faults by device (Modbus unit id or meter address): silence, a corrupted
    checksum, or an exception / error reply with the given code.

    ``strict`` devices answer less than their profile plans for, as many real firmwares do:
    a DL/T 645 meter refuses block identifiers (``0001FF00``…) and tariff energy
    identifiers (``00010100``…) with "no such data"; a Modbus meter refuses a read that
    spans unlisted registers inside a block with exception 2 (illegal data address)."""

    silent: set[int | str] = field(default_factory=set)
    corrupt: set[int | str] = field(default_factory=set)
    exception: dict[int | str, int] = field(default_factory=dict)
    garbage: set[int | str] = field(default_factory=set)
    strict: set[int | str] = field(default_factory=set)

    def clear(self) -> None:
        self.silent.clear()
        self.corrupt.clear()
        self.exception.clear()
        self.garbage.clear()
        self.strict.clear()


@dataclass
class LineStats:
    requests: int = 0
    replies: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


def collide(replies: list[bytes]) -> bytes:
    """Several transmitters at once: the line reads the AND of what they send."""
    if len(replies) == 1:
        return replies[0]
    out = bytearray(b"\xff" * max(len(r) for r in replies))
    for reply in replies:
        for i, byte in enumerate(reply):
            out[i] &= byte
    return bytes(out)


class Responder(Protocol):
    """A protocol's meter side: looks at the head of the receive buffer."""

    @property
    def faults(self) -> Faults: ...

    def respond(self, buffer: bytes) -> tuple[int, bytes | None] | None:
        """``None``: the frame is incomplete, wait for more bytes. Otherwise ``(consumed,
        reply)``: drop ``consumed`` bytes (> 0) and send ``reply`` (``None``: stay silent)."""
        ...


class LineServer:
    def __init__(self, responder: Responder, timing: LineTiming | None = None) -> None:
        self.responder = responder
        self.timing = timing or LineTiming()
        self.stats = LineStats()
        self.host = "127.0.0.1"
        self.port = 0
        self.pty_path: str | None = None
        self._server: asyncio.Server | None = None
        self._pty: tuple[int, int] | None = None
        self._pty_task: asyncio.Task[None] | None = None

    # -- TCP ------------------------------------------------------------------------------
    async def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve_tcp, host, port)
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async def send(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            await self._serve(reader.read, send)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    # -- pty ------------------------------------------------------------------------------
    async def start_pty(self) -> str:
        """Open a pseudo-terminal pair; clients open the returned path as a serial port."""
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        os.set_blocking(master, False)
        self._pty = (master, slave)
        self.pty_path = os.ttyname(slave)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            try:
                data = os.read(master, 4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if data:
                queue.put_nowait(data)

        loop.add_reader(master, readable)

        async def read(_n: int) -> bytes:
            return await queue.get()

        async def send(data: bytes) -> None:
            view = memoryview(data)
            while view:
                try:
                    n = os.write(master, view)
                    view = view[n:]
                except BlockingIOError:
                    await asyncio.sleep(0.001)

        self._pty_task = asyncio.create_task(self._serve(read, send))
        return self.pty_path

    # -- the line ---------------------------------------------------------------------------
    async def _serve(
        self,
        read: Callable[[int], Awaitable[bytes]],
        send: Callable[[bytes], Awaitable[None]],
    ) -> None:
        loop = asyncio.get_running_loop()
        buffer = b""
        first_at = 0.0
        char_s = self.timing.char_s
        while True:
            chunk = await read(4096)
            if not chunk:
                return
            now = loop.time()
            if not buffer:
                first_at = now
            buffer += chunk
            self.stats.bytes_in += len(chunk)
            while buffer:
                result = self.responder.respond(buffer)
                if result is None:
                    break
                consumed, reply = result
                consumed = max(1, consumed)
                request_end = first_at + consumed * char_s
                buffer = buffer[consumed:]
                first_at = request_end
                self.stats.requests += 1
                if reply is None:
                    continue
                start = max(loop.time(), request_end) + self.timing.reply_delay_s
                await self._paced(reply, start, send)
                self.stats.replies += 1
                self.stats.bytes_out += len(reply)
                if buffer:
                    first_at = loop.time()

    async def _paced(
        self, reply: bytes, start: float, send: Callable[[bytes], Awaitable[None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        char_s = self.timing.char_s
        if char_s == 0.0:
            delay = start - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await send(reply)
            return
        sent = 0
        while sent < len(reply):
            now = loop.time()
            # every byte whose last bit has left the wire by now
            due = min(len(reply), int((now - start) / char_s))
            if due > sent:
                await send(reply[sent:due])
                sent = due
            if sent < len(reply):
                await asyncio.sleep(max(0.0, start + (sent + 1) * char_s - loop.time()))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None
        if self._pty_task is not None:
            self._pty_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pty_task
            self._pty_task = None
        if self._pty is not None:
            master, slave = self._pty
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(master)
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._pty = None
