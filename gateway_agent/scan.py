"""`prepay-gateway scan`: find the meters on a bus and print them as a config snippet.

- DL/T 645-2007: read-address (C = 13) to the all-``AA`` wildcard. One meter on the line
  answers cleanly. When several answer at once their replies collide (a broken frame): the
  scan then narrows the address one byte at a time (``AA`` bytes are wildcards, lowest byte
  first), reading the communication address (DI 04 00 04 01) of whoever matches.
  Then each found meter is asked the identifiers of every DL/T 645-2007 profile (each
  distinct DI once, and the members of a refused block DI) and the profile its answers fit
  best is suggested (:func:`fit_dlt645`): the most quantities answered, then the fewest
  refused, then the fewest requests per poll.
- CJ/T 188: the same with read-address (C = 03, DI 81 0A) and the 7-byte address, narrowing
  with read-data (DI 90 1F) to the wildcard meter type.
- Modbus: probe each unit id in a range by reading the identity register the profiles
  declare (``identity: {quantity, value}``, e.g. Acrel's model id); a unit that answers but
  matches no identity is listed for the installer to name.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from gateway_agent.config import BusConfig, DeviceConfig, SerialPortConfig
from gateway_agent.drivers import DecodeFailure, DeviceException, DeviceTimeout
from gateway_agent.drivers.dlt645 import Dlt645Driver, decode_element
from gateway_agent.drivers.factory import make_driver, make_link
from gateway_agent.drivers.link import Link
from gateway_agent.protocols import cjt188, dlt645
from meter_profiles.loader import ProfileError, load_profiles
from meter_profiles.schema import AnyProfile, Dlt645Profile, DltQuantity, ModbusProfile

log = logging.getLogger(__name__)

WILDCARD = 0xAA
DI_COMMUNICATION_ADDRESS = 0x04000401


class _Reply(Protocol):
    """A DL/T 645 or CJ/T 188 frame: who sent it, and whether it is a reply."""

    @property
    def address(self) -> str: ...

    @property
    def is_reply(self) -> bool: ...


@dataclass
class Found:
    protocol: str
    unit: int | None = None
    address: str | None = None
    profile: str | None = None
    notes: list[str] = field(default_factory=list)


# -- address search (DL/T 645, CJ/T 188) ---------------------------------------------------

ONE, MANY, NONE = "one", "many", "none"
Probe = Callable[[bytes], Awaitable[tuple[str, str | None]]]


async def search_addresses(probe: Probe, width: int, first: Probe | None = None) -> list[str]:
    """Every meter address on the line. ``probe(wire_address)`` answers NONE (silence), ONE
    with the address (a clean reply) or MANY (a collision); ``first`` probes the all-wildcard
    address (read-address) when the protocol has a dedicated request for it."""
    everyone = bytes([WILDCARD] * width)
    outcome, address = await (first or probe)(everyone)
    if outcome == NONE:
        return []
    if outcome == ONE and address is not None:
        return [address]
    found: list[str] = []

    async def narrow(prefix: bytes) -> None:
        for digit in range(100):
            fixed = prefix + bytes([digit // 10 << 4 | digit % 10])
            outcome, address = await probe(fixed + bytes([WILDCARD] * (width - len(fixed))))
            if outcome == ONE and address is not None:
                found.append(address)
            elif outcome == MANY:
                if len(fixed) == width:
                    log.warning("two meters answer to the same address %s", fixed.hex())
                    continue
                await narrow(fixed)

    await narrow(b"")
    return sorted(set(found))


def _matches(wire: bytes, address_wire: bytes) -> bool:
    return all(w in (WILDCARD, a) for w, a in zip(wire, address_wire, strict=True))


def dlt645_probes(link: Link, timeout_s: float, wakeup: bool = True) -> tuple[Probe, Probe]:
    async def read_address(wire: bytes) -> tuple[str, str | None]:
        request = dlt645.encode_frame(dlt645.read_address_request(wakeup=wakeup))
        return await _outcome(link, request, wire, timeout_s, dlt645.extract_frame)

    async def read_comm_address(wire: bytes) -> tuple[str, str | None]:
        address = dlt645.decode_address(wire)
        frame = dlt645.read_data_request(address, DI_COMMUNICATION_ADDRESS, wakeup=wakeup)
        request = dlt645.encode_frame(frame)
        return await _outcome(link, request, wire, timeout_s, dlt645.extract_frame)

    return read_address, read_comm_address


def cjt188_probes(link: Link, timeout_s: float, wakeup: bool = True) -> tuple[Probe, Probe]:
    async def read_address(wire: bytes) -> tuple[str, str | None]:
        request = cjt188.encode_frame(cjt188.read_address_request(wakeup=wakeup))
        return await _outcome(link, request, wire, timeout_s, cjt188.extract_frame)

    async def read_data(wire: bytes) -> tuple[str, str | None]:
        frame = cjt188.read_data_request(
            cjt188.MeterType.WILDCARD, cjt188.decode_address(wire), wakeup=wakeup
        )
        request = cjt188.encode_frame(frame)
        return await _outcome(link, request, wire, timeout_s, cjt188.extract_frame)

    return read_address, read_data


async def _outcome(
    link: Link,
    request: bytes,
    wire: bytes,
    timeout_s: float,
    extract: Callable[[bytes], tuple[_Reply | None, int]],
) -> tuple[str, str | None]:
    try:
        frame = await link.transact(request, extract, timeout_s)
    except DeviceTimeout:
        return NONE, None
    except DecodeFailure:
        return MANY, None
    if not frame.is_reply:  # an echo of our own request: nobody answered cleanly
        return MANY, None
    address = frame.address
    encoded = (dlt645.encode_address if len(wire) == 6 else cjt188.encode_address)(address)
    if not _matches(wire, encoded):
        return MANY, None
    # the rest of a collision may still be arriving: a second frame means two meters
    return ONE, address


# -- which DL/T 645 profile fits --------------------------------------------------------------

#: What a meter answered per DI: the value bytes, or None (refused, silent or garbled).
Answers = dict[int, bytes | None]


@dataclass(frozen=True)
class ProfileFit:
    """How a meter's answers fit one profile, read as the driver reads it (a refused block
    DI falls back to its members)."""

    model: str
    quantities: int
    answered: tuple[str, ...]
    refused: tuple[str, ...]
    refused_dis: int
    requests: int  # per poll, once the refusals are known

    @property
    def rank(self) -> tuple[int, int, int, int]:
        """Higher is better: most answered, fewest refused quantities, DIs, requests."""
        return (len(self.answered), -len(self.refused), -self.refused_dis, -self.requests)


def _fits(raw: bytes | None, items: list[tuple[str, DltQuantity]]) -> bool:
    """Does ``raw`` carry every element ``items`` need, each one decodable?"""
    if raw is None:
        return False
    size = items[0][1].size
    if len(raw) < (items[-1][1].element + 1) * size:
        return False
    try:
        for _name, q in items:
            decode_element(q, raw[q.element * size : (q.element + 1) * size])
    except DecodeFailure:
        return False
    return True


def _block_members(
    di: int, items: list[tuple[str, DltQuantity]]
) -> list[tuple[int, str, DltQuantity]]:
    if not dlt645.is_block_di(di):
        return []
    out = []
    for name, q in items:
        member = dlt645.block_member(di, q.element)
        if member is not None:
            out.append((member, name, q.model_copy(update={"element": 0})))
    return out


def dis_to_ask(profile: Dlt645Profile, answers: Answers) -> list[int]:
    """The DIs still to ask for :func:`fit_dlt645`: the profile's own, then the members of
    its block DIs the meter refused."""
    out = [di for di in profile.reads() if di not in answers]
    if out:
        return out
    for di, items in profile.reads().items():
        if not _fits(answers[di], items):
            out += [m for m, _, _ in _block_members(di, items) if m not in answers]
    return out


def fit_dlt645(profile: Dlt645Profile, answers: Answers) -> ProfileFit:
    """How ``answers`` (every DI :func:`dis_to_ask` named) fit ``profile``."""
    answered: list[str] = []
    refused: list[str] = []
    refused_dis = requests = 0
    for di, items in profile.reads().items():
        if _fits(answers.get(di), items):
            answered += [name for name, _ in items]
            requests += 1
            continue
        refused_dis += 1
        members = _block_members(di, items)
        if not members:
            refused += [name for name, _ in items]
            continue
        for member, name, q in members:
            if _fits(answers.get(member), [(name, q)]):
                answered.append(name)
                requests += 1
            else:
                refused.append(name)
                refused_dis += 1
    return ProfileFit(
        model=profile.model,
        quantities=len(profile.quantities),
        answered=tuple(answered),
        refused=tuple(refused),
        refused_dis=refused_dis,
        requests=requests,
    )


async def suggest_dlt645_profile(
    driver: Dlt645Driver, address: str, profiles: dict[str, AnyProfile]
) -> list[ProfileFit]:
    """Ask ``address`` the identifiers of every DL/T 645-2007 profile, each distinct one
    once; the fits, best first (empty when there is no such profile)."""
    candidates = sorted(
        (p for p in profiles.values() if isinstance(p, Dlt645Profile) and p.edition == "2007"),
        key=lambda p: p.model,
    )
    answers: Answers = {}
    for _round in range(2):  # the profiles' DIs, then the members of refused block DIs
        for p in candidates:
            for di in dis_to_ask(p, answers):
                if di in answers:
                    continue
                try:
                    answers[di] = await driver.read_di(address, di, wakeup=p.wakeup)
                except (DeviceException, DeviceTimeout, DecodeFailure) as exc:
                    log.debug("meter %s: %s", address, exc)
                    answers[di] = None
    fits = [fit_dlt645(p, answers) for p in candidates]
    return sorted(fits, key=lambda f: f.rank, reverse=True)  # stable: by model on a tie


def _fit_notes(fits: list[ProfileFit]) -> list[str]:
    if not fits or not fits[0].answered:
        return ["answers none of the DL/T 645-2007 profiles' identifiers: name its profile"]
    best = fits[0]
    notes = [
        f"profile suggested from the identifiers it answers ({len(best.answered)} of "
        f"{best.quantities} quantities of {best.model}); DL/T 645 does not say the model: "
        "check it"
    ]
    if best.refused:
        notes.append(f"refuses {', '.join(best.refused)}: those values will be missing")
    also = [f.model for f in fits[1:] if f.rank == best.rank]
    if also:
        notes.append(f"fits {', '.join(also)} equally well: pick the right one")
    return notes


# -- Modbus --------------------------------------------------------------------------------


def _identity_groups(profiles: dict[str, AnyProfile]) -> dict[tuple[int, int, str], ModbusProfile]:
    """One probe profile per distinct identity register (address, function, type)."""
    groups: dict[tuple[int, int, str], ModbusProfile] = {}
    for p in profiles.values():
        if not isinstance(p, ModbusProfile) or p.identity is None:
            continue
        q = p.quantities[p.identity.quantity]
        key = (q.address, q.function, q.type)
        if key not in groups:
            groups[key] = ModbusProfile.model_validate(
                {
                    "schema_version": 1,
                    "model": f"scan-probe-{q.address:04x}",
                    "vendor": "scan",
                    "utility": "electricity",
                    "protocol": "modbus",
                    "quantities": {
                        "identity": {"register": q.address, "type": q.type, "function": q.function}
                    },
                }
            )
    return groups


async def scan_modbus(
    bus: BusConfig, profiles: dict[str, AnyProfile], units: Sequence[int]
) -> list[Found]:
    groups = _identity_groups(profiles)
    driver = make_driver(bus.model_copy(update={"devices": []}), profiles)
    found: list[Found] = []
    try:
        for unit in units:
            device = DeviceConfig(key=f"probe-{unit}", profile="scan-probe", unit=unit)
            present = False
            matches: list[str] = []
            for (address, function, type_), probe in groups.items():
                try:
                    values = await driver.read(device, probe)
                except DeviceTimeout:
                    if not present:
                        break  # silence: nobody at this unit id
                    continue
                except (DeviceException, DecodeFailure):
                    present = True
                    continue
                present = True
                value = int(values[("identity", 1)])
                for p in profiles.values():
                    if not isinstance(p, ModbusProfile) or p.identity is None:
                        continue
                    q = p.quantities[p.identity.quantity]
                    same = (q.address, q.function, q.type) == (address, function, type_)
                    if same and p.identity.value == value:
                        matches.append(p.model)
                if matches:
                    break
            if not present:
                continue
            f = Found("modbus", unit=unit, profile=matches[0] if matches else None)
            if len(matches) > 1:
                f.notes.append(f"also matches {', '.join(matches[1:])}: pick the right one")
            if not matches:
                f.notes.append("answers, but matches no profile identity: name its profile")
            found.append(f)
    finally:
        await driver.close()
    return found


# -- the command -----------------------------------------------------------------------------


#: How long a probe waits for an answer, by protocol: a DL/T 645 meter may take up to
#: 500 ms to answer (the standard's limit), CJ/T 188 as long; Modbus slaves answer quickly.
PROBE_TIMEOUT_S = {"modbus": 0.3, "dlt645": 0.6, "cjt188": 0.6}
#: The answer time a protocol allows, and the longest frame each way (bytes).
_ANSWER_S = {"modbus": 0.2, "dlt645": 0.5, "cjt188": 0.5}
_LONGEST_FRAME = {"modbus": 256, "dlt645": 220, "cjt188": 120}
#: The line speed assumed when the snippet cannot know it (a serial-to-Ethernet converter).
_DEFAULT_BAUD = {"modbus": 9600, "dlt645": 2400, "cjt188": 2400}


def operating_timeout(protocol: str, baudrate: int | None) -> float:
    """The timeout an agent should run a bus with: the protocol's answer time, plus the
    longest request and answer on the wire at the line's speed (11 bits a character), plus
    a margin; never the probe's, which only has to catch the shortest answers."""
    baud = baudrate or _DEFAULT_BAUD[protocol]
    wire = 2 * _LONGEST_FRAME[protocol] * 11 / baud
    return math.ceil((_ANSWER_S[protocol] + wire + 0.1) * 10) / 10


