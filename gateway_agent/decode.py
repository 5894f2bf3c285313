"""The installer's frame decoder: ``prepay-gateway decode [--protocol P] HEX...``.

Paste the bytes a sniffer or a meter tool shows; get JSON back saying what the frame is.
Decimals are strings, date-times ISO 8601 with the meter's UTC offset. A broken frame exits
with status 2 and ``{"error": "..."}``.

DL/T 645-2007 block identifiers (``0001FF00``…) are named and a block reply is split into
its members' values. With ``--profile P`` the values are also decoded as that meter profile
reads them (``quantities``): a DL/T 645 reply by the profile's formats; a Modbus read reply
(with ``--start``, the register of its first word, which a reply does not carry) or bare
register words (``--registers``) by the profile's types, word order and scale, so a float32
in CDAB order shows as its number; a Modbus read request lists the quantities it covers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from datetime import date, datetime, time, tzinfo
from decimal import Decimal
from pathlib import Path

from gateway_agent.drivers import DecodeFailure
from gateway_agent.drivers.dlt645 import decode_element
from gateway_agent.protocols import cjt188, dlt645, modbus_rtu
from gateway_agent.protocols.errors import FrameError, NoFrameError
from meter_profiles.decode import ProfileDecodeError, decode_value
from meter_profiles.loader import ProfileError, load_profiles
from meter_profiles.schema import AnyProfile, Dlt645Profile, DltQuantity, ModbusProfile

PROTOCOL_CHOICES = ("dlt645-2007", "dlt645-1997", "cjt188", "modbus-rtu")

Report = dict[str, object]


def _hex(raw: bytes) -> str:
    return raw.hex(" ").upper()


def parse_hex(text: str) -> bytes:
    """Hex with or without spaces (``68 AA`` / ``68AA`` / ``0x68,0xAA``) -> bytes."""
    tokens = [token for token in re.split(r"[\s,:;\-]+", text.strip()) if token]
    digits = "".join(token[2:] if token.lower().startswith("0x") else token for token in tokens)
    if not digits:
        raise FrameError("no hex bytes given")
    if re.fullmatch(r"[0-9A-Fa-f]+", digits) is None:
        raise FrameError(f"not hex: {text.strip()!r}")
    if len(digits) % 2:
        raise FrameError(f"odd number of hex digits ({len(digits)}): a byte is cut in half")
    return bytes.fromhex(digits)


# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


def _json_value(value: dlt645.MeterValue) -> object:
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dlt645.MeterDate):
        return value.day.isoformat()
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, int):
        return f"{value:04X}"
    return value


def _dlt645_value(item: dlt645.DataItem, raw: bytes) -> Report:
    value = dlt645.decode_item(item, raw)
    entry: Report = {"value": _json_value(value), "unit": item.unit}
    if isinstance(value, dlt645.MeterDate):
        entry["weekday"] = value.weekday
    if item.di == 0x04000503 and isinstance(value, int):
        status = dlt645.decode_status_word_3(value)
        entry["relay"] = "off" if status.relay_off else "on"
        entry["relay_command"] = "off" if status.relay_command_off else "on"
        entry["pre_trip_alarm"] = status.pre_trip_alarm
        entry["meter_type"] = status.meter_type.name.lower()
    if not item.verified:
        entry["verified"] = False
    return entry


# --------------------------------------------------------------------------------------------
# DL/T 645
# --------------------------------------------------------------------------------------------


def _di_fields(
    di: int, value: bytes | None, table: dict[int, dlt645.DataItem], width: int
) -> Report:
    item = table.get(di)
    block = dlt645.block_name(di) if width == 4 and item is None else None
    out: Report = {
        "data_identifier": dlt645.format_di(di, width),
        "data_identifier_name": item.name if item else block or "unknown",
    }
    if block is not None:
        out["block"] = True
    if value is None:
        return out
    if item is not None:
        out["values"] = {item.name: _dlt645_value(item, value)}
    elif block is not None:
        out.update(_block_values(di, value))
    else:
        out["value_hex"] = _hex(value)
    return out


def _block_values(di: int, value: bytes) -> Report:
    """A block reply split into its members (each as wide as the first member's item)."""
    first_di = dlt645.block_member(di, 0)
    assert first_di is not None  # a named block has a known first member
    first = dlt645.DATA_ITEMS[first_di]
    width = first.width
    values: Report = {}
    members: list[str] = []
    for element in range(len(value) // width):
        member = dlt645.block_member(di, element)
        if member is None:
            break
        raw = value[element * width : (element + 1) * width]
        item = dlt645.DATA_ITEMS.get(member)
        if item is None or item.width != width:  # a member the table does not list: like the first
            item = dataclasses.replace(first, di=member, name=f"{first.name}_element_{element}")
        members.append(dlt645.format_di(member))
        values[item.name] = _dlt645_value(item, raw)
    out: Report = {"block_members": members, "values": values}
    if len(value) % width:
        out["trailing_hex"] = _hex(value[len(value) - len(value) % width :])
    return out


def _dlt645_payload(frame: dlt645.Frame, edition: dlt645.Edition, tz: tzinfo) -> Report:
    if frame.is_reply and frame.is_error:
        error_byte = dlt645.parse_error_reply(frame)
        return {"error_byte": f"{error_byte:02X}", "errors": list(dlt645.error_names(error_byte))}
    if frame.is_reply and not frame.data:
        return {"result": "ok"}
    function = frame.function
    if edition is dlt645.Edition.V1997:
        return _dlt645_1997_payload(frame, function, tz)
    control = dlt645.ControlCode
    table = dlt645.DATA_ITEMS
    if function == control.READ_DATA and not frame.is_reply:
        di = dlt645.parse_read_request(frame)
        out = _di_fields(di, None, table, 4)
        if len(frame.data) > 4:
            out["extra"] = _hex(frame.data[4:])
        return out
    if function in (control.READ_DATA, control.READ_FOLLOWUP) and frame.is_reply:
        reply = dlt645.parse_read_reply(frame)
        out = _di_fields(reply.di, reply.value, table, 4)
        if reply.seq is not None:
            out["seq"] = reply.seq
        return out
    if function == control.READ_FOLLOWUP and len(frame.data) == 5:
        return {
            **_di_fields(dlt645.decode_di(frame.data[:4]), None, table, 4),
            "seq": frame.data[4],
        }
    if function == control.READ_ADDRESS and frame.is_reply:
        return {"meter_address": dlt645.parse_read_address_reply(frame)}
    if function == control.WRITE_DATA and not frame.is_reply:
        write = dlt645.parse_write_request(frame)
        return {
            **_di_fields(write.di, write.value, table, 4),
            **_credentials(write.credentials),
        }
    if function == control.WRITE_ADDRESS and not frame.is_reply and len(frame.data) == 6:
        return {"new_address": dlt645.decode_address(frame.data)}
    if function == control.BROADCAST_TIME and not frame.is_reply:
        return {"datetime": dlt645.parse_broadcast_time(frame, tz).isoformat()}
    if function == control.REMOTE_CONTROL and not frame.is_reply:
        remote = dlt645.parse_remote_control_request(frame, tz)
        return {
            "command": remote.command.name.lower(),
            "command_code": f"{remote.command.value:02X}",
            **_credentials(remote.credentials),
            "deadline": remote.deadline.isoformat(),
        }
    return {}


def _credentials(credentials: dlt645.Credentials) -> Report:
    return {
        "password_level": f"{credentials.password_level:02X}",
        "password": credentials.password,
        "operator_code": credentials.operator_code,
    }


def _dlt645_1997_payload(frame: dlt645.Frame, function: int, tz: tzinfo) -> Report:
    control = dlt645.ControlCode1997
    table = dlt645.DATA_ITEMS_1997
    if function == control.READ_DATA and not frame.is_reply:
        return _di_fields(dlt645.parse_read_request_1997(frame), None, table, 2)
    if function == control.READ_DATA:
        reply = dlt645.parse_read_reply_1997(frame)
        return _di_fields(reply.di, reply.value, table, 2)
    if function == control.WRITE_ADDRESS and not frame.is_reply and len(frame.data) == 6:
        return {"new_address": dlt645.decode_address(frame.data)}
    if function == control.BROADCAST_TIME and not frame.is_reply:
        return {"datetime": dlt645.decode_datetime6(frame.data, tz).isoformat()}
    return {}


def _decode_dlt645(raw: bytes, edition: dlt645.Edition | None, tz: tzinfo) -> Report:
    parsed = dlt645.decode_frame(raw)
    frame = parsed.frame
    edition = edition or dlt645.edition_of(frame)
    report: Report = {
        "protocol": edition.value,
        "address": frame.address,
        "direction": "reply" if frame.is_reply else "request",
        "control": f"{frame.control:02X}",
        "control_name": dlt645.control_name(frame.function, edition),
        "is_error": frame.is_error,
        "has_followup": frame.has_followup,
        "broadcast": frame.address == dlt645.BROADCAST_ADDRESS,
        "wakeup": frame.wakeup,
        "length": len(frame.data),
        "data": _hex(frame.data),
    }
    report.update(_dlt645_payload(frame, edition, tz))
    return _surroundings(report, raw, parsed.garbage, parsed.consumed)


def _surroundings(report: Report, raw: bytes, garbage: bytes, consumed: int) -> Report:
    if garbage:
        report["garbage_skipped"] = _hex(garbage)
    if consumed < len(raw):
        report["trailing"] = _hex(raw[consumed:])
    return report


# --------------------------------------------------------------------------------------------
# CJ/T 188
# --------------------------------------------------------------------------------------------


def _status(status: cjt188.MeterStatus) -> Report:
    return {
        "raw": f"{status.raw:04X}",
        "valve": status.valve.value,
        "battery_low": status.battery_low,
    }


def _flow(value: Decimal, unit: int) -> Report:
    return {"value": format(value, "f"), "unit": cjt188.unit_name(unit), "unit_code": f"{unit:02X}"}


def _cjt188_payload(
    frame: cjt188.Frame, tz: tzinfo, decimals: int, layout: cjt188.StatusLayout
) -> Report:
    if frame.is_reply and frame.is_error:
        error = cjt188.parse_error_reply(frame, layout)
        out: Report = {"ser": error.ser, "status": _status(error.status)}
        if error.di is not None:
            out["data_identifier"] = f"{error.di:04X}"
        return out
    if not frame.data:
        return {}
    payload = cjt188.split_payload(frame.data)
    out = {}
    if payload.di not in cjt188.DATA_IDENTIFIERS:
        swapped = cjt188.split_payload(frame.data, di_low_first=True)
        if swapped.di in cjt188.DATA_IDENTIFIERS:
            payload = swapped
            out["di_byte_order"] = "low_first"
    out.update(
        {
            "data_identifier": f"{payload.di:04X}",
            "data_identifier_name": cjt188.DATA_IDENTIFIERS.get(payload.di, "unknown"),
            "ser": payload.ser,
        }
    )
    body = payload.body
    if payload.di == cjt188.DI_METERING_DATA and frame.is_reply:
        metering = cjt188.parse_metering_data(body, decimals=decimals, layout=layout, tz=tz)
        out["values"] = {
            "current_cumulative_flow": _flow(metering.current_flow, metering.current_unit),
            "settlement_day_flow": _flow(metering.settlement_flow, metering.settlement_unit),
        }
        out["real_time"] = metering.real_time.isoformat() if metering.real_time else None
        out["status"] = _status(metering.status)
    elif payload.di == cjt188.DI_VALVE_CONTROL and frame.is_reply:
        out["status"] = _status(layout.decode(int.from_bytes(body[:2], "little")))
        if len(body) != 2:
            out["body"] = _hex(body)
    elif payload.di == cjt188.DI_VALVE_CONTROL:
        out["valve_command"] = cjt188.parse_valve_command(body).name.lower()
    elif payload.di == cjt188.DI_WRITE_ADDRESS and not frame.is_reply and len(body) == 7:
        out["new_address"] = cjt188.decode_address(body)
    elif body:
        out["body"] = _hex(body)
    return out


def _decode_cjt188(raw: bytes, tz: tzinfo, decimals: int, layout: cjt188.StatusLayout) -> Report:
    parsed = cjt188.decode_frame(raw)
    frame = parsed.frame
    report: Report = {
        "protocol": "cjt188",
        "meter_type": f"{frame.meter_type:02X}",
        "meter_type_name": cjt188.meter_type_name(frame.meter_type),
        "address": frame.address,
        "direction": "reply" if frame.is_reply else "request",
        "control": f"{frame.control:02X}",
        "control_name": cjt188.control_name(frame.function),
        "is_error": frame.is_error,
        "wakeup": frame.wakeup,
        "length": len(frame.data),
        "data": _hex(frame.data),
    }
    report.update(_cjt188_payload(frame, tz, decimals, layout))
    return _surroundings(report, raw, parsed.garbage, parsed.consumed)


# --------------------------------------------------------------------------------------------
# Modbus RTU
# --------------------------------------------------------------------------------------------


def _modbus_message(message: modbus_rtu.Message) -> Report:
    m = modbus_rtu
    if isinstance(message, m.ReadRequest):
        return {"start_address": message.start, "quantity": message.quantity}
    if isinstance(message, m.ReadBitsReply):
        return {"bits": [int(bit) for bit in message.bits]}
    if isinstance(message, m.ReadRegistersReply):
        return {
            "registers": list(message.registers),
            "registers_hex": [f"{word:04X}" for word in message.registers],
        }
    if isinstance(message, m.WriteSingleCoil):
        return {"coil_address": message.address, "value": message.value}
    if isinstance(message, m.WriteSingleRegister):
        return {"register_address": message.address, "value": message.value}
    if isinstance(message, m.WriteMultipleCoilsRequest):
        bits = [int(bit) for bit in message.bits]
        return {"start_address": message.start, "quantity": message.quantity, "bits": bits}
    if isinstance(message, m.WriteMultipleRegistersRequest):
        return {
            "start_address": message.start,
            "quantity": message.quantity,
            "registers": list(message.registers),
        }
    if isinstance(message, m.WriteMultipleReply):
        return {"start_address": message.start, "quantity": message.quantity}
    if isinstance(message, m.ExceptionReply):
        return {"exception_code": f"{message.code:02X}", "exception_name": message.code_name}
    return {"pdu_data": _hex(message.data)}


def _decode_modbus(raw: bytes) -> Report:
    frame = modbus_rtu.decode_frame(raw)
    interpretation = modbus_rtu.interpret(frame)
    report: Report = {
        "protocol": "modbus-rtu",
        "address": frame.address,
        "direction": interpretation.direction.value,
        "function": f"{frame.function:02X}",
        "function_name": modbus_rtu.function_name(frame.function),
        "is_exception": frame.is_exception,
        "crc": _hex(raw[-2:]),
    }
    report.update(_modbus_message(interpretation.message))
    return report


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _has_dlt645_header(raw: bytes) -> bool:
    return any(
        byte == dlt645.START and (i + 7 >= len(raw) or raw[i + 7] == dlt645.START)
        for i, byte in enumerate(raw)
    )


def _auto(raw: bytes, decoders: dict[str, Callable[[bytes], Report]]) -> Report:
    """Try DL/T 645, CJ/T 188, Modbus RTU in turn; on failure explain the likeliest one."""
    errors: dict[str, FrameError] = {}
    for name in ("dlt645", "cjt188", "modbus-rtu"):
        try:
            return decoders[name](raw)
        except FrameError as exc:
            errors[name] = exc
    if _has_dlt645_header(raw):
        raise errors["dlt645"]
    if raw.lstrip(bytes([cjt188.WAKEUP_BYTE]))[:1] == bytes([cjt188.START]):
        raise errors["cjt188"]
    raise NoFrameError(
        "no DL/T 645 or CJ/T 188 frame start (68) recognised, and not Modbus RTU: "
        f"{errors['modbus-rtu'].message}"
    )


# --------------------------------------------------------------------------------------------
# Through a meter profile
# --------------------------------------------------------------------------------------------


def _quantity_entry(name: str, unit: str | None, verified: bool) -> Report:
    entry: Report = {"quantity": name}
    if unit:
        entry["unit"] = unit
    if not verified:
        entry["verified"] = False
    return entry


def _dlt645_items(profile: Dlt645Profile, di: int) -> list[tuple[str, DltQuantity]]:
    """The profile's quantities a reply to ``di`` carries: the DI's own, or the one element
    of a block DI of the profile that ``di`` stands for."""
    items = profile.reads().get(di)
    if items is not None:
        return items
    for block, block_items in profile.reads().items():
        if profile.edition == "2007" and dlt645.is_block_di(block):
            for name, q in block_items:
                if dlt645.block_member(block, q.element) == di:
                    return [(name, q.model_copy(update={"element": 0}))]
    return []


def _dlt645_quantities(profile: Dlt645Profile, raw: bytes) -> Report:
    frame = dlt645.decode_frame(raw).frame
    edition_1997 = profile.edition == "1997"
    read = dlt645.ControlCode1997.READ_DATA if edition_1997 else dlt645.ControlCode.READ_DATA
    if not frame.is_reply and frame.function == read:  # which quantities it asks for
        di = (
            dlt645.parse_read_request_1997(frame)
            if edition_1997
            else dlt645.parse_read_request(frame)
        )
        names = [{"quantity": name} for name, _ in _dlt645_items(profile, di)]
        return {"profile": profile.model, "quantities": names}
    followup = dlt645.ControlCode.READ_FOLLOWUP
    if not frame.is_reply or frame.is_error or frame.function not in (read, followup):
        return {"profile": profile.model, "quantities": []}
    reply = dlt645.parse_read_reply_1997(frame) if edition_1997 else dlt645.parse_read_reply(frame)
    items = _dlt645_items(profile, reply.di)
    out: list[Report] = []
    for name, q in items:
        entry = _quantity_entry(name, q.unit, q.verified)
        size = q.size
        value = reply.value[q.element * size : (q.element + 1) * size]
        if len(value) < size:
            entry["error"] = f"the reply carries {len(reply.value)} byte(s), {name} needs more"
        else:
            try:
                entry["value"] = format(decode_element(q, value), "f")
            except DecodeFailure as exc:
                entry["error"] = str(exc)
        out.append(entry)
    report: Report = {"profile": profile.model, "quantities": out}
    if not items:
        report["profile_note"] = f"{profile.model} reads nothing from this identifier"
    return report


def _modbus_covered(
    profile: ModbusProfile, function: int, start: int, count: int
) -> list[tuple[str, int, int]]:
    """(quantity, channel, register) of every quantity wholly inside the registers."""
    out = []
    for ch in range(1, profile.channels + 1):
        for name, q in profile.quantities.items():
            if (ch > 1 and name in profile.shared) or q.function != function:
                continue
            reg = profile.register_of(name, ch)
            if start <= reg and reg + q.count <= start + count:
                out.append((name, ch, reg))
    return sorted(out, key=lambda item: item[2])


def decode_registers(
    profile: ModbusProfile, start: int, words: list[int], function: int = 3
) -> Report:
    """Register values (as read with ``function`` from ``start``) through ``profile``: each
    quantity they wholly hold, decoded by its type, word order and scale; registers no
    quantity lists are named too."""
    quantities: list[Report] = []
    covered: set[int] = set()
    for name, ch, reg in _modbus_covered(profile, function, start, len(words)):
        q = profile.quantities[name]
        entry = _quantity_entry(name, q.unit, q.verified)
        if profile.channels > 1:
            entry["channel"] = ch
        entry["register"] = f"0x{reg:04X}"
        entry["type"] = q.type
        if q.count > 1:
            entry["word_order"] = q.word_order
        try:
            value = decode_value(q, words[reg - start : reg - start + q.count])
            entry["value"] = format(value, "f")
        except ProfileDecodeError as exc:
            entry["error"] = str(exc)
        covered.update(range(reg, reg + q.count))
        quantities.append(entry)
    report: Report = {
        "profile": profile.model,
        "start_register": f"0x{start:04X}",
        "quantities": quantities,
    }
    unlisted = [f"0x{r:04X}" for r in range(start, start + len(words)) if r not in covered]
    if unlisted:
        report["unlisted_registers"] = unlisted
    return report


def _modbus_quantities(profile: ModbusProfile, raw: bytes, start: int | None) -> Report:
    frame = modbus_rtu.decode_frame(raw)
    message = modbus_rtu.interpret(frame).message
    function = frame.function & 0x7F
    if isinstance(message, modbus_rtu.ReadRequest) and function in (3, 4):
        covered = _modbus_covered(profile, function, message.start, message.quantity)
        return {
            "profile": profile.model,
            "quantities": [
                {"quantity": n, "register": f"0x{r:04X}"}
                | ({"channel": ch} if profile.channels > 1 else {})
                for n, ch, r in covered
            ],
        }
    if isinstance(message, modbus_rtu.ReadRegistersReply) and function in (3, 4):
        if start is None:
            return {
                "profile": profile.model,
                "profile_note": "a read reply does not say its first register: give --start",
            }
        return decode_registers(profile, start, list(message.registers), function)
    if isinstance(message, modbus_rtu.WriteSingleRegister):
        actions = [
            {"control": action, "channel": ch}
            for action in profile.controls
            for ch in range(1, profile.channels + 1)
            if (ctl := profile.control_register(action, ch)) is not None
            and (ctl.address, ctl.value) == (message.address, message.value)
        ]
        return {"profile": profile.model, "controls": actions}
    return {"profile": profile.model}


def _through_profile(raw: bytes, report: Report, profile: AnyProfile, start: int | None) -> Report:
    protocol = str(report.get("protocol", ""))
    if isinstance(profile, Dlt645Profile) and protocol.startswith("dlt645"):
        return _dlt645_quantities(profile, raw)
    if isinstance(profile, ModbusProfile) and protocol == "modbus-rtu":
        return _modbus_quantities(profile, raw, start)
    return {
        "profile": profile.model,
        "profile_note": f"a {profile.protocol} profile: not applied to a {protocol} frame",
    }


def decode_hex(
    text: str,
    protocol: str | None = None,
    *,
    tz: tzinfo = dlt645.CHINA_STANDARD_TIME,
    flow_decimals: int = 2,
    status_layout: cjt188.StatusLayout = cjt188.DEFAULT_STATUS_LAYOUT,
    profile: AnyProfile | None = None,
    start: int | None = None,
) -> dict[str, object]:
    """Decode one frame given as hex; ``protocol`` is one of :data:`PROTOCOL_CHOICES` or None
    to detect it. With ``profile``, its values are decoded as that profile reads them too
    (``start``: the first register of a Modbus read reply). Raises :class:`FrameError` for
    input that is not a valid frame."""
    raw = parse_hex(text)
    decoders: dict[str, Callable[[bytes], Report]] = {
        "dlt645": lambda data: _decode_dlt645(data, None, tz),
        "dlt645-2007": lambda data: _decode_dlt645(data, dlt645.Edition.V2007, tz),
        "dlt645-1997": lambda data: _decode_dlt645(data, dlt645.Edition.V1997, tz),
        "cjt188": lambda data: _decode_cjt188(data, tz, flow_decimals, status_layout),
        "modbus-rtu": _decode_modbus,
    }
    if protocol is None:
        report = _auto(raw, decoders)
    elif protocol not in PROTOCOL_CHOICES:
        raise ValueError(f"unknown protocol {protocol!r}; choose from {PROTOCOL_CHOICES}")
    else:
        report = decoders[protocol](raw)
    if profile is not None:
        report.update(_through_profile(raw, report, profile, start))
    return report


def _register(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"register {text} is not within 0-0xFFFF")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepay-gateway decode",
        description="Explain a DL/T 645, CJ/T 188 or Modbus RTU frame given as hex. "
        "Prints JSON; exits 2 when the bytes are not a valid frame.",
    )
    parser.add_argument(
        "--protocol",
        choices=PROTOCOL_CHOICES,
        help="protocol of the frame (default: detect it)",
    )
    parser.add_argument(
        "--flow-decimals",
        type=int,
        default=2,
        help="decimal places of CJ/T 188 flow values (default: 2, the 2004 edition)",
    )
    parser.add_argument(
        "--profile",
        metavar="MODEL",
        help="also decode the values as this meter profile reads them (quantity names, "
        "formats, Modbus types, word order and scale)",
    )
    parser.add_argument(
        "--profiles-dir", type=Path, default=None, help="installer's extra profiles"
    )
    parser.add_argument(
        "--start",
        type=_register,
        default=None,
        help="register of the first word of a Modbus read reply or of --registers "
        "(e.g. 0x0001; a reply does not carry it)",
    )
    parser.add_argument(
        "--registers",
        action="store_true",
        help="HEX is register values (16-bit words, 4 hex digits each), not a frame; needs "
        "--profile (Modbus) and --start",
    )
    parser.add_argument(
        "--function",
        type=int,
        choices=(3, 4),
        default=3,
        help="with --registers: read with function 3 (holding, default) or 4 (input)",
    )
    parser.add_argument(
        "hex",
        nargs="+",
        metavar="HEX",
        help="frame bytes in hex, with or without spaces (arguments are joined)",
    )
    return parser


def _words(text: str) -> list[int]:
    raw = parse_hex(text)
    if len(raw) % 2:
        raise FrameError(f"{len(raw)} byte(s) are not whole 16-bit registers")
    return [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]


class UsageError(ValueError):
    """The options do not make sense together (unknown profile, registers without one)."""

    @property
    def message(self) -> str:
        return str(self)


def _decode_args(args: argparse.Namespace) -> Report:
    profile: AnyProfile | None = None
    if args.profile is not None:
        try:
            profiles = load_profiles(args.profiles_dir)
        except ProfileError as exc:
            raise UsageError(str(exc)) from exc
        if args.profile not in profiles:
            raise UsageError(
                f"unknown profile {args.profile!r}; known: {', '.join(sorted(profiles))}"
            )
        profile = profiles[args.profile]
    text = " ".join(args.hex)
    if args.registers:
        if not isinstance(profile, ModbusProfile) or args.start is None:
            raise UsageError("--registers needs --profile with a Modbus profile and --start")
        return decode_registers(profile, args.start, _words(text), args.function)
    return decode_hex(
        text, args.protocol, flow_decimals=args.flow_decimals, profile=profile, start=args.start
    )


def main(argv: list[str]) -> int:
    """``prepay-gateway decode``: print the frame as JSON; 0 on success, 2 on a broken frame
    (or an unknown profile, or registers without a Modbus profile and start)."""
    args = build_parser().parse_args(argv)
    try:
        report = _decode_args(args)
    except (FrameError, UsageError) as exc:
        sys.stdout.write(json.dumps({"error": exc.message}, ensure_ascii=False) + "\n")
        sys.stderr.write(f"prepay-gateway decode: {exc.message}\n")
        return 2
    sys.stdout.write(json.dumps(report, ensure_ascii=False, indent=2) + "\n")
    return 0
