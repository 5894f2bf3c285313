"""A byte link to one RS-485 line: a serial port (pyserial-asyncio-fast) or a TCP connection
to a serial-to-Ethernet converter. Half-duplex: one transaction at a time, with the
protocol's inter-frame silence before each request. The bus scheduler owns the link.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import serial_asyncio_fast

from gateway_agent.drivers import DecodeFailure, DeviceTimeout
from gateway_agent.protocols.errors import FrameError

log = logging.getLogger(__name__)

T = TypeVar("T")
#: Looks at a receive buffer: ``(frame, consumed)``; ``(None, 0)`` = incomplete. May raise
#: FrameError for a complete but broken frame.
Extractor = Callable[[bytes], tuple[T | None, int]]


@dataclass(frozen=True)
class SerialSettings:
    port: str
    baudrate: int = 9600
    parity: str = "N"
    bytesize: int = 8
    stopbits: int = 1

    @property
    def char_s(self) -> float:
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baudrate


class Link:
    """Use :meth:`tcp` or :meth:`serial`. ``silence_s`` is the quiet time kept between the
    end of one frame and the start of the next."""

    def __init__(self, opener: Callable[[], object], silence_s: float, what: str) -> None:
        self._opener = opener
        self.silence_s = silence_s
        self.what = what
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._quiet_from = 0.0

    @classmethod
    def tcp(cls, host: str, port: int, *, silence_s: float = 0.0) -> Link:
        return cls(lambda: asyncio.open_connection(host, port), silence_s, f"tcp {host}:{port}")

    @classmethod
    def serial(cls, settings: SerialSettings, *, silence_s: float | None = None) -> Link:
        def opener() -> object:
            return serial_asyncio_fast.open_serial_connection(
                url=settings.port,
                baudrate=settings.baudrate,
                parity=settings.parity,
                bytesize=settings.bytesize,
                stopbits=settings.stopbits,
            )

        quiet = 3.5 * settings.char_s if silence_s is None else silence_s
        return cls(opener, quiet, f"serial {settings.port}")

    async def _ensure(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            try:
                opened: tuple[asyncio.StreamReader, asyncio.StreamWriter] = await asyncio.wait_for(
                    self._opener(),  # type: ignore[arg-type]
                    timeout=5.0,
                )
            except (OSError, TimeoutError) as exc:
                raise DeviceTimeout(f"{self.what}: cannot open ({exc})") from exc
            self._reader, self._writer = opened
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._writer.wait_closed(), timeout=1.0)
        self._reader = self._writer = None

    async def _drop(self) -> None:
        await self.close()

    async def _quiet(self, reader: asyncio.StreamReader) -> None:
        """Keep the inter-frame silence and throw away anything stale on the line."""
        loop = asyncio.get_running_loop()
        wait = self._quiet_from + self.silence_s - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        buffered: bytearray = getattr(reader, "_buffer", bytearray())  # asyncio keeps it there
        stale = len(buffered)
        if stale:
            buffered.clear()
            log.debug("%s: dropped %d stale byte(s)", self.what, stale)

    async def _write(self, request: bytes) -> asyncio.StreamReader:
        """After the inter-frame silence, put ``request`` on the line; the reader to answer."""
        reader, writer = await self._ensure()
        await self._quiet(reader)
        try:
            writer.write(request)
            await writer.drain()
        except OSError as exc:
            await self._drop()
            raise DeviceTimeout(f"{self.what}: write failed ({exc})") from exc
        return reader

    async def send(self, request: bytes) -> None:
        """Write a frame that gets no reply (broadcasts)."""
        await self._write(request)
        self._quiet_from = asyncio.get_running_loop().time()

    async def transact(self, request: bytes, extract: Extractor[T], timeout_s: float) -> T:
        """Send ``request`` and return the first complete frame ``extract`` finds in the reply.

        Raises DeviceTimeout when nothing complete arrives in time, DecodeFailure when a
        frame arrives broken (bad checksum, missing end byte)."""
        reader = await self._write(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        buffer = b""
        try:
            while True:
                try:
                    frame, _consumed = extract(buffer)
                except FrameError as exc:
                    raise DecodeFailure(f"{self.what}: {exc}") from exc
                if frame is not None:
                    return frame
                left = deadline - loop.time()
                if left <= 0:
                    raise DeviceTimeout(
                        f"{self.what}: no answer in {timeout_s:.2f}s"
                        + (f" ({len(buffer)} byte(s) of a frame)" if buffer else "")
                    )
                try:
                    async with asyncio.timeout(left):  # not wait_for: it can swallow a cancel
                        chunk = await reader.read(512)
                except TimeoutError:
                    continue
                if not chunk:
                    await self._drop()
                    raise DeviceTimeout(f"{self.what}: connection closed")
                buffer += chunk
        finally:
            self._quiet_from = loop.time()