async def scan(
    bus: BusConfig,
    protocol: str,
    profiles: dict[str, AnyProfile],
    *,
    units: Sequence[int] = range(1, 248),
    timeout_s: float | None = None,
) -> list[Found]:
    """The meters on ``bus``; ``timeout_s`` per probe (default: the protocol's,
    :data:`PROBE_TIMEOUT_S`)."""
    if timeout_s is None:
        timeout_s = PROBE_TIMEOUT_S.get(protocol, 0.6)
    if protocol == "modbus":
        with _quiet("pymodbus"):  # its own error logging would drown the scan's output
            return await scan_modbus(bus, profiles, units)
    link = make_link(bus, profiles)
    found: list[Found] = []
    try:
        if protocol == "dlt645":
            first, probe = dlt645_probes(link, timeout_s)
            addresses = await search_addresses(probe, dlt645.ADDRESS_WIDTH, first)
            # a data read is longer than a probe's answer: wait what the line needs
            baud = bus.serial.baudrate if bus.serial is not None else None
            driver = Dlt645Driver(link, max(timeout_s, operating_timeout(protocol, baud)))
            for a in addresses:
                fits = await suggest_dlt645_profile(driver, a, profiles)
                model = fits[0].model if fits and fits[0].answered else None
                found.append(Found(protocol, address=a, profile=model, notes=_fit_notes(fits)))
        elif protocol == "cjt188":
            first, probe = cjt188_probes(link, timeout_s)
            addresses = await search_addresses(probe, cjt188.ADDRESS_WIDTH, first)
            model = "cjt188-valve-water" if "cjt188-valve-water" in profiles else None
            note = "CJ/T 188 does not say the model: check the profile"
            found = [Found(protocol, address=a, profile=model, notes=[note]) for a in addresses]
        else:
            raise ValueError(f"cannot scan protocol {protocol!r}")
    finally:
        await link.close()
    return found


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def snippet(bus: BusConfig, found: list[Found]) -> str:
    """The bus as agent config YAML, with the found meters as its devices and the
    operating timeout that fits their protocol and the line (:func:`operating_timeout`)."""
    devices: list[dict[str, object]] = []
    for f in found:
        ident = f"u{f.unit}" if f.unit is not None else f"a{f.address}"
        device: dict[str, object] = {
            "key": f"{bus.name}-{ident}",
            "profile": f.profile or "FILL-IN",
        }
        if f.unit is not None:
            device["unit"] = f.unit
        if f.address is not None:
            device["address"] = f.address
        devices.append(device)
    entry = bus.model_dump(mode="json", exclude_defaults=True, exclude={"devices"})
    entry["name"] = bus.name
    entry["transport"] = bus.transport
    if found:
        baud = bus.serial.baudrate if bus.serial is not None else None
        entry["timeout_s"] = operating_timeout(found[0].protocol, baud)
    entry["devices"] = devices
    lines = [f"# prepay-gateway scan: {len(found)} meter(s) on bus {bus.name}"]
    for f in found:
        for note in f.notes:
            lines.append(f"# {f.address or f'unit {f.unit}'}: {note}")
    body = yaml.safe_dump({"buses": [entry]}, sort_keys=False, allow_unicode=True)
    return "\n".join(lines) + "\n" + body


