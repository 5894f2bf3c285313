"""DL/T 645 driver (2007 and 1997 editions): one read request per data identifier of the
profile (a refused identifier costs only its quantities; a refused block identifier falls
back to the single identifiers it stands for), remote trip/close control (C = 1C),
recharge by a write-data request (C = 14), broadcast time sync (C = 08) and read-address
with the wildcard address (for ``scan``).

Every reply is checked before it is believed: the checksum and end byte (codec), the
function it answers, the meter address and the data identifier. A meter answering with an
error reply raises :class:`DeviceException` carrying its error byte; a broken, foreign or
undecodable frame raises :class:`DecodeFailure`; silence raises :class:`DeviceTimeout`.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from decimal import Decimal

from gateway_agent.config import DeviceConfig
from gateway_agent.drivers import (
    Answer,
    DecodeFailure,
    DeviceException,
    DeviceTimeout,
    Unsupported,
    Values,
)
from gateway_agent.drivers.link import Link
from gateway_agent.drivers.refusals import RETRY_S, Refusals
from gateway_agent.protocols import dlt645 as dlt
from gateway_agent.protocols.errors import DecodeError, FrameError, NoFrameError
from meter_profiles.schema import AnyProfile, Dlt645Profile, DltQuantity

log = logging.getLogger(__name__)

#: Bytes that cannot start a frame before the driver calls the answer garbage (shorter
#: line noise in front of a frame is skipped).
GARBAGE_LIMIT = dlt.FRAME_OVERHEAD
#: Follow-up frames accepted for one read before the reply is called runaway.
MAX_FOLLOWUPS = 32


def _dlt(profile: AnyProfile) -> Dlt645Profile:
    if not isinstance(profile, Dlt645Profile):
        raise Unsupported(f"profile {profile.model} is not a DL/T 645 profile")
    return profile


def _address(device: DeviceConfig) -> str:
    if device.address is None or len(device.address) != 12:
        raise Unsupported(f"device {device.key} needs a 12-digit DL/T 645 address")
    return device.address.upper()


def _matches(pattern: str, address: str) -> bool:
    """Does a reply from ``address`` answer a request to ``pattern`` (``A`` = wildcard)?"""
    return all(p == "A" or p == a for p, a in zip(pattern, address, strict=True))


def extract_reply(buffer: bytes) -> tuple[dlt.Frame | None, int]:
    """:func:`dlt.extract_frame` for a requester: skips echoed requests (some RS-485
    adapters echo what they send) and declares a buffer garbage when more than
    :data:`GARBAGE_LIMIT` bytes arrived that cannot start a frame."""
    offset = 0
    while True:
        rest = buffer[offset:]
        frame, consumed = dlt.extract_frame(rest)  # FrameError propagates: DecodeFailure
        if frame is None:
            junk = _junk_length(rest)
            if junk > GARBAGE_LIMIT:
                raise NoFrameError(
                    f"garbage on the line: {junk} byte(s) that cannot start a DL/T 645 frame "
                    f"({rest[:16].hex(' ').upper()}…)",
                    consumed=len(buffer),
                )
            return None, 0
        if frame.is_reply:
            return frame, offset + consumed
        offset += consumed


def _junk_length(buffer: bytes) -> int:
    """Bytes in front of the first place a frame could still start, FE wake-ups excluded."""
    index = buffer.find(dlt.START)
    while index != -1 and index + 7 < len(buffer) and buffer[index + 7] != dlt.START:
        index = buffer.find(dlt.START, index + 1)
    head = buffer if index == -1 else buffer[:index]
    return len(head) - head.count(dlt.WAKEUP_BYTE)


def decode_element(q: DltQuantity, raw: bytes) -> Decimal:
    """One value of a reply, as the profile describes it."""
    if q.kind == "bits":
        return Decimal(int.from_bytes(raw, "little"))
    try:
        return dlt.decode_bcd_decimal(raw, q.decimals, signed=q.signed)
    except DecodeError as exc:
        raise DecodeFailure(str(exc)) from exc


def _error_answer(error_byte: int) -> Answer:
    names = dlt.error_names(error_byte)
    return {"error_code": f"0x{error_byte:02X}", "errors": ",".join(names) or "none"}


class Dlt645Driver:
    """One DL/T 645 bus. Not safe for concurrent use: the bus scheduler owns it.

    ``settle_s``: after a broken or garbled answer, the driver waits this long before its
    next request so the rest of a babbling meter's bytes are dropped, not mistaken for the
    next meter's reply.

    ``refused_retry_s``: a data identifier the meter answered "no such data" is not asked
    again for this long (see :mod:`gateway_agent.drivers.refusals`)."""

    def __init__(
        self,
        link: Link,
        timeout_s: float,
        *,
        settle_s: float = 0.05,
        refused_retry_s: float = RETRY_S,
    ) -> None:
        self.link = link
        self.timeout_s = timeout_s
        self.settle_s = settle_s
        self.refusals = Refusals(refused_retry_s)
        self._block_members: dict[
            tuple[str, int], list[tuple[int, list[tuple[str, DltQuantity]]]]
        ] = {}

    async def close(self) -> None:
        await self.link.close()

    # -- one transaction ------------------------------------------------------------------
    async def _transact(self, request: dlt.Frame, what: str) -> dlt.Frame:
        """Send ``request``; return a reply from the addressed meter to the same function.
        Error replies raise DeviceException."""
        try:
            reply = await self.link.transact(
                dlt.encode_frame(request), extract_reply, self.timeout_s
            )
        except DecodeFailure as exc:
            await asyncio.sleep(self.settle_s)
            raise DecodeFailure(f"meter {request.address}: {what}: {exc}") from exc
        except DeviceTimeout as exc:
            raise DeviceTimeout(f"meter {request.address}: {what}: {exc}") from exc
        if not _matches(request.address, reply.address):
            await asyncio.sleep(self.settle_s)
            raise DecodeFailure(
                f"meter {request.address}: {what}: reply comes from address {reply.address}"
            )
        if reply.function != request.function:
            raise DecodeFailure(
                f"meter {request.address}: {what}: reply control {reply.control:02X} does not "
                f"answer function {request.function:02X}"
            )
        if reply.is_error:
            try:
                code = dlt.parse_error_reply(reply)
            except FrameError as exc:
                raise DecodeFailure(f"meter {request.address}: {what}: {exc}") from exc
            answer = _error_answer(code)
            raise DeviceException(
                code,
                f"meter {request.address}: {what} refused: error byte {code:02X} "
                f"({answer['errors']})",
                answer,
            )
        return reply

    # -- reads ----------------------------------------------------------------------------
    async def _read_di(self, p: Dlt645Profile, address: str, di: int) -> bytes:
        """The value bytes answered for ``di`` (follow-up frames joined)."""
        if p.edition == "1997":
            request = dlt.read_data_request_1997(address, di, wakeup=p.wakeup)
            reply = await self._transact(request, f"read {dlt.format_di(di, 2)}")
            value = self._check_read(reply, address, di, None, di_width=2)
            if reply.has_followup:
                raise DecodeFailure(
                    f"meter {address}: DI {dlt.format_di(di, 2)} announces follow-up frames, "
                    "which this driver does not read for DL/T 645-1997"
                )
            return value
        return await self.read_di(address, di, wakeup=p.wakeup)

    async def read_di(self, address: str, di: int, *, wakeup: bool = True) -> bytes:
        """The value bytes a DL/T 645-2007 meter answers for ``di`` (follow-up frames
        joined); DeviceException carries the error byte of a refusal."""
        name = dlt.format_di(di)
        reply = await self._transact(
            dlt.read_data_request(address, di, wakeup=wakeup), f"read {name}"
        )
        value = self._check_read(reply, address, di, None)
        seq = 0
        while reply.has_followup:
            seq += 1
            if seq > MAX_FOLLOWUPS:
                raise DecodeFailure(f"meter {address}: DI {name}: more than {MAX_FOLLOWUPS} frames")
            request = dlt.read_followup_request(address, di, seq, wakeup=wakeup)
            reply = await self._transact(request, f"read {name} follow-up {seq}")
            value += self._check_read(reply, address, di, seq)
        return value

    @staticmethod
    def _check_read(
        reply: dlt.Frame, address: str, di: int, seq: int | None, *, di_width: int = 4
    ) -> bytes:
        """The value bytes of a read reply that answers ``di`` (2-byte DIs: DL/T 645-1997)."""
        parse = dlt.parse_read_reply if di_width == 4 else dlt.parse_read_reply_1997
        try:
            parsed = parse(reply)
        except FrameError as exc:
            raise DecodeFailure(f"meter {address}: {exc}") from exc
        if parsed.di != di:
            raise DecodeFailure(
                f"meter {address}: asked for DI {dlt.format_di(di, di_width)}, "
                f"reply carries {dlt.format_di(parsed.di, di_width)}"
            )
        if seq is not None and parsed.seq != seq:
            raise DecodeFailure(
                f"meter {address}: asked for follow-up frame {seq}, got {parsed.seq}"
            )
        return parsed.value

    async def read(self, device: DeviceConfig, profile: AnyProfile) -> Values:
        """Every DI of the profile. A DI the meter refuses with "no such data" costs only its
        quantities (skipped until :attr:`refusals` asks again); a refused block DI falls back
        to the single DIs it stands for. DeviceException only when nothing was answered."""
        p = _dlt(profile)
        address = _address(device)
        values: Values = {}
        refused: list[DeviceException] = []
        for di, items in p.reads().items():
            if await self._ask(device.key, p, address, di, items, values, refused):
                continue
            for member, member_items in self._members(p, di, items):
                await self._ask(device.key, p, address, member, member_items, values, refused)
        if not values and refused:
            self.refusals.forget(device.key)  # ask everything again next time
            last = refused[-1]
            raise DeviceException(
                last.code,
                f"meter {address} refused every data identifier of profile {p.model} "
                f"(last: {last})",
                last.answer,
            )
        return values

    async def _ask(
        self,
        key: str,
        p: Dlt645Profile,
        address: str,
        di: int,
        items: list[tuple[str, DltQuantity]],
        values: Values,
        refused: list[DeviceException],
    ) -> bool:
        """Read ``di`` into ``values``; False if the meter refuses it (now or lately)."""
        if self.refusals.skip(key, di):
            return False
        width = 2 if p.edition == "1997" else 4
        try:
            raw = await self._read_di(p, address, di)
        except DeviceException as exc:
            if not exc.code & dlt.ErrorFlag.NO_SUCH_DATA:
                raise
            refused.append(exc)
            names = ", ".join(name for name, _ in items)
            self.refusals.refused(
                key, di, f"meter {address} has no data {dlt.format_di(di, width)} ({names})"
            )
            return False
        self.refusals.answered(key, di)
        size = items[0][1].size
        needed = (items[-1][1].element + 1) * size
        if len(raw) < needed:
            raise DecodeFailure(
                f"meter {address}: DI {dlt.format_di(di, width)} "
                f"carries {len(raw)} byte(s), the profile needs {needed}"
            )
        for name, q in items:
            start = q.element * size
            try:
                values[(name, 1)] = decode_element(q, raw[start : start + size])
            except DecodeFailure as exc:
                raise DecodeFailure(f"meter {address}: {name}: {exc}") from exc
        return True

    def _members(
        self, p: Dlt645Profile, di: int, items: list[tuple[str, DltQuantity]]
    ) -> list[tuple[int, list[tuple[str, DltQuantity]]]]:
        """The single DIs a block DI stands for, one quantity each (element 0); empty when
        ``di`` is no block DI (or a DL/T 645-1997 one)."""
        key = (p.model, di)
        members = self._block_members.get(key)
        if members is None:
            members = []
            if p.edition == "2007" and dlt.is_block_di(di):
                for name, q in items:
                    single = dlt.block_member(di, q.element)
                    if single is not None:
                        members.append((single, [(name, q.model_copy(update={"element": 0}))]))
            self._block_members[key] = members
        return members

    async def read_address(self, *, wakeup: bool = True) -> str:
        """Ask whoever is alone on the bus for its address (C = 13 to ``AAAAAAAAAAAA``).

        DeviceTimeout: nobody answered. DecodeFailure: the answer is garbled (two meters
        answering over each other garble the line) or not a read-address reply."""
        reply = await self._transact(dlt.read_address_request(wakeup=wakeup), "read address")
        try:
            found = dlt.parse_read_address_reply(reply)
        except FrameError as exc:
            raise DecodeFailure(f"read address: {exc}") from exc
        if found != reply.address or "A" in found:
            raise DecodeFailure(
                f"read address: garbled answer (frame from {reply.address}, data says {found}); "
                "more than one meter on the bus?"
            )
        return found

    # -- commands -------------------------------------------------------------------------
    @staticmethod
    def credentials(device: DeviceConfig, p: Dlt645Profile) -> dlt.Credentials:
        """The device's own password level / password / operator code, else the profile's."""
        return dlt.Credentials(
            password_level=(
                device.password_level if device.password_level is not None else p.password_level
            ),
            password=device.password or p.password,
            operator_code=device.operator_code or p.operator_code,
        )

    async def control(
        self,
        device: DeviceConfig,
        profile: AnyProfile,
        action: str,
        channel: int,
        deadline: datetime,
    ) -> Answer:
        p = _dlt(profile)
        address = _address(device)
        ctl = p.controls.get(action)  # type: ignore[call-overload]
        if ctl is None:
            raise Unsupported(f"profile {p.model} has no control {action!r}")
        if channel != 1:
            raise Unsupported(f"profile {p.model} has one channel, not {channel}")
        command = dlt.RemoteCommand[ctl.command.upper()]
        try:
            request = dlt.remote_control_request(
                address,
                dlt.RemoteControl(self.credentials(device, p), command, deadline),
                wakeup=p.wakeup,
            )
        except ValueError as exc:  # naive or out-of-range deadline
            raise Unsupported(f"cannot send {action} to meter {address}: {exc}") from exc
        await self._transact(request, f"{action} (N1={command:02X})")
        local = deadline.astimezone(dlt.CHINA_STANDARD_TIME)
        return {"command": ctl.command, "n1": f"{command:02X}", "deadline": local.isoformat()}

    async def recharge(
        self, device: DeviceConfig, profile: AnyProfile, amount: Decimal, purchase_count: int
    ) -> Answer:
        p = _dlt(profile)
        address = _address(device)
        rc = p.recharge
        if rc is None:
            raise Unsupported(f"profile {p.model} has no recharge mapping")
        digits = rc.amount_format.replace(".", "")
        decimals = len(rc.amount_format.partition(".")[2])
        try:
            value = dlt.encode_bcd_decimal(amount, len(digits) // 2, decimals) + dlt.int_to_bcd(
                purchase_count, rc.count_width
            )
            request = dlt.write_data_request(
                address, rc.di, value, self.credentials(device, p), wakeup=p.wakeup
            )
        except ValueError as exc:
            raise Unsupported(f"cannot write recharge to meter {address}: {exc}") from exc
        await self._transact(request, f"recharge {amount} (purchase {purchase_count})")
        return {
            "di": dlt.format_di(rc.di),
            "amount": str(amount),
            "purchase_count": str(purchase_count),
        }

    async def time_sync(self, now: datetime) -> Answer:
        """Broadcast the time (C = 08 to ``999999999999``): meters obey and do not answer."""
        try:
            request = dlt.broadcast_time_sync_request(now, wakeup=True)
        except ValueError as exc:
            raise Unsupported(f"cannot broadcast time {now!r}: {exc}") from exc
        await self.link.send(dlt.encode_frame(request))
        return {"broadcast": now.astimezone(dlt.CHINA_STANDARD_TIME).isoformat()}
