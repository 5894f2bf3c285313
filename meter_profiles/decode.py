"""Pure register codec and block planning for Modbus profiles."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from decimal import Decimal

from meter_profiles.schema import AnyProfile, ModbusProfile, ModbusQuantity


class ProfileDecodeError(ValueError):
    """Register values that cannot be decoded as the profile says."""


@dataclass(frozen=True)
class Block:
    """One read request: ``count`` registers from ``start`` with function ``function``."""

    function: int
    start: int
    count: int
    members: tuple[tuple[str, int], ...]  # (quantity, channel)


def plan_blocks(profile: ModbusProfile) -> list[Block]:
    """Group every quantity of every channel into the fewest contiguous read requests."""
    items = sorted(
        (q.function, profile.register_of(name, ch), q.count, name, ch)
        for ch in range(1, profile.channels + 1)
        for name, q in profile.quantities.items()
        if ch == 1 or name not in profile.shared
    )
    blocks: list[Block] = []
    cur: list[tuple[int, int, int, str, int]] = []
    for item in items:
        fn, reg, count, _name, _ch = item
        if cur:
            c_fn, c_start = cur[0][0], cur[0][1]
            c_end = max(r + n for _, r, n, _, _ in cur)
            fits = fn == c_fn and reg - c_end <= profile.max_read_gap
            if fits and reg + count - c_start <= profile.max_block:
                cur.append(item)
                continue
            blocks.append(_block(cur))
        cur = [item]
    if cur:
        blocks.append(_block(cur))
    return blocks


def _block(items: list[tuple[int, int, int, str, int]]) -> Block:
    start = items[0][1]
    end = max(r + n for _, r, n, _, _ in items)
    return Block(items[0][0], start, end - start, tuple((i[3], i[4]) for i in items))


def split_block(profile: ModbusProfile, block: Block) -> list[Block]:
    """Smaller reads for the quantities of ``block``, for a meter that refused it with
    exception 2 (illegal data address): its runs of listed registers when it spans unlisted
    ones (``max_read_gap``), else one read per quantity; empty for a single quantity."""
    items = sorted(
        (block.function, profile.register_of(name, ch), profile.quantities[name].count, name, ch)
        for name, ch in block.members
    )
    runs: list[list[tuple[int, int, int, str, int]]] = []
    for item in items:
        if runs and item[1] <= max(r + n for _, r, n, _, _ in runs[-1]):
            runs[-1].append(item)
        else:
            runs.append([item])
    if len(runs) > 1:
        return [_block(run) for run in runs]
    if len(items) > 1:
        return [_block([item]) for item in items]
    return []


def decode_value(q: ModbusQuantity, words: list[int]) -> Decimal:
    if len(words) != q.count:
        raise ProfileDecodeError(f"{q.type} needs {q.count} registers, got {len(words)}")
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ProfileDecodeError(f"register values out of range: {words}")
    ordered = words if q.word_order == "big" else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    fmt = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i", "float32": ">f"}[q.type]
    value = struct.unpack(fmt, raw)[0]
    if q.type == "float32":
        if value != value or value in (float("inf"), float("-inf")):
            raise ProfileDecodeError(f"float register is not a finite number: {value}")
        return _shortest_float32(raw) * q.scale
    return Decimal(value) * q.scale


def _shortest_float32(raw: bytes) -> Decimal:
    """The float32 in ``raw`` (big-endian) as the shortest decimal that reads back as the
    same float32: ``42F6E979`` is 123.456, not the double 123.45600128173828."""
    value = struct.unpack(">f", raw)[0]
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack(">f", float(text)) == raw:
            return Decimal(text)
    return Decimal(repr(value))  # 9 significant digits always round-trip: not reached


def encode_value(q: ModbusQuantity, value: Decimal) -> list[int]:
    """Inverse of decode_value (used by simulators); truncates below the register's resolution."""
    if q.type == "float32":
        raw = struct.pack(">f", float(value / q.scale))
    else:
        n = int(value / q.scale)
        fmt = {"uint16": ">H", "int16": ">h", "uint32": ">I", "int32": ">i"}[q.type]
        if q.type.startswith("uint"):
            n %= 1 << (16 * q.count)
        raw = struct.pack(fmt, n)
    words = [int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2)]
    return words if q.word_order == "big" else list(reversed(words))


def decode_block(
    profile: ModbusProfile, block: Block, words: list[int]
) -> dict[tuple[str, int], Decimal]:
    if len(words) != block.count:
        raise ProfileDecodeError(f"block of {block.count} registers answered with {len(words)}")
    out: dict[tuple[str, int], Decimal] = {}
    for name, ch in block.members:
        q = profile.quantities[name]
        offset = profile.register_of(name, ch) - block.start
        out[(name, ch)] = decode_value(q, words[offset : offset + q.count])
    return out


def supply_on(
    profile: AnyProfile, values: dict[tuple[str, int], Decimal], channel: int
) -> bool | None:
    if profile.supply is None:
        return None
    raw = values.get((profile.supply.quantity, channel))
    if raw is None:
        return None
    return (int(raw) & profile.supply.mask) == profile.supply.on_value