def _units(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        first, last = int(lo), int(hi or lo)
        if not 1 <= first <= last <= 247:
            raise argparse.ArgumentTypeError(f"unit range {part!r} is not within 1-247")
        out.extend(range(first, last + 1))
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="prepay-gateway scan", description=__doc__.split("\n")[0])
    p.add_argument("--protocol", choices=("modbus", "dlt645", "cjt188"), required=True)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="PORT", help="local serial port, e.g. /dev/ttyUSB0")
    where.add_argument("--tcp", metavar="HOST:PORT", help="serial-to-Ethernet converter")
    where.add_argument("--modbus-tcp", metavar="HOST:PORT", help="Modbus TCP gateway")
    p.add_argument("--baudrate", type=int, default=None)
    p.add_argument("--parity", choices=("N", "E", "O"), default=None)
    p.add_argument("--units", type=_units, default=list(range(1, 248)), help="e.g. 1-32,100")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait per probe (default: modbus 0.3, dlt645 and cjt188 0.6)",
    )
    p.add_argument("--name", default="bus1", help="bus name in the snippet")
    p.add_argument("--profiles-dir", default=None, help="installer's extra profiles")
    return p


def bus_from_args(args: argparse.Namespace) -> BusConfig:
    probe = args.timeout or PROBE_TIMEOUT_S[args.protocol]
    common: dict[str, object] = {"name": args.name, "timeout_s": probe, "devices": []}
    if args.serial:
        serial = SerialPortConfig(port=args.serial, baudrate=args.baudrate, parity=args.parity)
        return BusConfig.model_validate({**common, "transport": "serial", "serial": serial})
    target = args.tcp or args.modbus_tcp
    host, _, port = str(target).rpartition(":")
    transport = "tcp" if args.tcp else "modbus_tcp"
    return BusConfig.model_validate(
        {**common, "transport": transport, "host": host or "127.0.0.1", "port": int(port)}
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        profiles = load_profiles(Path(args.profiles_dir) if args.profiles_dir else None)
        bus = bus_from_args(args)
    except (ProfileError, ValueError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    found = asyncio.run(
        scan(bus, args.protocol, profiles, units=args.units, timeout_s=args.timeout)
    )
    sys.stdout.write(snippet(bus, found))
    return 0 if found else 1
